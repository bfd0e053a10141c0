"""The trainer: any model family and objective the config names, jitted and sharded over a
device mesh, with orbax checkpoints.

    python -m ig_captioner.train --config=configs/demo.py[:ARGS] --workdir=DIR \
        [--config.objective.text_only_weight=0 ...]

Restarting with the same workdir resumes from the latest checkpoint, data iterator included.
SIGTERM or SIGINT (preemption, Ctrl-C) finish the step, save a checkpoint and exit 0.
Outputs under DIR: `checkpoints/`, `train_metrics.jsonl`, `tb/train/`, `config.json`. Every
log interval gives steps/s, examples/s, model TFLOP/s per device and MFU: the step's matmul
FLOPs (`step_flops.py`, forward and backward) against the device's peak (`accelerators.py`; on
CPU a matmul measured at start-up; `config.peak_flops_per_device` overrides it).
"""

import time

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from ig_captioner import accelerators
from ig_captioner import checkpointing
from ig_captioner import cli
from ig_captioner import distributed
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import init_from
from ig_captioner import metric_files
from ig_captioner import metric_writing
from ig_captioner import multihost
from ig_captioner import objectives
from ig_captioner import paths
from ig_captioner import preemption
from ig_captioner import profiling
from ig_captioner import sharding
from ig_captioner.data import prepare
from ig_captioner.data import sources
from ig_captioner.data import train_mixture


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training produced a NaN/inf loss or params; no checkpoint was written from that state."""


# What the processes vote on after each step (`multihost.StepVote`); the largest vote wins.
CARRY_ON, STOP_REQUESTED, SAVE_FAILED = 0, 1, 2


def average_metrics(history: list[dict[str, np.ndarray]]) -> dict[str, float]:
  """Averages each scalar over the log interval, on the host with numpy: no jax op here. (Eager
  jax ops run under the multi-process mesh have hung two-process runs on CPU.)"""
  return {name: float(np.mean([np.asarray(m[name], np.float64) for m in history]))
          for name in history[0]}


def throughput(steps_per_sec: float, batch_size: int, flops_per_step: float, num_devices: int,
               peak_per_device: float) -> dict[str, float]:
  """examples/s, achieved model TFLOP/s per device, and MFU (their share of the peak)."""
  per_device = steps_per_sec * flops_per_step / num_devices
  return {"examples_per_sec": steps_per_sec * batch_size,
          "tflops_per_device": per_device / 1e12, "mfu": per_device / peak_per_device}


def check_finite(history: list[tuple[int, dict]], last_checkpoint: int | None,
                 checkpoint_dir: str) -> None:
  """Raises NonFiniteLossError naming the first step whose loss or new params are NaN/inf."""
  for step, metrics in history:
    if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["param_norm"])):
      kept = ("No checkpoint had been written yet." if last_checkpoint is None else
              f"The last good checkpoint (step {last_checkpoint}) in {checkpoint_dir} was saved "
              "before it and is kept.")
      raise NonFiniteLossError(
          f"loss is {metrics['loss']} and the param norm {metrics['param_norm']} at step {step}; "
          f"training stopped. {kept} Lower config.optimizer.learning_rate, raise "
          "config.optimizer.warmup_steps, or check the data.")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`<workdir>/config.json` (process 0), written atomically."""
  path = paths.join(workdir, "config.json")
  try:
    paths.write_atomic(path, config.to_json_best_effort(indent=2))
  except OSError as e:
    raise errors.OutputError(f"cannot write {path}: {e.strerror or e}. Make the workdir "
                             "writable or choose another --workdir.") from e


def train(config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None):
  """Trains until `config.total_steps`, or until SIGTERM/SIGINT (or `stop_at_step`, to simulate
  one) stops it with a checkpoint. Returns the final TrainState.
  """
  experiment.validate(config)
  workdir = paths.resolve(workdir)
  # Checked first, so that an unwritable or full disk fails in seconds, not at the first save.
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    return _train(config, workdir, ckpt, stop_at_step)
  finally:
    try:
      ckpt.close()  # Saves under way complete, so nothing saved is lost.
    except Exception as e:  # pylint: disable=broad-except
      # The normal path reported it already (`ckpt.wait`); on an error path the first error wins.
      logging.warning("Closing the checkpoint manager: %s: %s", type(e).__name__, e)


