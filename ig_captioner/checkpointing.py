"""orbax checkpoints: params, optimizer state, data-iterator position, run metadata, digests.

Layout under `<workdir>/checkpoints/<step>/`, one orbax item per directory:
- `params`: the model params (a plain PyTree; restorable with `ocp.StandardCheckpointer`),
- `train`: `{'step', 'opt_state'}`,
- `data_iter`: the grain iterator state (one JSON file per process, each with a SHA-256 sidecar),
- `meta`: JSON with the model config the params belong to,
- `digests`: JSON with a fingerprint of every array of `params` and `train` and of `meta`
  (`checkpoint_integrity`), checked on restore.

Saves are asynchronous; an interrupted one leaves a `*.orbax-checkpoint-tmp` directory that the
next trainer removes. Restores take abstract targets carrying the *reader's* shardings, so a
checkpoint written on one mesh restores onto any other. Every failure raises `CheckpointError`
with the path, the cause and the fix; nothing already saved is ever deleted by an error path.
"""

import errno
import functools
import logging as py_logging
import os
import re
from typing import Any

from absl import flags
from absl import logging
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from ig_captioner import checkpoint_integrity as integrity
from ig_captioner import errors
from ig_captioner import multihost
from ig_captioner import paths
from ig_captioner.train_state import TrainState


class CheckpointError(errors.UserError, RuntimeError):
  """A checkpoint cannot be written, or is missing, corrupt, or not of the model being restored."""


def directory(workdir: str) -> str:
  return paths.join(workdir, "checkpoints")


def missing_step(step: int, checkpoint_dir: str, available: list[int]) -> CheckpointError:
  """The error for a checkpoint step asked for but not in `checkpoint_dir`."""
  return CheckpointError(f"no checkpoint for step {step} in {checkpoint_dir}; available: "
                         f"{available}")


def run_meta(config: ml_collections.ConfigDict) -> dict:
  """What a checkpoint must agree with to be restored: the model's shapes."""
  return {"model": config.model.to_dict()}


def check_writable(path: str) -> None:
  """Creates `path` if needed, then writes, syncs and removes a small probe file in it.

  Raises CheckpointError naming the path and the cause (read-only, full, not a directory).
  """
  directory_path = paths.path(path)
  if directory_path.exists() and not directory_path.is_dir():
    raise CheckpointError(f"cannot write checkpoints to {path}: it is a file, not a directory. "
                          "Move it away or choose another --workdir.")
  probe = directory_path / f".write_probe_{jax.process_index()}"
  try:
    directory_path.mkdir(parents=True, exist_ok=True)
    with probe.open("wb") as f:
      f.write(bytes(64 * 1024))
      f.flush()
      if not paths.is_remote(probe):  # A bucket's object is durable once its upload ends.
        os.fsync(f.fileno())
    probe.unlink()
  except Exception as e:  # OSError locally; a bucket's file system raises its own types.
    raise CheckpointError(f"cannot write checkpoints to {path}: "
                          f"{getattr(e, 'strerror', None) or e}. Make it "
                          "writable, free space on its disk, or choose another --workdir; "
                          "nothing was written.") from e


def _os_cause(text: str) -> str | None:
  """'No space left on device' for errors that carry an errno ('[Errno 28]', tensorstore's
  "os_error_code='28'"), else None."""
  match = re.search(r"\[Errno (\d+)\]|os_error_code='?(\d+)", text)
  if not match:
    return None
  code = int(match.group(1) or match.group(2))
  return os.strerror(code) if code in errno.errorcode else None


def _use_host_barriers() -> None:
  """Makes orbax's barriers between processes host-side (the coordination service).

  By default orbax synchronises processes with a device collective (a psum over all devices).
  Issued from its finalize thread while the main thread dispatches train steps, such a collective
  can take a different place among the steps' collectives on each process, and the processes then
  wait on each other forever (seen with CPU collectives). Host-side barriers cannot interleave
  with device work, and they time out instead of hanging.
  """
  if jax.process_count() > 1:
    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]  # Defined by orbax.
    flag.value, flag.present = True, 1  # `present`: readable before absl parses the flags.


# Replicated arrays are written by every replica in parallel (orbax's replica-parallel save) only
# when each replica's slice is at least this big: below it, slicing an array into per-replica
# pieces costs one device op per piece and more than the write it splits (most of a small
# model's save time on CPU). The files, and what restores from them, are the same either way.
_MIN_REPLICA_SLICE_BYTES = 1 << 20


@functools.cache
def _configure_array_saving() -> None:
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax warns that it replaces its own default handler.
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=_MIN_REPLICA_SLICE_BYTES), override=True)
  finally:
    logging.set_verbosity(verbosity)


