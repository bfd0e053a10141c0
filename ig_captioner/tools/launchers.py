"""Launching a job (the trainer, then optionally the evaluator) on every host of a machine:
`local` (here), `tpu_vm` (a Cloud TPU VM slice: gcloud ... ssh --worker=all), `xpk` (GKE:
`xpk workload create`) or `slurm` (sbatch + srun, one process per GPU). This module renders
the commands and runs them, or prints them (`--dry_run`).

    python -m ig_captioner.tools.launchers tpu_vm --tpu_name=NAME --zone=ZONE --dry_run \\
        --config=configs/ig_b16_laion.py --workdir=gs://BUCKET/run --evaluate -- --config.seed=1

Every host runs the same commands; `jax.distributed.initialize()` in the trainer and the
evaluator finds the other processes (`ig_captioner/distributed.py`). Arguments after `--` are
config overrides. A launcher has two parts: `setup()`, run once (copy and install the code),
and `submit(job)`, run per job; the sweep runner (`--launcher=...`) submits each of its runs.
Only the standard library is imported, so the launch scripts need no installed dependencies.
"""

import argparse
import dataclasses
import hashlib
import os
import re
import shlex
import subprocess
import sys

from ig_captioner import errors
from ig_captioner.tools import launch_options

LAUNCHERS = ("local", "tpu_vm", "xpk", "slurm")
REMOTE = launch_options.REMOTE
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LaunchError(errors.UserError):
  """A launcher's options cannot work, or a launch command failed."""


# On every host before the programs: the virtual environment the default setup makes.
_ACTIVATE = "[ ! -f .venv/bin/activate ] || . .venv/bin/activate"


@dataclasses.dataclass(frozen=True)
class Job:
  """What every host runs, in order: each program is a module and its flags (`python -m`)."""
  name: str
  programs: tuple[tuple[str, ...], ...]


def run_job(name: str, config: str, workdir: str, overrides=(), evaluate: bool = False,
            eval_flags=("--once",)) -> Job:
  """The trainer on `config` (with `--config.X=V` overrides) into `workdir`, then (`evaluate`)
  the evaluator with the same flags and `eval_flags`."""
  flags_ = (f"--config={config}", *overrides, f"--workdir={workdir}")
  programs = [("ig_captioner.train", *flags_)]
  if evaluate:
    programs.append(("ig_captioner.evaluate", *flags_, *eval_flags))
  return Job(job_name(name or workdir.rstrip("/").rsplit("/", 1)[-1]), tuple(programs))


def job_name(*parts: str) -> str:
  """A name every launcher accepts (GKE's: [a-z][-a-z0-9]*, at most 40 characters), e.g.
  ('demo', 'ig-captioner seed=0') -> 'demo-ig-captioner-seed-0'."""
  name = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-") or "job"
  name = name if name[0].isalpha() else f"ig-{name}"
  if len(name) > 40:  # Keep distinct long names distinct.
    name = f"{name[:33].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
  return name


def check_workdir(launcher: str, workdir: str) -> None:
  """Every host must reach the workdir: refuses a relative path for a remote launcher."""
  if launcher in REMOTE and not (workdir.startswith("gs://") or os.path.isabs(workdir)):
    raise LaunchError(f"--workdir={workdir} is relative, but the {launcher} launcher runs on "
                      "other hosts: give gs://BUCKET/... or an absolute path on a filesystem "
                      "every host shares")


def _pinned_jax() -> str:
  """The jax version setup.py pins (the accelerator wheels must match it)."""
  try:
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
      return re.search(r'"jax==([^"]+)"', f.read()).group(1)
  except (OSError, AttributeError):
    import importlib.metadata  # pylint: disable=g-import-not-at-top
    return importlib.metadata.version("jax")


def _env_exports(env) -> str:
  """`export K=V && ...` for every KEY=VALUE ('' without any)."""
  return "".join(f"export {k}={shlex.quote(v)} && " for k, v in env)


def _shell(job: Job, python: str = "python") -> str:
  """The job's programs as one shell line, stopping at the first failure."""
  return " && ".join(shlex.join([python, "-m", *program]) for program in job.programs)


@dataclasses.dataclass
class Plan:
  """What to do here, in order: write `files` (path -> text), then run `commands`."""
  commands: list[list[str]] = dataclasses.field(default_factory=list)
  files: dict[str, str] = dataclasses.field(default_factory=dict)


