"""The launchers' options (`launchers.py`): one table, offered as argparse arguments by the
launch scripts and as absl flags by the sweep runner. Standard library only at import.
"""

import argparse
import dataclasses

REMOTE = ("tpu_vm", "xpk", "slurm")


@dataclasses.dataclass(frozen=True)
class Option:
  """A launcher option: its flag name, default (a bool, int, str, or () if repeatable) and help."""
  name: str
  default: object
  help: str
  launchers: tuple[str, ...]


OPTIONS = (
    Option("job_name", "", "Job/workload name (default: the workdir's last part; a sweep's: the "
           "config's name, to which it adds each run's label).", REMOTE),
    Option("env", (), "KEY=VALUE for every process (repeatable), e.g. "
           "TFDS_DATA_DIR=gs://BUCKET/tfds.", REMOTE),
    Option("tpu_name", "", "TPU VM (slice) name.", ("tpu_vm",)),
    Option("zone", "", "Zone of the TPU VM or the GKE cluster.", ("tpu_vm", "xpk")),
    Option("project", "", "Google Cloud project (default: gcloud's).", ("tpu_vm", "xpk")),
    Option("source", "copy", "'copy' (this checkout's files, untracked ones too) or a git URL "
           "that each TPU worker clones.", ("tpu_vm",)),
    Option("remote_dir", "ig_captioner", "Where the code goes on each TPU worker (relative to "
           "the home directory).", ("tpu_vm",)),
    Option("setup", "", "Shell run once to install the package (default: launch/venv.sh plus "
           "jax's TPU or CUDA wheels); 'none' skips it.", ("tpu_vm", "slurm")),
    Option("foreground", False, "Stay attached and stream the output (default: start detached, "
           "log to <remote_dir>/logs/<job>.log, queued one job at a time).", ("tpu_vm",)),
    Option("cluster", "", "GKE cluster (made with `xpk cluster create`).", ("xpk",)),
    Option("tpu_type", "", "TPU type per slice, e.g. v5litepod-256.", ("xpk",)),
    Option("num_slices", 1, "Number of TPU slices.", ("xpk",)),
    Option("docker_image", "", "Image holding the installed package, run in the repository "
           "(configs/).", ("xpk",)),
    Option("base_docker_image", "", "Image that xpk adds this checkout to (at /app, without "
           ".dockerignore's paths); the package is pip-installed at start.", ("xpk",)),
    Option("xpk_binary", "xpk", "The xpk executable (e.g. .venv-xpk/bin/xpk, made by "
           "launch/xpk_venv.sh).", ("xpk",)),
    Option("xpk_dry_run", False, "Pass --dry-run to xpk: it prints the JobSet and the commands "
           "it would run, and contacts nothing.", ("xpk",)),
    Option("nodes", 1, "Number of nodes.", ("slurm",)),
    Option("gpus_per_node", 8, "GPUs per node: one process (task) per GPU.", ("slurm",)),
    Option("cpus_per_task", 0, "CPUs per process (0: the cluster's default).", ("slurm",)),
    Option("partition", "", "SLURM partition.", ("slurm",)),
    Option("account", "", "SLURM account.", ("slurm",)),
    Option("time", "", "Time limit, e.g. 24:00:00.", ("slurm",)),
    Option("slurm_log_dir", "slurm_logs", "Where each job's batch script and output go.",
           ("slurm",)),
    Option("sbatch_arg", (), "Another #SBATCH line, e.g. --mem=0 (repeatable).", ("slurm",)),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the launcher options to an argparse parser."""
  for o in OPTIONS:
    what = f"[{', '.join(o.launchers)}] {o.help}"
    if isinstance(o.default, bool):
      parser.add_argument(f"--{o.name}", action="store_true", help=what)
    elif isinstance(o.default, tuple):
      parser.add_argument(f"--{o.name}", action="append", default=[], help=what)
    else:
      parser.add_argument(f"--{o.name}", type=type(o.default), default=o.default, help=what)


def define_absl_flags() -> dict:
  """Defines the launcher options as absl flags (for the sweep runner); returns their holders."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  defined = {}
  for o in OPTIONS:
    what = f"[{', '.join(o.launchers)}] {o.help}"
    if isinstance(o.default, bool):
      defined[o.name] = flags.DEFINE_bool(o.name, o.default, what)
    elif isinstance(o.default, tuple):
      defined[o.name] = flags.DEFINE_multi_string(o.name, [], what)
    elif isinstance(o.default, int):
      defined[o.name] = flags.DEFINE_integer(o.name, o.default, what)
    else:
      defined[o.name] = flags.DEFINE_string(o.name, o.default, what)
  return defined