class _OrbaxErrorLog(py_logging.Handler):
  """Keeps the first error orbax logs from its background threads: the cause of a failed save."""

  def __init__(self):
    super().__init__(py_logging.ERROR)
    self.first: str | None = None

  def emit(self, record: py_logging.LogRecord) -> None:
    if self.first is None and "orbax" in record.pathname:
      exc = record.exc_info[1] if record.exc_info else None
      self.first = f"{type(exc).__name__}: {exc}" if exc else record.getMessage()


class Checkpointer:
  """A thin layer over `ocp.CheckpointManager` that knows our items and checks their digests."""

  def __init__(self, workdir: str, *, keep: int | None = None, read_only: bool = False):
    self.directory = directory(workdir)
    self._read_only = read_only
    if not read_only:
      check_writable(self.directory)  # Seconds after start, not at the first save.
    _use_host_barriers()
    _configure_array_saving()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=True, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only,
        # Created in the caller's thread, a directory that cannot be made raises here instead of
        # leaving orbax's save waiting forever for a thread that died.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: int | None = None  # Step of the save under way, until seen finished.
    self._failed: int | None = None  # Step of a save that finished without committing.
    self._errors = _OrbaxErrorLog()
    if not read_only:
      py_logging.getLogger("absl").addHandler(self._errors)
    self._warned_undigested = False

  # ------------------------------------------------------------------------------- Listing ---
  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_directory(self, step: int) -> str:
    return paths.join(self.directory, str(step))

  # -------------------------------------------------------------------------------- Saving ---
  def save(self, state: TrainState, data_iter: grain.DataLoaderIterator,
           config: ml_collections.ConfigDict) -> None:
    """Starts an async save of `state` at its step, with the digests of everything saved.

    Raises CheckpointError if the previous save failed (its step named) or this one cannot start.
    """
    self.wait()
    self._save(int(jax.device_get(state.step)), config, state.params,
               train={"step": state.step, "opt_state": state.opt_state}, data_iter=data_iter)

  def save_params(self, step: int, params: Any, config: ml_collections.ConfigDict) -> None:
    """Saves `params` alone (no optimizer state, no data iterator) at `step`, with their digests,
    and waits for the save: a run made from another codebase's weights (`ig_captioner.convert`),
    which the evaluator and the inference API restore as they restore a trained run's params."""
    self.wait()
    self._save(step, config, params)
    self.wait()

  def _save(self, step: int, config: ml_collections.ConfigDict, params: Any,
            train: Any = None, data_iter: grain.DataLoaderIterator | None = None) -> None:
    """Starts the save at `step` of the params (and the train item and data iterator, if
    given), the run's meta and the digests of each."""
    meta = run_meta(config)
    items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
    digests = {"params": integrity.tree_fingerprints(params), "meta": integrity.json_digest(meta)}
    if train is not None:
      items["train"] = ocp.args.StandardSave(train)
      digests["train"] = integrity.tree_fingerprints(train)
    if data_iter is not None:
      items["data_iter"] = integrity.DataIterSave(data_iter)
    self._errors.first = None
    try:
      self._manager.save(step, force=True, args=ocp.args.Composite(
          digests=ocp.args.JsonSave(digests), **items))
    except Exception as e:  # OSError, tensorstore's ValueError, ...
      raise self._save_error(step, e) from e
    self._pending = step

  def failed_save(self) -> int | None:
    """The step of a save that finished without committing, else None (cheap while it runs)."""
    if self._failed is None and self._pending is not None and (
        not self._manager.is_saving_in_progress()):
      step, self._pending = self._pending, None
      if step not in self.all_steps():
        self._failed = step
    return self._failed

  def wait(self) -> None:
    """Blocks until saves under way finish; raises CheckpointError if one did not commit."""
    step = self._pending if self._pending is not None else self._failed
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_error(step, e) from e
    if self.failed_save() is not None:
      raise self._save_error(self._failed, None)

  def _save_error(self, step: int | None, exc: BaseException | None) -> CheckpointError:
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else self._errors.first
    try:
      check_writable(self.directory)
    except CheckpointError as probe:
      detail = detail or str(probe)
    detail = detail or "unknown cause (see the log above)"
    cause = _os_cause(detail)
    detail = detail.split("[tensorstore_spec")[0].strip()[:400]
    latest = self.latest_step()
    return CheckpointError(
        f"saving checkpoint step {step} to {self.directory} failed: "
        f"{cause + ' (' + detail + ')' if cause else detail}. Training stopped. The checkpoints "
        f"already saved are untouched (latest complete: "
        f"{'step ' + str(latest) if latest is not None else 'none'}); free space or make the "
        "directory writable, then run the same command to resume from there.")

  # ------------------------------------------------------------------------------ Restoring ---
  def _corrupt(self, step: int, detail: str) -> CheckpointError:
    aside = os.fspath(paths.path(self.directory).parent / "unreadable_checkpoints")
    resume = ""
    if not self._read_only:
      earlier = [s for s in self.all_steps() if s < step]
      resume = (" The trainer then resumes from "
                f"{f'step {earlier[-1]}' if earlier else 'scratch'}.")
    return CheckpointError(
        f"checkpoint step {step} in {self.directory} {detail}. It is incomplete or corrupt. "
        f"Move it aside (nothing is deleted): mkdir -p {aside} && "
        f"mv {self.step_directory(step)} {aside}/ .{resume}")

  def _restore(self, step: int, **items) -> dict:
    """Restores `items` of checkpoint `step`; a failed read raises CheckpointError with the fix."""
    error = None
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax and tensorstore raise many types for unreadable data.
      message = str(e).split("[tensorstore_spec")[0].strip()[:500]  # Specs run to kilobytes.
      error = self._corrupt(step, f"could not be read ({type(e).__name__}: {message})")
      error.__cause__ = e
    # A read can fail on one process only (its own shards or iterator state): all must stop.
    if multihost.most(error is not None):
      raise error or self._corrupt(step, "could not be read on another process")
    return restored

  def _verify(self, step: int, digests: dict | None, item: str, tree: Any) -> None:
    """Raises CheckpointError if `tree` differs from the fingerprints saved for `item`."""
    if digests is None:
      return
    differing = integrity.differing_leaves(digests[item], integrity.tree_fingerprints(tree))
    if differing:
      shown = ", ".join(differing[:3]) + (", ..." if len(differing) > 3 else "")
      raise self._corrupt(step, f"does not match the digests written when it was saved: "
                          f"{len(differing)} of {len(digests[item])} arrays of '{item}' differ "
                          f"({shown})")

  def _check_meta(self, step: int, config: ml_collections.ConfigDict) -> dict | None:
    """Checks `meta` against its digest and the config's model; returns the digests (or None)."""
    items = {"meta": ocp.args.JsonRestore()}
    has_digests = (paths.path(self.step_directory(step)) / "digests").exists()
    if has_digests:
      items["digests"] = ocp.args.JsonRestore()
    elif not self._warned_undigested:
      logging.warning("Checkpoint step %d in %s has no digests (written by an older version): "
                      "it is restored without checking for corruption.", step, self.directory)
      self._warned_undigested = True
    restored = self._restore(step, **items)
    saved, digests = restored["meta"], restored.get("digests") if has_digests else None
    if digests is not None and integrity.json_digest(saved) != digests["meta"]:
      raise self._corrupt(step, "does not match the digests written when it was saved: 'meta' "
                          "differs")
    expected = run_meta(config)
    if saved["model"] != expected["model"]:
      diff = {k: (saved["model"].get(k), v) for k, v in expected["model"].items()
              if saved["model"].get(k) != v}
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} was written for a different model: "
          f"(saved, config) = {diff}. Use the config that trained it (config.model = "
          f"{saved['model']}) or a fresh workdir.")
    return digests

  def restore_train(self, step: int, abstract_state: TrainState,
                    data_iter: grain.DataLoaderIterator,
                    config: ml_collections.ConfigDict) -> TrainState:
    """Restores and verifies the full train state onto `abstract_state`'s shardings and rewinds
    `data_iter`."""
    digests = self._check_meta(step, config)
    restored = self._restore(
        step,
        params=ocp.args.StandardRestore(abstract_state.params),
        train=ocp.args.StandardRestore({"step": abstract_state.step,
                                        "opt_state": abstract_state.opt_state}),
        data_iter=integrity.DataIterRestore(data_iter))
    self._verify(step, digests, "params", restored["params"])
    self._verify(step, digests, "train", restored["train"])
    return TrainState(step=restored["train"]["step"], params=restored["params"],
                      opt_state=restored["train"]["opt_state"])

  def restore_params_at(self, step: int | None, abstract_params: Any,
                        config: ml_collections.ConfigDict, none_fix: str) -> tuple[int, Any]:
    """(step, params) at checkpoint `step`, or at the latest one if None. CheckpointError ending
    with `none_fix` if there is no checkpoint, naming the available ones if `step` is not."""
    available = self.all_steps()
    if not available:
      raise CheckpointError(f"no checkpoints in {self.directory}: {none_fix}")
    step = available[-1] if step is None else int(step)
    if step not in available:
      raise missing_step(step, self.directory, available)
    return step, self.restore_params(step, abstract_params, config)

  def restore_params(self, step: int, abstract_params: Any,
                     config: ml_collections.ConfigDict) -> Any:
    """Restores and verifies only the params (no optimizer state, no iterator)."""
    if multihost.most(step not in self.all_steps()):  # Agreed: the next read is collective.
      raise missing_step(step, self.directory, self.all_steps())
    digests = self._check_meta(step, config)
    params = self._restore(step, params=ocp.args.StandardRestore(abstract_params))["params"]
    self._verify(step, digests, "params", params)
    return params

  def close(self) -> None:
    """Waits for saves under way (errors are the caller's to check with `wait`) and closes."""
    try:
      self._manager.close()
    finally:
      py_logging.getLogger("absl").removeHandler(self._errors)
