"""The trainer: the IG objective, jitted and sharded over a device mesh, with orbax checkpoints.

    python -m ig_captioner.train --config=configs/demo.py[:ARGS] --workdir=DIR \
        [--config.text_only_weight=0 ...]

Restarting with the same workdir resumes from the latest checkpoint, data iterator included.
Outputs under DIR: `checkpoints/`, `train_metrics.jsonl`, `tb/train/`, `config.json`.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import checkpointing
from ig_captioner import console
from ig_captioner import config_lib
from ig_captioner import metric_writing
from ig_captioner import objective
from ig_captioner import optimizer as optimizer_lib
from ig_captioner import sharding
from ig_captioner import train_state as train_state_lib
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.models import captioner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; no checkpoint was written from that state."""


def make_train_step(model, tx, schedule, text_only_weight: float):
  """The update: IG loss, gradients, optax step. Returns (new_state, metrics)."""
  def train_step(state: train_state_lib.TrainState, batch: dict):
    def loss_fn(params):
      return objective.caption_loss(model, params, batch["image"], batch["tokens"],
                                    text_only_weight)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    return train_state_lib.TrainState(state.step + 1, params, opt_state), metrics
  return train_step


def metrics_collection(metric_names):
  """A clu Collection averaging each named scalar over the log interval."""
  return clu_metrics.Collection.create(
      **{name: clu_metrics.Average.from_output(name) for name in metric_names})


def check_finite(pending: list[tuple[int, jax.Array]], last_checkpoint: int | None,
                 checkpoint_dir: str) -> None:
  """Raises NonFiniteLossError naming the first step whose loss is NaN/inf."""
  if not pending:
    return
  losses = np.asarray(jax.device_get([loss for _, loss in pending]))
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    step = pending[bad[0]][0]
    raise NonFiniteLossError(
        f"loss is {losses[bad[0]]} at step {step}; training stopped. The last good checkpoint "
        f"(step {last_checkpoint}) in {checkpoint_dir} is intact. Lower "
        "config.optimizer.learning_rate, raise config.optimizer.warmup_steps, or check the data.")


def train(config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None):
  """Trains until `config.total_steps` (or `stop_at_step`, to simulate a preemption).

  Returns the final TrainState.
  """
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # ----------------------------------------------------------------------------------- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  if config.batch_size % sharding.batch_axis_size(mesh):
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the batch axes "
                     f"of the mesh (data x fsdp = {sharding.batch_axis_size(mesh)})")
  logging.info("Mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ---------------------------------------------------------------------------------- Input ---
  tokenizer = sources.tokenizer(config.data)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ValueError(f"the tokenizer ({tokenizer.source}) has {tokenizer.vocab_size} pieces but "
                     f"config.model.vocab_size={config.model.vocab_size}: raise the latter")
  loader = pipeline.train_loader(config, tokenizer)
  data_iter = iter(loader)

  # -------------------------------------------------------- Model, optimizer, abstract state ---
  model = captioner.build(config.model)
  schedule = optimizer_lib.learning_rate_schedule(config.optimizer, config.total_steps)
  tx = optimizer_lib.build(config.optimizer, config.total_steps)
  abstract_state, state_shardings = train_state_lib.abstract_state_and_shardings(model, tx, mesh)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  logging.info("Model has %.2fM params", num_params / 1e6)

  # ------------------------------------------------------------------------ Resume or init ---
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  last_checkpoint = ckpt.latest_step()
  if last_checkpoint is not None:
    logging.info("Resuming from checkpoint step %d in %s", last_checkpoint, ckpt.directory)
    state = ckpt.restore_train(last_checkpoint, abstract_state, data_iter, config)
  else:
    state = train_state_lib.init(model, tx, mesh, state_shardings,
                                 jax.random.key(config.seed))

  # ------------------------------------------------------------------------ Jitted update ---
  replicated = NamedSharding(mesh, P())
  train_step = jax.jit(
      make_train_step(model, tx, schedule, float(config.text_only_weight)),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, replicated),
      donate_argnums=(0,))

  # --------------------------------------------------------------------------------- Loop ---
  writer = metric_writing.create_writer(workdir, "train")
  step = int(jax.device_get(state.step))
  end_step = config.total_steps if stop_at_step is None else min(stop_at_step, config.total_steps)
  collection_cls, collection, pending_losses = None, None, []
  interval_start, interval_step = time.perf_counter(), step
  try:
    with sharding.activate(mesh):
      while step < end_step:
        batch = sharding.global_batch_from_local(next(data_iter), mesh)
        state, metrics = train_step(state, batch)
        step += 1
        pending_losses.append((step, metrics["loss"]))
        collection_cls = collection_cls or metrics_collection(metrics)
        update = collection_cls.single_from_model_output(**metrics)
        collection = update if collection is None else collection.merge(update)

        if step % config.log_every == 0 or step == end_step:
          check_finite(pending_losses, last_checkpoint, ckpt.directory)
          pending_losses = []
          values = {k: float(v) for k, v in collection.compute().items()}
          now = time.perf_counter()
          values["steps_per_sec"] = (step - interval_step) / (now - interval_start)
          writer.write_scalars(step, values)
          eta = (config.total_steps - step) / max(values["steps_per_sec"], 1e-9)
          logging.info("step %d/%d | loss %.4f | %.2f steps/s | ETA %s", step, config.total_steps,
                       values["loss"], values["steps_per_sec"],
                       time.strftime("%H:%M:%S", time.gmtime(eta)))
          collection, interval_start, interval_step = None, now, step

        preempted = ckpt.reached_preemption(step)
        if step % config.checkpoint_every == 0 or step == config.total_steps or preempted:
          check_finite(pending_losses, last_checkpoint, ckpt.directory)
          pending_losses = []
          if ckpt.save(state, data_iter, config, force=True):
            last_checkpoint = step
        if preempted:
          logging.warning("Preemption signal at step %d: checkpoint saved, exiting.", step)
          break
  finally:
    ckpt.wait()  # Saves already under way complete, so nothing saved is lost.
    ckpt.close()
    writer.close()
  return state


def main(argv):
  del argv
  console.setup()
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