class Launcher:
  """One launcher with its options checked; `setup()` once, then `submit(job)` per job."""

  def __init__(self, kind: str, values: dict):
    if kind not in LAUNCHERS:
      raise LaunchError(f"unknown launcher {kind!r}: choose one of {', '.join(LAUNCHERS)}")
    known = {o.name: o for o in launch_options.OPTIONS}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for name, value in values.items():
      if name not in known:
        raise LaunchError(f"unknown launcher option --{name}; the options: {', '.join(known)}")
      if kind not in known[name].launchers and value != known[name].default:
        raise LaunchError(f"--{name} is an option of the {' and '.join(known[name].launchers)} "
                          f"launcher, not of {kind}: drop it")
    self.kind = kind
    self.o = argparse.Namespace(**{o.name: values.get(o.name, o.default)
                                 for o in launch_options.OPTIONS})
    self.env = []
    for pair in self.o.env:
      key, sep, value = pair.partition("=")
      if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise LaunchError(f"--env={pair}: give KEY=VALUE, e.g. --env=TFDS_DATA_DIR=gs://b/tfds")
      self.env.append((key, value))
    required = {"tpu_vm": ("tpu_name", "zone"), "xpk": ("cluster", "zone", "project", "tpu_type"),
                "slurm": ()}.get(kind, ())
    missing = [f"--{name}" for name in required if not getattr(self.o, name)]
    if missing:
      raise LaunchError(f"the {kind} launcher needs {', '.join(missing)} (see --help)")
    if kind == "xpk" and bool(self.o.docker_image) == bool(self.o.base_docker_image):
      raise LaunchError("the xpk launcher needs one of --docker_image (the package installed) or "
                        "--base_docker_image (this checkout is added and installed at start)")
    if kind == "slurm" and min(self.o.nodes, self.o.gpus_per_node) < 1:
      raise LaunchError(f"--nodes={self.o.nodes} and --gpus_per_node={self.o.gpus_per_node} "
                        "must be at least 1")

  @property
  def rehearsal(self) -> bool:
    """Whether submitting only rehearses (xpk's own dry run)."""
    return bool(self.o.xpk_dry_run)

  def setup(self) -> Plan:
    """What installs the code once: on every TPU worker, or here for SLURM (a shared disk)."""
    if self.kind == "tpu_vm":
      return self._tpu_vm_setup()
    if self.kind == "slurm" and self.o.setup != "none":
      return Plan([["bash", "-c", self.o.setup or self._default_setup("cuda12")]])
    return Plan()

  def submit(self, job: Job) -> Plan:
    """What starts `job` (and, for a remote launcher, returns once it is submitted)."""
    return getattr(self, f"_{self.kind}")(job)

  def _default_setup(self, accelerator: str) -> str:
    return (f"source launch/venv.sh '' && python -m pip install --quiet "
            f"'jax[{accelerator}]=={_pinned_jax()}'")

  def _local(self, job: Job) -> Plan:
    return Plan([[sys.executable, "-m", *program] for program in job.programs])

  # Cloud TPU VM: the same command on every worker of the slice (--worker=all).
  def _gcloud(self, verb: str, *args: str) -> list[str]:
    project = [f"--project={self.o.project}"] if self.o.project else []
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={self.o.zone}",
            "--worker=all", *project]

  def _on_workers(self, script: str) -> list[str]:
    return self._gcloud("ssh", self.o.tpu_name, f"--command={script}")

  def _tpu_vm_setup(self) -> Plan:
    remote = shlex.quote(self.o.remote_dir)
    plan = Plan()
    if self.o.source == "copy":
      archive = "ig_captioner_src.tar.gz"
      plan.commands.append(["bash", "-c", f"cd {shlex.quote(REPO)} && git ls-files -z --cached "
                            "--others --exclude-standard | tar --null -czf "
                            f"/tmp/{archive} -T -"])
      plan.commands.append(self._gcloud("scp", f"/tmp/{archive}",
                                        f"{self.o.tpu_name}:{archive}"))
      fetch = f"mkdir -p {remote} && tar -xzf {archive} -C {remote}"
    else:
      fetch = (f"(git -C {remote} pull --ff-only || git clone {shlex.quote(self.o.source)} "
               f"{remote})")
    install = "true" if self.o.setup == "none" else (self.o.setup or self._default_setup("tpu"))
    plan.commands.append(self._on_workers(f"{fetch} && cd {remote} && {install}"))
    return plan

  def _tpu_vm(self, job: Job) -> Plan:
    run = f"{_ACTIVATE} && {_env_exports(self.env)}{_shell(job)}"
    if self.o.foreground:
      script = f"cd {shlex.quote(self.o.remote_dir)} && {run}"
    else:  # One job at a time on the TPU: each waits for the lock.
      script = (f"cd {shlex.quote(self.o.remote_dir)} && mkdir -p logs && nohup flock "
                f"logs/.tpu.lock bash -c {shlex.quote(run)} > logs/{job.name}.log 2>&1 "
                "< /dev/null &")
    return Plan([self._on_workers(script)])

  # GKE through xpk: a JobSet with one pod per TPU VM host of each slice.
  def _xpk(self, job: Job) -> Plan:
    install = ""
    if self.o.base_docker_image:  # xpk adds this checkout at /app, the command's directory.
      install = f"python3 -m pip install --quiet -e . 'jax[tpu]=={_pinned_jax()}' && "
    image = ([f"--docker-image={self.o.docker_image}"] if self.o.docker_image else
             [f"--base-docker-image={self.o.base_docker_image}", f"--script-dir={REPO}"])
    return Plan([[self.o.xpk_binary, "workload", "create", f"--cluster={self.o.cluster}",
                  f"--workload={job.name}", f"--tpu-type={self.o.tpu_type}",
                  f"--num-slices={self.o.num_slices}", f"--project={self.o.project}",
                  f"--zone={self.o.zone}", *image,
                  f"--command={_env_exports(self.env)}{install}{_shell(job, 'python3')}",
                  *(["--dry-run"] if self.o.xpk_dry_run else [])]])

  # SLURM: one task per GPU; each task sees its own GPU only, as device 0.
  def sbatch_script(self, job: Job) -> str:
    """The batch script: #SBATCH lines, then `srun` of each program on every task."""
    log_dir = os.path.abspath(self.o.slurm_log_dir)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job.name}", f"#SBATCH --nodes={self.o.nodes}",
             f"#SBATCH --ntasks-per-node={self.o.gpus_per_node}", "#SBATCH --gpus-per-task=1",
             f"#SBATCH --output={log_dir}/%x-%j.out", f"#SBATCH --error={log_dir}/%x-%j.err",
             f"#SBATCH --chdir={REPO}"]
    for name in ("cpus_per_task", "partition", "account", "time"):
      if getattr(self.o, name):
        lines.append(f"#SBATCH --{name.replace('_', '-')}={getattr(self.o, name)}")
    lines += [f"#SBATCH {arg}" for arg in self.o.sbatch_arg]
    lines += [
        "# Rendered by ig_captioner.tools.launchers: every task runs the same command and",
        "# jax.distributed.initialize() reads SLURM's variables.",
        "set -euo pipefail",
        _ACTIVATE,
        "# --gpu-bind=per_task:1 shows each task its own GPU only, which it sees as device 0",
        "# (jax would otherwise pick device SLURM_LOCALID).",
        "export JAX_LOCAL_DEVICE_IDS=0",
        *[f"export {k}={shlex.quote(v)}" for k, v in self.env],
        *[f"srun --kill-on-bad-exit=1 --gpu-bind=per_task:1 {shlex.join(['python', '-m', *p])}"
          for p in job.programs]]
    return "\n".join(lines) + "\n"

  def _slurm(self, job: Job) -> Plan:
    script = os.path.join(os.path.abspath(self.o.slurm_log_dir), f"{job.name}.sbatch")
    return Plan([["sbatch", script]], {script: self.sbatch_script(job)})


