"""orbax checkpoints: params, optimizer state, data-iterator position and run metadata.

Layout under `<workdir>/checkpoints/<step>/`, one orbax item per directory:
- `params`: the model params (a plain PyTree; restorable with `ocp.StandardCheckpointer`),
- `train`: `{'step', 'opt_state'}`,
- `data_iter`: the grain iterator state (one JSON file per process),
- `meta`: JSON with the model/data config the params belong to.

Saves are asynchronous; restores take abstract targets carrying the *reader's* shardings, so a
checkpoint written on one mesh restores onto any other.
"""

import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from ig_captioner.train_state import TrainState


class CheckpointError(RuntimeError):
  """A checkpoint is missing or does not fit the model being restored."""


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def run_meta(config: ml_collections.ConfigDict) -> dict:
  """What a checkpoint must agree with to be restored: the model's shapes."""
  return {"model": config.model.to_dict()}


class Checkpointer:
  """A thin layer over `ocp.CheckpointManager` that knows our items."""

  def __init__(self, workdir: str, *, keep: int | None = None, save_every: int = 1,
               read_only: bool = False):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, enable_async_checkpointing=True,
        create=not read_only, read_only=read_only)
    self.directory = directory(workdir)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, state: TrainState, data_iter: grain.DataLoaderIterator,
           config: ml_collections.ConfigDict, force: bool = False) -> bool:
    """Starts an async save of `state` at its step; returns whether a save started."""
    step = int(jax.device_get(state.step))
    return self._manager.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
        meta=ocp.args.JsonSave(run_meta(config))))

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def _restore(self, step: int, **items) -> dict:
    """Restores `items` of checkpoint `step`; a failed read raises CheckpointError with the fix."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax and tensorstore raise many types for unreadable data.
      aside = os.path.join(os.path.dirname(self.directory), "unreadable_checkpoints")
      earlier = [s for s in self.all_steps() if s < step]
      message = str(e).split("[tensorstore_spec")[0].strip()[:500]  # Specs run to kilobytes.
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} could not be read ({type(e).__name__}: "
          f"{message}). It is incomplete or corrupt. Move it aside (nothing is deleted): "
          f"mkdir -p {aside} && mv {os.path.join(self.directory, str(step))} {aside}/ ; the "
          f"trainer then resumes from {f'step {earlier[-1]}' if earlier else 'scratch'}.") from e

  def _check_meta(self, step: int, config: ml_collections.ConfigDict) -> None:
    saved = self._restore(step, meta=ocp.args.JsonRestore())["meta"]
    expected = run_meta(config)
    if saved["model"] != expected["model"]:
      diff = {k: (saved["model"].get(k), v) for k, v in expected["model"].items()
              if saved["model"].get(k) != v}
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} was written for a different model: "
          f"(saved, config) = {diff}. Use the config that trained it (config.model = "
          f"{saved['model']}) or a fresh workdir.")

  def restore_train(self, step: int, abstract_state: TrainState,
                    data_iter: grain.DataLoaderIterator,
                    config: ml_collections.ConfigDict) -> TrainState:
    """Restores the full train state onto `abstract_state`'s shardings and rewinds `data_iter`."""
    self._check_meta(step, config)
    restored = self._restore(
        step,
        params=ocp.args.StandardRestore(abstract_state.params),
        train=ocp.args.StandardRestore({"step": abstract_state.step,
                                        "opt_state": abstract_state.opt_state}),
        data_iter=grain.checkpoint.CheckpointRestore(data_iter))
    return TrainState(step=restored["train"]["step"], params=restored["params"],
                      opt_state=restored["train"]["opt_state"])

  def restore_params(self, step: int, abstract_params: Any,
                     config: ml_collections.ConfigDict) -> Any:
    """Restores only the params (no optimizer state, no iterator) onto the given shardings."""
    if step not in self.all_steps():
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                            f"available: {self.all_steps()}")
    self._check_meta(step, config)
    return self._restore(step, params=ocp.args.StandardRestore(abstract_params))["params"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
