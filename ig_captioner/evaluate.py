"""The evaluator process: restores checkpoints from a workdir onto its own mesh and evaluates them.

    python -m ig_captioner.evaluate --config=configs/demo.py --workdir=DIR           # watch
    python -m ig_captioner.evaluate --config=configs/demo.py --workdir=DIR --once    # latest
    python -m ig_captioner.evaluate --config=configs/demo.py --workdir=DIR --step=N  # one step
    python -m ig_captioner.evaluate --workdir=DIR --once   # the config DIR/config.json holds
    ... [--output_dir=OUT]  # results elsewhere, e.g. for a read-only run directory

It never talks to the trainer: it polls `DIR/checkpoints`, evaluates each new step with every
entry of `config.evals`, and appends one row per step to `OUT/eval_metrics.jsonl` (plus
TensorBoard under `OUT/tb/eval`; OUT is DIR unless `--output_dir` says otherwise). Steps
already in that file are not evaluated again, so a restarted evaluator picks up where it
stopped. A step it cannot evaluate gets a row too, with
`"status": "skipped"` (pruned by `keep_checkpoints` before it was read) or `"failed"` (corrupt,
with the reason), and the watch goes on. Watching ends after `config.total_steps` is evaluated,
or after `--timeout_s` without a new checkpoint.
"""

import time

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from ig_captioner import checkpointing
from ig_captioner import cli
from ig_captioner import distributed
from ig_captioner import evaluators
from ig_captioner import experiment
from ig_captioner import metric_files
from ig_captioner import metric_writing
from ig_captioner import models
from ig_captioner import multihost
from ig_captioner import paths
from ig_captioner import sharding
from ig_captioner import train_state
from ig_captioner.data import prepare
from ig_captioner.data import sources


def evaluated_steps(workdir: str) -> set[int]:
  """Steps with a row in `eval_metrics.jsonl`: evaluated, or recorded as skipped or failed."""
  return {row["step"] for row in metric_files.read_jsonl(
      metric_files.jsonl_path(workdir, "eval"))}


def checkpoint_cadence(config: ml_collections.ConfigDict) -> set[int]:
  """The steps the trainer saves at (a stop by a signal adds one off this cadence)."""
  return set(range(config.checkpoint_every, config.total_steps + 1, config.checkpoint_every)) | {
      config.total_steps}


def _pending_steps(available: list[int], directory: str, done: set[int], *, step: int | None,
                   once: bool) -> list[int]:
  """Steps to evaluate now, oldest first; raises if `step` (or, with `once`, any) is missing."""
  if step is not None:
    if step not in available:
      raise checkpointing.missing_step(step, directory, available)
    todo = [step]
  elif once:
    if not available:
      raise checkpointing.CheckpointError(f"no checkpoint in {directory}")
    todo = [available[-1]]
  else:
    todo = available
  if (step is not None or once) and todo[0] in done:
    logging.info("Step %d is already in the eval metrics: not evaluating it again.", todo[0])
  return [s for s in todo if s not in done]


def _missed_steps(config, available: list[int], done: set[int]) -> list[int]:
  """Cadence steps older than the newest checkpoint that are neither evaluated nor on disk:
  pruned by `keep_checkpoints` before this evaluator reached them."""
  if not available:
    return []
  return sorted(s for s in checkpoint_cadence(config)
                if s < available[-1] and s not in done and s not in available)


# Outcomes of one step, agreed by all processes (process 0's view of the directory decides).
EVALUATED, PRUNED, CORRUPT = 0, 1, 2


