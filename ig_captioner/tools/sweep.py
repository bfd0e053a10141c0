"""Runs a config's sweep locally: prepare data, train each run, evaluate its final checkpoint, and
print the config's summary tables.

    python -m ig_captioner.tools.sweep --config=configs/demo.py --workdir=/tmp/ig_demo

A config file's `sweep(add)` lists the runs (its hooks: `sweep_hooks.py`): `add(label=...,
arg=..., **overrides)`, where `arg` is appended to the config argument (e.g. `family=clip`) and
`overrides` are config fields (`**{"objective.text_only_weight": 0.0}`); `seeds=(0, 1, 2)` makes
one run per training seed (`config.seed` and `config.data.shuffle_seed`), labelled
`<label> seed=<s>`, and the tables show their mean and sample standard deviation as one row
(`sweep_tables.py`). The data set is prepared once per distinct `config.data` of the runs.

Each run is a separate trainer process and then a separate evaluator process (exactly the
commands a user would type; they are printed). A run whose final checkpoint is already evaluated
is not trained or evaluated again, so an interrupted sweep resumes where it stopped. SIGTERM or
SIGINT (Ctrl-C) is passed to the running trainer, which saves a checkpoint; the sweep then stops
and says how to resume. `--only=LABEL` (repeatable) runs a subset.

`--launcher=tpu_vm|xpk|slurm` (and its options, `ig_captioner/tools/launchers.py`) hands each run
that is not finished, its trainer then its evaluator, to that launcher as one job instead, and
returns once all are submitted (`--launcher_dry_run` prints the submissions): the tables need
every run finished, so run the same command again then (finished runs are not submitted again).
"""

import dataclasses
import re
import signal
import subprocess
import sys
import time

from absl import flags

from ig_captioner import cli
from ig_captioner import config_lib
from ig_captioner import errors
from ig_captioner import metric_files
from ig_captioner import paths
from ig_captioner import preemption
from ig_captioner.data import sources
from ig_captioner.tools import launch_options
from ig_captioner.tools import launchers
from ig_captioner.tools import sweep_hooks
from ig_captioner.tools import sweep_tables


@dataclasses.dataclass(frozen=True)
class Run:
  label: str
  arg: str  # Appended to the config argument, e.g. 'family=clip'.
  overrides: dict
  group: str = ""  # The label the runs of one point's seeds share; '' for a single run.

  @property
  def directory(self) -> str:
    """Its workdir's name: the label as a slug, e.g. 'ig-captioner'."""
    return re.sub(r"[^a-z0-9.=]+", "-", self.label.lower()).strip("-") or "default"


def sweep_runs(module, config_path: str = "the config") -> list[Run]:
  """The runs of the config module's `sweep(add)`."""
  runs = []

  def add(label=None, arg="", seeds=None, **overrides):
    name = label or ",".join([arg] + [f"{k}={v}" for k, v in overrides.items()]).strip(",")
    name = name or "default"
    if seeds is None:
      runs.append(Run(name, arg, overrides))
      return
    for seed in seeds:
      runs.append(Run(f"{name} seed={seed}", arg,
                      {**overrides, "seed": seed, "data.shuffle_seed": seed}, group=name))
  sweep_hooks.of(module, config_path).sweep(add)
  return runs


def run_config_arg(config_arg: str, run: Run) -> str:
  """'configs/demo.py:runlocal' and run arg 'family=clip' give
  'configs/demo.py:runlocal,family=clip'."""
  path, _, arg = config_arg.partition(":")
  args = ",".join(a for a in (arg, run.arg) if a)
  return f"{path}:{args}" if args else path


def _data_overrides(run: Run) -> dict:
  return {k: v for k, v in run.overrides.items() if k.startswith("data.")}


def prepare_commands(config_arg: str, runs: list[Run], extra: list[str]) -> list[list[str]]:
  """`ig_captioner.data.prepare` flags, one per distinct `config.data` of the runs (their
  config arguments and `data.*` overrides may choose other data; fields that only change how
  data is read, such as the shuffle seed, do not change what is on disk: `sources.data_key`)."""
  commands, seen = [], set()
  for run in runs or [Run("default", "", {})]:
    run_arg = run_config_arg(config_arg, run)
    _, run_config = config_lib.load_file(run_arg)
    data = run_config.data.copy_and_resolve_references()
    for dotted, value in _data_overrides(run).items():
      data[dotted.removeprefix("data.")] = value
    key = sources.data_key(data)
    if key not in seen:
      seen.add(key)
      commands.append([f"--config={run_arg}"] + extra + [
          f"--config.{k}={v}" for k, v in _data_overrides(run).items()])
  return commands