def execute(plan: Plan, dry_run: bool) -> None:
  """Writes the plan's files and runs its commands, or (`dry_run`) prints them."""
  for path, text in plan.files.items():
    if dry_run:
      print(f"# {path} (not written: dry run)\n{text}", end="", flush=True)
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  for command in plan.commands:
    print(("(dry run) $ " if dry_run else "$ ") + shlex.join(command), flush=True)
    if dry_run:
      continue
    try:
      code = subprocess.run(command, check=False).returncode
    except FileNotFoundError as e:
      raise LaunchError(f"{command[0]} is not installed or not on PATH (install it, e.g. the "
                        "Google Cloud CLI, SLURM's client or xpk: bash launch/xpk_venv.sh), or "
                        "add --dry_run to print the commands") from e
    if code:
      raise LaunchError(f"{shlex.join(command[:4])} ... exited with status {code} (its output "
                        "is above)")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m ig_captioner.tools.launchers", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("launcher", help=f"One of {', '.join(LAUNCHERS)}.")
  parser.add_argument("--config", required=True, help="Config file, optionally with ':ARGS'.")
  parser.add_argument("--workdir", required=True, help="The run's workdir (gs:// or shared).")
  parser.add_argument("--evaluate", action="store_true",
                      help="Then evaluate the latest checkpoint (the evaluator's --once).")
  parser.add_argument("--dry_run", action="store_true", help="Print the commands, run nothing.")
  launch_options.add_arguments(parser)
  parser.epilog = "Arguments after -- are config overrides: --config.FIELD=VALUE."
  argv = sys.argv[1:] if argv is None else list(argv)
  split = argv.index("--") if "--" in argv else len(argv)
  args, overrides = parser.parse_args(argv[:split]), argv[split + 1:]
  try:
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
      raise LaunchError(f"{bad[0]!r}: arguments after -- are config overrides, "
                        "--config.FIELD=VALUE")
    values = {o.name: getattr(args, o.name) for o in launch_options.OPTIONS}
    launcher = Launcher(args.launcher, values)
    check_workdir(args.launcher, args.workdir)
    job = run_job(args.job_name, args.config, args.workdir, overrides, args.evaluate)
    execute(launcher.setup(), args.dry_run)
    execute(launcher.submit(job), args.dry_run)
  except errors.UserError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  if args.launcher in REMOTE:
    verb = "Would submit" if args.dry_run or launcher.rehearsal else "Submitted"
    print(f"{verb} {job.name} with the {args.launcher} launcher; it runs on its own (outputs "
          f"under {args.workdir}).")


if __name__ == "__main__":
  main()
