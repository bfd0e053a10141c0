"""Writes a converted run: `config.json` and a params-only checkpoint at step 0. On a local disk
everything is written into a temporary directory beside the target and renamed into place, so
that a failed conversion leaves `--workdir` as it was."""

import os
import shutil

import flax
import jax
import ml_collections
import numpy as np

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import models
from ig_captioner import paths
from ig_captioner import sharding
from ig_captioner import train_state

STEP = 0


def check_target(workdir: str) -> None:
  """ConfigError unless `workdir` is absent or an empty directory (nothing is overwritten)."""
  target = paths.path(workdir)
  if target.exists() and (not target.is_dir() or any(target.iterdir())):
    raise errors.ConfigError(f"--workdir={workdir} exists and is not empty: choose a new "
                             "directory (a converted run is never written over another)")


def _place(params: dict[str, np.ndarray], model_config: ml_collections.ConfigDict):
  """The params as the model's tree of arrays, placed as the evaluator would place them."""
  model = models.build(model_config)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
                            devices=jax.local_devices()[:1])
  _, shardings = train_state.abstract_params_and_shardings(model.init_params, mesh)
  tree = flax.traverse_util.unflatten_dict(params, sep="/")
  return jax.device_put(tree, shardings)


def write(workdir: str, config: ml_collections.ConfigDict, params: dict[str, np.ndarray],
          files: dict[str, bytes] | None = None) -> None:
  """Writes `config` and `params` ({'a/b/c': array}) as a run in `workdir` (see the module),
  and `files` ({name: content}, e.g. the run's tokenizer) beside them."""
  check_target(workdir)
  remote = paths.is_remote(paths.path(workdir))
  staging = workdir if remote else f"{workdir.rstrip('/')}.converting-{os.getpid()}"
  if not remote and os.path.exists(staging):
    shutil.rmtree(staging)
  try:
    paths.path(staging).mkdir(parents=True, exist_ok=True)
    paths.write_atomic(paths.join(staging, "config.json"), config.to_json_best_effort(indent=2))
    for name, content in (files or {}).items():
      paths.write_atomic(paths.join(staging, name), content)
    ckpt = checkpointing.Checkpointer(staging)
    try:
      ckpt.save_params(STEP, _place(params, config.model), config)
    finally:
      ckpt.close()
  except BaseException:
    if not remote:
      shutil.rmtree(staging, ignore_errors=True)
    raise
  if not remote:
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # Empty (check_target).
    os.rename(staging, workdir)