class SweepError(errors.UserError):
  """A step of the sweep failed; the failing command printed why."""


class Stopped(Exception):
  """A signal stopped the sweep (the trainer it reached saved a checkpoint)."""


def _run(cmd: list[str]) -> None:
  """Runs `cmd`; SIGTERM/SIGINT go to it (once: it has its own session) and then stop the sweep."""
  print("$ " + " ".join(cmd), flush=True)
  received = []
  with subprocess.Popen(cmd, start_new_session=True) as proc:
    def forward(signum, frame):
      del frame
      received.append(signal.Signals(signum).name)
      proc.send_signal(signum)
    previous = {sig: signal.signal(sig, forward) for sig in preemption.STOP_SIGNALS}
    try:
      code = proc.wait()
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
  if received:
    raise Stopped(received[0])
  if code:
    raise SweepError(f"{' '.join(cmd[:3])} ... exited with status {code} (its error is above)")


def _check_overrides(config, overrides: list[str]) -> None:
  for o in overrides:
    problem = cli.unknown_field(config, o.partition("=")[0].removeprefix("config."))
    if problem or not o.startswith("config."):
      raise errors.ConfigError(f"--set={o}: {problem or 'overrides start with config.'}")


def run_sweep(config_arg: str, workdir: str, overrides: list[str],
              only: list[str] | None = None, launcher: launchers.Launcher | None = None,
              dry_run: bool = False) -> None:
  """Trains and evaluates every run of the config's sweep (or those labelled in `only`), then
  prints the summary tables; with a remote `launcher`, submits the unfinished runs to it
  instead (`dry_run`: prints the submissions) and prints the tables once none is left."""
  module, config = config_lib.load_file(config_arg)
  hooks = sweep_hooks.of(module, config_arg.partition(":")[0])
  runs = every_run = sweep_runs(module, config_arg.partition(":")[0])
  if only:
    unknown = sorted(set(only) - {run.label for run in runs})
    if unknown:
      raise errors.ConfigError(f"--only={unknown} names no run; the runs: "
                               f"{[run.label for run in runs]}")
    runs = [run for run in runs if run.label in only]
  _check_overrides(config, overrides)
  remote = launcher if launcher and launcher.kind != "local" else None
  if remote:
    launchers.check_workdir(remote.kind, workdir)
    # Job names: --job_name or the config file's name, then the run's, e.g. 'demo-clip'.
    config_name = config_arg.partition(":")[0].rsplit("/", 1)[-1].removesuffix(".py")
    job_prefix = remote.o.job_name or config_name
  workdir = paths.resolve(workdir)
  extra = [f"--{o}" for o in overrides]
  python = sys.executable
  start = time.time()
  for command in [] if remote else prepare_commands(config_arg, runs, extra):
    _run([python, "-m", "ig_captioner.data.prepare"] + command)  # Remote: on first use.
  every_checkpoint = hooks.evaluate_every_checkpoint

  results, submitted = [], []
  for run in runs:
    run_arg = run_config_arg(config_arg, run)
    _, run_config = config_lib.load_file(run_arg)
    run_overrides = [f"--config.{k}={v}" for k, v in run.overrides.items()]
    _check_overrides(run_config, [o[2:] for o in run_overrides + extra])
    total_steps = run_config.total_steps
    for o in overrides:
      if o.startswith("config.total_steps="):
        total_steps = int(o.split("=", 1)[1])
    run_dir = paths.join(workdir, run.directory)
    flags_ = [f"--config={run_arg}"] + extra + run_overrides + [f"--workdir={run_dir}"]
    eval_path = metric_files.jsonl_path(run_dir, "eval")
    done = {r["step"]: r for r in metric_files.read_jsonl(eval_path)}
    # Every kept checkpoint, oldest first (a curve over training), or the last one only.
    eval_flags = ["--timeout_s=0"] if every_checkpoint else [f"--step={total_steps}"]
    if total_steps not in done and remote:
      if not submitted:
        launchers.execute(remote.setup(), dry_run)
      name = launchers.job_name(job_prefix, run.directory)
      launchers.execute(remote.submit(launchers.Job(name, (
          ("ig_captioner.train", *flags_), ("ig_captioner.evaluate", *flags_, *eval_flags)))),
                        dry_run)
      submitted.append(name)
      continue
    if total_steps not in done:
      _run([python, "-m", "ig_captioner.train"] + flags_)
      trained = metric_files.read_jsonl(metric_files.jsonl_path(run_dir, "train"))
      if not trained or trained[-1]["step"] != total_steps:  # Its process alone was signalled.
        raise Stopped(f"the trainer of {run_dir}")
      _run([python, "-m", "ig_captioner.evaluate"] + flags_ + eval_flags)
      done = {r["step"]: r for r in metric_files.read_jsonl(eval_path)}
    if "status" in done[total_steps]:
      raise SweepError(f"the final checkpoint of {run_dir} could not be evaluated: "
                       f"{done[total_steps]['reason']}")
    results.append((run.group or run.label, done[total_steps]))
  if submitted:
    rehearsal = dry_run or remote.rehearsal
    print(f"\n{'Would submit (dry run)' if rehearsal else 'Submitted'} {len(submitted)} of "
          f"{len(runs)} runs with the {remote.kind} launcher: {', '.join(submitted)}. They run "
          "on their own; the tables need every run finished. Then run this command again: "
          "finished runs are not submitted again, and the tables are printed (before then, "
          "it submits the unfinished runs once more). Data sets are prepared on first use by "
          "the trainers; one that needs source files must be prepared beforehand "
          "(python -m ig_captioner.data.prepare).")
    return
  results = sweep_tables.aggregate_seeds(results)
  summary_path = paths.join(workdir, sweep_tables.SUMMARY)
  order = [run.group or run.label for run in every_run]
  sweep_tables.write_summary(summary_path, sweep_tables.merge_summary(
      sweep_tables.read_summary(summary_path), results, order)
                if only else results)

  tables, alphas = (hooks.tables() if hooks.tables else sweep_tables.default_tables(config))
  print("\nResults (%) at the final step of each run (a row with n=K: mean ± sample std over K "
        "seeds); alpha: s(t, I) = log P(t|I) - alpha * log P(t) for captioners.")
  for title, columns in tables:
    if columns is None:  # Every metric of eval `title`.
      names = sorted({sweep_tables.ALPHA.sub(r"\1", m) for _, r in results for m in r
                      if m.split("/")[1:2] == [title]})
      columns = {name.split("/", 2)[-1]: name for name in names}
    print(f"\n{title}:\n{sweep_tables.format_table(results, columns, alphas)}")
  if hooks.report:  # The config's own analysis (figures, selections).
    print("\n" + hooks.report(results, workdir, runs))
  print(f"\nRuns are under {workdir} (checkpoints, *_metrics.jsonl, tb/; the numbers above in "
        f"{sweep_tables.SUMMARY}). "
        f"Total time {time.time() - start:.0f}s.")


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = flags.DEFINE_string("config", None, "Config file, optionally with ':ARGS'.")
  workdir = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
  overrides = flags.DEFINE_multi_string(
      "set", [], "Override for every run, e.g. --set=config.total_steps=100 (repeatable).")
  only = flags.DEFINE_multi_string("only", [], "Only the run with this label (repeatable).")
  launcher = flags.DEFINE_enum("launcher", "local", launchers.LAUNCHERS,
                               "Where each run goes: here, or submitted to a TPU VM, GKE "
                               "(xpk) or SLURM, with the launcher options below.")
  dry_run = flags.DEFINE_bool("launcher_dry_run", False,
                              "Print each run's submission instead of submitting it.")
  launcher_options = launch_options.define_absl_flags()
  flags.mark_flags_as_required(["config", "workdir"])

  def run(argv):
    del argv
    try:
      if dry_run.value and launcher.value == "local":
        raise errors.ConfigError("--launcher_dry_run prints the submissions of a remote "
                                 "launcher: add --launcher=tpu_vm, xpk or slurm")
      chosen = launchers.Launcher(launcher.value, {k: v.value for k, v in
                                                   launcher_options.items()})
      run_sweep(config.value, workdir.value, overrides.value, only.value, chosen,
                dry_run.value)
    except Stopped as e:
      print(f"\nSweep stopped ({e}); checkpoints are saved. Run the same command to resume.")
  cli.run(run)


if __name__ == "__main__":
  main()
