"""Runs a config's sweep locally: prepare data, train each run, evaluate its final checkpoint, and
print a table of zero-shot top-1 per run and alpha.

    python -m ig_captioner.sweep --config=configs/demo.py --workdir=/tmp/ig_demo

Each run is a separate trainer process and then a separate evaluator process (exactly the
commands a user would type; they are printed). A run whose final checkpoint is already evaluated
is not trained or evaluated again, so an interrupted sweep resumes where it stopped. SIGTERM or
SIGINT (Ctrl-C) is passed to the running trainer, which saves a checkpoint; the sweep then stops
and says how to resume.
"""

import os
import signal
import subprocess
import sys
import time

from absl import flags

from ig_captioner import cli
from ig_captioner import config_lib
from ig_captioner import errors
from ig_captioner import metric_writing
from ig_captioner import preemption
from ig_captioner.evaluators import zeroshot



def sweep_runs(module) -> list[tuple[str, dict]]:
  """[(label, overrides)] from the config's `sweep(add)`; `add(label=..., **overrides)`."""
  runs = []

  def add(label=None, **overrides):
    runs.append((label or run_name(overrides), overrides))
  module.sweep(add)
  return runs


def run_name(overrides: dict) -> str:
  """Directory name of a run: its overrides, e.g. 'text_only_weight=0.0'."""
  return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


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


def format_table(rows: list[tuple[str, dict]], eval_name: str, alphas) -> str:
  """Markdown table: one row per run, one column per alpha."""
  header = ["run"] + [f"alpha={a:g}" for a in alphas]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, metrics in rows:
    cells = [f"{100 * metrics[zeroshot.metric_name(eval_name, a)]:.1f}" for a in alphas]
    lines.append("| " + " | ".join([name] + cells) + " |")
  return "\n".join(lines)


def run_sweep(config_arg: str, workdir: str, overrides: list[str]) -> None:
  """Trains and evaluates every run of the config's sweep, then prints the results table."""
  module, config = config_lib.load_file(config_arg)
  for o in overrides:
    problem = cli.unknown_field(config, o.partition("=")[0].removeprefix("config."))
    if problem or not o.startswith("config."):
      raise errors.ConfigError(f"--set={o}: {problem or 'overrides start with config.'}")
  workdir = os.path.abspath(workdir)
  extra = [f"--{o}" for o in overrides]
  total_steps = config.total_steps
  for o in overrides:
    if o.startswith("config.total_steps="):
      total_steps = int(o.split("=", 1)[1])
  python = sys.executable
  start = time.time()
  _run([python, "-m", "ig_captioner.data.prepare", f"--config={config_arg}"] + extra)

  results = []
  for label, run_overrides in sweep_runs(module):
    run_dir = os.path.join(workdir, run_name(run_overrides))
    flags_ = [f"--config={config_arg}"] + extra + [
        f"--config.{k}={v}" for k, v in run_overrides.items()] + [f"--workdir={run_dir}"]
    done = {r["step"]: r for r in metric_writing.read_jsonl(
        metric_writing.jsonl_path(run_dir, "eval"))}
    if total_steps not in done:
      _run([python, "-m", "ig_captioner.train"] + flags_)
      trained = metric_writing.read_jsonl(metric_writing.jsonl_path(run_dir, "train"))
      if not trained or trained[-1]["step"] != total_steps:  # Its process alone was signalled.
        raise Stopped(f"the trainer of {run_dir}")
      _run([python, "-m", "ig_captioner.evaluate"] + flags_ + [f"--step={total_steps}"])
      done = {r["step"]: r for r in metric_writing.read_jsonl(
          metric_writing.jsonl_path(run_dir, "eval"))}
    if "status" in done[total_steps]:
      raise SweepError(f"the final checkpoint of {run_dir} could not be evaluated: "
                       f"{done[total_steps]['reason']}")
    results.append((f"{label} ({os.path.basename(run_dir)})", done[total_steps]))

  print(f"\nZero-shot top-1 (%) at step {total_steps}; rows: runs, columns: alpha in "
        "s(t, I) = log P(t|I) - alpha * log P(t).")
  for eval_name, eval_config in config.evals.items():
    split = eval_config.split
    print(f"\n{eval_name} ({config.data.name} split '{split}'):")
    print(format_table(results, eval_name, eval_config.alphas))
  print(f"\nRuns are under {workdir} (checkpoints, *_metrics.jsonl, tb/). "
        f"Total time {time.time() - start:.0f}s.")


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = flags.DEFINE_string("config", None, "Config file, optionally with ':ARGS'.")
  workdir = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
  overrides = flags.DEFINE_multi_string(
      "set", [], "Override for every run, e.g. --set=config.total_steps=100 (repeatable).")
  flags.mark_flags_as_required(["config", "workdir"])

  def run(argv):
    del argv
    try:
      run_sweep(config.value, workdir.value, overrides.value)
    except Stopped as e:
      print(f"\nSweep stopped ({e}); checkpoints are saved. Run the same command to resume.")
  cli.run(run)


if __name__ == "__main__":
  main()