def _train(config, workdir, ckpt, stop_at_step):
  """The trainer proper, with `ckpt` open."""
  if jax.process_index() == 0:
    _write_config(config, workdir)

  # ----------------------------------------------------------------------------------- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_divides(config.batch_size, mesh, "config.batch_size")
  logging.info("Mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ---------------------------------------------------------------------------------- Input ---
  prepare.ensure_prepared(config)
  tokenizer = sources.tokenizer(config.data)
  experiment.check_tokenizer_fits(tokenizer, config.model)
  for source in train_mixture.train_sources(config.data):  # Before the first step, not during.
    sources.verify_split(source.data_config, source.split)
  if config.data.get("text_only_split"):
    sources.verify_split(config.data, config.data.text_only_split)
  loader = train_mixture.train_loader(config, tokenizer)
  data_iter = iter(loader)

  # ---------------------------------------------- Model, objective, optimizer, abstract state ---
  exp = experiment.build(config, mesh)
  objectives.check_tokenizer(config, tokenizer)
  logging.info("Model has %.2fM params", exp.num_params / 1e6)

  # ------------------------------------------------------------------------ Resume or init ---
  # Process 0's view decides, so that every process restores the same step.
  latest = ckpt.latest_step()
  last_checkpoint = multihost.agree(-1 if latest is None else latest)
  last_checkpoint = None if last_checkpoint < 0 else last_checkpoint
  if last_checkpoint is not None:
    logging.info("Resuming from checkpoint step %d in %s", last_checkpoint, ckpt.directory)
    state = ckpt.restore_train(last_checkpoint, exp.abstract_state, data_iter, config)
  else:
    state = exp.init_state(jax.random.key(config.seed))
    if config.get("init_from"):  # A fresh start from another run's params.
      params, _, _ = init_from.load_into(state.params, config.init_from, mesh)
      state = state.replace(params=params)
  if jax.process_index() == 0:  # Rows logged after that checkpoint are about to be logged again.
    metric_files.repair(metric_files.jsonl_path(workdir, "train"),
                        after_step=last_checkpoint or 0)

  # ------------------------------------------------------------------------ Jitted update ---
  train_step = exp.jit_train_step()
  flops_per_step = exp.model_flops()  # For MFU: traced, not run.
  peak, peak_source = accelerators.peak_flops(
      jax.devices()[0].device_kind, config.model.get("dtype", "float32"),
      config.get("peak_flops_per_device"))
  logging.info("Model FLOPs per step %.3g (%.3g per device); peak %.3g FLOP/s per device (%s)",
               flops_per_step, flops_per_step / mesh.size, peak, peak_source)

  # --------------------------------------------------------------------------------- Loop ---
  writer = metric_writing.create_writer(workdir, "train")
  step = int(jax.device_get(state.step))
  end_step = config.total_steps if stop_at_step is None else min(stop_at_step, config.total_steps)
  # Metrics stay on device until a log or checkpoint step, then come back in one transfer.
  unchecked, interval = [], []  # (step, device metrics) not yet checked; host metrics to log.
  interval_start, interval_step = time.perf_counter(), step
  vote = multihost.StepVote(mesh)

  def check_pending():
    nonlocal unchecked
    fetched = jax.device_get(unchecked)
    check_finite(fetched, last_checkpoint, ckpt.directory)
    interval.extend(m for _, m in fetched)
    unchecked = []

  profile = profiling.StepProfile(config.get("profile"), workdir)
  try:
    with sharding.activate(mesh), preemption.StopRequests() as stop_requests:
      while step < end_step:
        with profile.step(step + 1):
          batch = sharding.global_batch_from_local(next(data_iter), mesh)
          state, metrics = train_step(state, batch)
        step += 1
        profile.after(step, (state, metrics))
        unchecked.append((step, metrics))
        decision = vote(SAVE_FAILED if ckpt.failed_save() else
                        STOP_REQUESTED if stop_requests.requested else CARRY_ON)

        if step % config.log_every == 0 or step == end_step or decision:
          check_pending()
          values = average_metrics(interval)
          now = time.perf_counter()
          values["steps_per_sec"] = (step - interval_step) / (now - interval_start)
          values.update(throughput(values["steps_per_sec"], config.batch_size, flops_per_step,
                                   mesh.size, peak))
          for source, counts in loader.skip_counts.items():  # Sources that skip records.
            values.update({f"data_skipped/{source}/{k}": v for k, v in counts.totals().items()})
          writer.write_scalars(step, values)
          eta = (config.total_steps - step) / max(values["steps_per_sec"], 1e-9)
          logging.info("step %d/%d | loss %.4f | %.2f steps/s | %.0f examples/s | %.3g TFLOP/s "
                       "per device | MFU %.1f%% | ETA %s", step, config.total_steps,
                       values["loss"], values["steps_per_sec"], values["examples_per_sec"],
                       values["tflops_per_device"], 100 * values["mfu"],
                       time.strftime("%H:%M:%S", time.gmtime(eta)))
          interval, interval_start, interval_step = [], now, step

        if decision == SAVE_FAILED:
          ckpt.wait()  # Raises the failed save's error.
          raise checkpointing.CheckpointError(
              f"another process reported a failed checkpoint save in {ckpt.directory}; see its "
              "log for the cause.")
        if step % config.checkpoint_every == 0 or step == config.total_steps or decision:
          check_pending()  # Never save a state whose loss went non-finite.
          ckpt.save(state, data_iter, config)
          last_checkpoint = step
        if decision == STOP_REQUESTED:
          ckpt.wait()
          logging.warning("Stopped at step %d (%s): checkpoint saved in %s. Run the same command "
                          "to resume.", step, stop_requests.signal_name or
                          "a signal reached another process", ckpt.directory)
          break
      ckpt.wait()  # The last save, committed before we report success.
  finally:
    profile.stop()
    writer.close()
  return state


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
  process_flags = distributed.define_flags()
  flags.mark_flags_as_required(["config", "workdir"])

  def run(argv):
    del argv
    distributed.initialize_from_flags(process_flags)
    train(config.value, workdir.value)
  cli.run(run)


if __name__ == "__main__":
  main()
