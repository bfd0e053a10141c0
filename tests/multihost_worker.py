"""One of two JAX processes (4 CPU devices each) run by `test_multihost.py`.

    python -m tests.multihost_worker PROCESS_ID PORT DATA_DIR OUT_DIR

Joins through `distributed.initialize` (what the entry points call) and trains the demo's
runlocal config on a mesh whose `data` axis spans the two processes as `dcn`: straight
through; again with a stop after the first checkpoint and a resume; and again with a SIGTERM
that reaches process 1 alone, during its 4th step, and a resume. Then evaluates the resumed
run's checkpoints in watch mode. Writes this process's copy of the final params
(`params_<id>.npz`), the step the SIGTERM stopped it at (`sigterm_<id>.json`) and its eval
results (`eval_<id>.json`). First, the texts it read from webdataset shards the test wrote
(`tar_texts_<id>.json`).
"""

import faulthandler
import json
import os
import signal
import sys
import time


def _phase(name: str) -> None:
  """A line in this process's log, so that a failure's tail shows how far the run got."""
  print(f"[worker {time.strftime('%H:%M:%S')}] {name}", flush=True)


def main(process_id: int, port: int, data_dir: str, out_dir: str) -> None:
  faulthandler.register(signal.SIGUSR1, all_threads=True)  # The test's dump of a hang.
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  import jax  # pylint: disable=g-import-not-at-top
  from ig_captioner import distributed  # pylint: disable=g-import-not-at-top
  # What `python -m ig_captioner.train --coordinator_address=... --num_processes=2
  # --process_id=I` does first.
  distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
  import flax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ig_captioner import config_lib  # pylint: disable=g-import-not-at-top
  from ig_captioner import evaluate  # pylint: disable=g-import-not-at-top
  from ig_captioner import sharding  # pylint: disable=g-import-not-at-top
  from ig_captioner import train  # pylint: disable=g-import-not-at-top

  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  _, config = config_lib.load_file("configs/demo.py:runlocal")
  config.data.data_dir = data_dir
  # Each process is one granule of a hybrid mesh: data parallelism across the two (as across
  # TPU slices, over DCN), the remaining data parallelism within each.
  config.mesh.dcn = {"data": 2}

  def local_params(state):
    """This process's copy of the (replicated) params, flattened to 'a/b/c' names."""
    flat = flax.traverse_util.flatten_dict(state.params, sep="/")
    return {k: np.asarray(v.addressable_data(0)) for k, v in flat.items()}

  # Orbax must synchronise the processes on the host (see checkpointing._use_host_barriers): a
  # device barrier from its threads can interleave with the train steps' collectives.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  device_barriers, device_barrier = [], multihost_utils.sync_global_devices
  multihost_utils.sync_global_devices = lambda name: (device_barriers.append(name),
                                                      device_barrier(name))[1]
  _phase("webdataset shards")  # Each process reads its own shards (`shard_files`).
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ig_captioner.data import web_shards  # pylint: disable=g-import-not-at-top
  tars = ml_collections.ConfigDict(dict(name="web_shards", cycle_length=2,
                                        shards=os.path.join(out_dir, "tars", "*.tar")))
  with open(os.path.join(out_dir, f"tar_texts_{process_id}.json"), "w", encoding="utf-8") as f:
    json.dump([r["text"] for r in web_shards.load(tars, num_epochs=1)[0]], f)
  _phase("straight run")
  straight = local_params(train.train(config, os.path.join(out_dir, "straight")))
  resumed_dir = os.path.join(out_dir, "resumed")
  _phase("run stopped at step 3, then resumed")
  train.train(config, resumed_dir, stop_at_step=3)
  resumed = local_params(train.train(config, resumed_dir))

  sigterm_dir = os.path.join(out_dir, "sigterm")
  config.checkpoint_every = 100  # Only the signal and the end save.
  global_batch, batches = sharding.global_batch_from_local, []

  def signalling_batch(local, mesh):
    batches.append(1)
    if process_id == 1 and len(batches) == 4:
      os.kill(os.getpid(), signal.SIGTERM)
    return global_batch(local, mesh)
  sharding.global_batch_from_local = signalling_batch
  _phase("run stopped by SIGTERM to process 1, then resumed")
  stopped_at = int(train.train(config, sigterm_dir).step)
  sharding.global_batch_from_local = global_batch
  after_sigterm = local_params(train.train(config, sigterm_dir))
  with open(os.path.join(out_dir, f"sigterm_{process_id}.json"), "w") as f:
    json.dump({"stopped_at": stopped_at, "device_barriers": device_barriers}, f)
  np.savez(os.path.join(out_dir, f"params_{process_id}.npz"),
           **{f"straight:{k}": v for k, v in straight.items()},
           **{f"resumed:{k}": v for k, v in resumed.items()},
           **{f"sigterm:{k}": v for k, v in after_sigterm.items()})
  config.checkpoint_every = 3

  _phase("evaluator")
  results = evaluate.evaluate(config, resumed_dir, poll_interval_s=0.1, timeout_s=60)
  with open(os.path.join(out_dir, f"eval_{process_id}.json"), "w") as f:
    json.dump({str(step): metrics for step, metrics in results.items()}, f)
  _phase("done")


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
