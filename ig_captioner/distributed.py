"""Starting the JAX processes of a multi-host job: `jax.distributed.initialize()`, called by the
trainer's and the evaluator's entry points before anything touches a device.

- Cloud TPU pod slices, GKE (xpk) and SLURM set environment variables that JAX reads itself:
  there `initialize()` needs no flags (`auto`).
- Anywhere else, `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every
  process (process 0's host serves the coordinator).
- A single process (a laptop, one GPU or TPU VM host) initialises nothing.
CPU processes (tests, CPU clusters) exchange collectives through gloo.
"""

import os

from absl import flags
from absl import logging
import jax

from ig_captioner import errors

def define_flags() -> dict:
  """The flags every entry point takes (defined by its `main`, so that importing defines none)."""
  return dict(
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run outside "
          "Cloud TPU, GKE and SLURM (which are detected)."),
      num_processes=flags.DEFINE_integer(
          "num_processes", None, "Number of processes (with --coordinator_address)."),
      process_id=flags.DEFINE_integer(
          "process_id", None, "This process's index, 0 to num_processes-1 (with "
          "--coordinator_address)."),
  )


def detected_cluster(environ=os.environ) -> str | None:
  """The multi-process job this process is part of, by its environment, or None."""
  if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
    return "SLURM"
  if len(environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return "Cloud TPU / GKE"
  if "MEGASCALE_COORDINATOR_ADDRESS" in environ:
    return "multi-slice TPU"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to its job: with the explicit coordinator if given, else as the
  detected cluster says; with neither, a single-process run (nothing to do)."""
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    raise errors.ConfigError(
        "--coordinator_address, --num_processes and --process_id go together: give all three "
        f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r}), or none on Cloud "
        "TPU, GKE and SLURM, which are detected")
  cluster = None if coordinator_address else detected_cluster()
  if coordinator_address is None and cluster is None:
    return
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise errors.ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                             f"{num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Used by CPU devices only.
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info("Process %d of %d (%s), %d local devices of %d", jax.process_index(),
               jax.process_count(), cluster or f"coordinator {coordinator_address}",
               jax.local_device_count(), jax.device_count())


def initialize_from_flags(defined: dict) -> None:
  """`initialize` with the values of the flags `define_flags` returned."""
  initialize(*(defined[k].value for k in ("coordinator_address", "num_processes",
                                           "process_id")))