def _evaluate_step(step: int, ckpt: checkpointing.Checkpointer, abstract_params, config,
                   step_evaluators: list) -> tuple[int, dict | str]:
  """(EVALUATED, metrics), (PRUNED, reason) or (CORRUPT, error message) for checkpoint `step`."""
  logging.info("Evaluating step %d of %s", step, ckpt.directory)
  try:
    params, error = ckpt.restore_params(step, abstract_params, config), None
  except checkpointing.CheckpointError as e:
    params, error = None, e
  outcome = multihost.agree(EVALUATED if error is None else
                            CORRUPT if step in ckpt.all_steps() else PRUNED)
  if outcome == PRUNED:
    return PRUNED, "deleted (keep_checkpoints) while it was being read"
  if outcome == CORRUPT:
    return CORRUPT, str(error or "unreadable on process 0")
  metrics = {}
  for evaluator in step_evaluators:
    metrics.update(evaluator.run(params))
  logging.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
  return EVALUATED, metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None,
             once: bool = False, poll_interval_s: float = 10.0, timeout_s: float = 3600.0,
             output_dir: str | None = None) -> dict[int, dict[str, float]]:
  """Evaluates checkpoints in `workdir` (see module docstring); returns {step: metrics}.

  Watching, a step that cannot be evaluated is recorded in `eval_metrics.jsonl` as
  `{"step": s, "status": "skipped" | "failed", "reason": ...}` and the watch goes on; with
  `step` or `once`, a corrupt checkpoint is recorded as failed and raises CheckpointError.
  """
  experiment.validate(config)
  workdir = paths.resolve(workdir)
  prepare.ensure_prepared(config)
  mesh = sharding.make_mesh(config.eval_mesh)
  model = models.build(config.model)
  abstract_params, _ = train_state.abstract_params_and_shardings(model.init_params, mesh)
  tokenizer = sources.tokenizer(config.data)
  experiment.check_tokenizer_fits(tokenizer, config.model)
  step_evaluators = evaluators.build(config, model.predict_fns, mesh, tokenizer)
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  output_dir = paths.resolve(output_dir or workdir)
  eval_path = metric_files.jsonl_path(output_dir, "eval")
  fix = "pass --output_dir=<a writable directory>"
  if jax.process_index() == 0:
    metric_files.repair(eval_path, fix=fix)  # A torn last line must not swallow the next row.
  writer = metric_writing.create_writer(output_dir, "eval", fix=fix)
  results = {}
  done = evaluated_steps(output_dir)
  single = step is not None or once
  last_new = time.monotonic()

  def record(s: int, status: str, reason: str) -> None:
    logging.warning("Step %d %s: %s", s, status, reason)
    writer.write_row({"step": s, "status": status, "reason": reason})
    done.add(s)

  try:
    while True:
      available = ckpt.all_steps()
      if not single:
        for s in _missed_steps(config, available, done):
          record(s, "skipped", "no checkpoint: pruned (keep_checkpoints) before it was "
                 "evaluated, or never written")
      # Process 0 chooses the step and when to stop, so that all processes run the same work.
      pending = _pending_steps(available, ckpt.directory, done, step=step, once=once)
      s = multihost.agree(pending[0] if pending else -1)
      if s >= 0:
        outcome, result = _evaluate_step(s, ckpt, abstract_params, config, step_evaluators)
        if outcome == EVALUATED:
          writer.write_scalars(s, result)
          writer.flush()
          results[s] = result
          done.add(s)
        else:
          record(s, "skipped" if outcome == PRUNED else "failed", result)
          if single and outcome == CORRUPT:
            raise checkpointing.CheckpointError(f"{result} (recorded as failed in {eval_path})")
        last_new = time.monotonic()
        if single:
          return results
        continue
      idle_s = time.monotonic() - last_new
      if multihost.agree(single or config.total_steps in done or idle_s > timeout_s):
        if idle_s > timeout_s:
          logging.warning("No new checkpoint for %.0fs: stopping.", timeout_s)
        return results
      time.sleep(poll_interval_s)
  finally:
    writer.close()
    ckpt.close()


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = config_flags.DEFINE_config_file(
      "config", None, "Config file (default: the workdir's config.json).", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "The trainer's workdir.")
  step = flags.DEFINE_integer("step", None, "Evaluate only this checkpoint step, then exit.")
  once = flags.DEFINE_bool("once", False, "Evaluate the latest checkpoint, then exit.")
  poll_s = flags.DEFINE_float("poll_interval_s", 10.0, "Seconds between checks for checkpoints.")
  timeout_s = flags.DEFINE_float("timeout_s", 3600.0, "Stop watching after this long idle.")
  output_dir = flags.DEFINE_string("output_dir", None, "Where eval_metrics.jsonl and tb/eval go "
                                   "(default: the workdir).")
  process_flags = distributed.define_flags()
  flags.mark_flags_as_required(["workdir"])

  def run(argv):
    del argv
    distributed.initialize_from_flags(process_flags)
    run_config = config.value if config.value is not None else experiment.read_config(
        workdir.value)
    evaluate(run_config, workdir.value, step=step.value, once=once.value,
             poll_interval_s=poll_s.value, timeout_s=timeout_s.value,
             output_dir=output_dir.value)
  cli.run(run)


if __name__ == "__main__":
  main()
