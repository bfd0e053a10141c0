"""Runs a config's sweep locally: prepare data, train each run, evaluate its final checkpoint, and
print a table of zero-shot top-1 per run and alpha.

    python -m ig_captioner.sweep --config=configs/demo.py --workdir=/tmp/ig_demo

Each run is a separate trainer process and then a separate evaluator process (exactly the
commands a user would type; they are printed). A run whose final checkpoint is already evaluated
is not trained or evaluated again, so an interrupted sweep resumes where it stopped.
"""

import importlib.util
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from ig_captioner import metric_writing
from ig_captioner.evaluators import zeroshot



def load_config_file(config_arg: str):
  """(module, config) for 'path/to/config.py[:args]'."""
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(arg or None)


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


def _run(cmd: list[str]) -> None:
  print("$ " + " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)


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
  module, config = load_config_file(config_arg)
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
      _run([python, "-m", "ig_captioner.evaluate"] + flags_ + [f"--step={total_steps}"])
      done = {r["step"]: r for r in metric_writing.read_jsonl(
          metric_writing.jsonl_path(run_dir, "eval"))}
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
  app.run(lambda argv: run_sweep(config.value, workdir.value, overrides.value))


if __name__ == "__main__":
  main()
