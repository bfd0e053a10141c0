"""Starting a run from another run's params (`config.init_from`): a trained run or one converted
from another codebase (`ig_captioner.convert`).

    config.init_from = dict(workdir="/runs/clip_b32", step=None,   # None: its latest step
                            rename={"encoder": "image_tower"})      # our prefix: theirs

At a fresh start (no checkpoint in the run's own workdir; a resumed run restores its own), each
param of this run whose path (after `rename`) names a param of the source takes its value; the
others keep their initialisation. The log says which were loaded and which are fresh; a loaded
param of another shape is an error naming both. With `config.frozen` (a regex of param paths,
`optimizer.build`) the loaded tower can stay fixed: locked-image tuning (LiT).
"""

import collections

from absl import logging
import flax
import jax
import ml_collections

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import models
from ig_captioner import train_state


def spec(value) -> ml_collections.ConfigDict:
  """`config.init_from` as (workdir, step, rename): a workdir string is accepted as well."""
  if isinstance(value, str):
    value = {"workdir": value}
  out = ml_collections.ConfigDict(dict(step=None, rename={}))
  out.update(dict(value))
  unknown = set(out) - {"workdir", "step", "rename"}
  if unknown or not out.get("workdir"):
    raise errors.ConfigError(f"config.init_from={dict(value)} needs a workdir, and only step and "
                             f"rename besides (unknown: {sorted(unknown)})")
  return out


def _source_path(path: str, rename: dict) -> str:
  for ours, theirs in rename.items():
    if path == ours or path.startswith(ours + "/"):
      return theirs + path[len(ours):]
  return path


def _summary(paths: list[str]) -> str:
  """'encoder (26), decoder/block0 (12)' style counts by top-level name."""
  counts = collections.Counter(p.split("/")[0] for p in paths)
  return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "none"


def load_into(params, value, mesh) -> tuple[dict, list[str], list[str]]:
  """`params` with every param the source of `value` (`config.init_from`) holds, on the same
  shardings. Returns (params, loaded paths, fresh paths)."""
  init = spec(value)
  source_config = experiment.read_config(init.workdir)
  source_model = models.build(source_config.model)
  abstract, _ = train_state.abstract_params_and_shardings(source_model.init_params, mesh)
  ckpt = checkpointing.Checkpointer(init.workdir, read_only=True)
  try:
    step, source = ckpt.restore_params_at(
        init.step, abstract, source_config,
        "config.init_from names this run; train or convert one there")
  finally:
    ckpt.close()
  theirs = flax.traverse_util.flatten_dict(source, sep="/")
  ours = flax.traverse_util.flatten_dict(params, sep="/")
  loaded, fresh, mismatched = [], [], []
  for path, value in ours.items():
    source_path = _source_path(path, dict(init.rename))
    if source_path not in theirs:
      fresh.append(path)
    elif theirs[source_path].shape != value.shape:
      mismatched.append(f"{path} {value.shape} vs {init.workdir}'s {source_path} "
                        f"{theirs[source_path].shape}")
    else:
      ours[path] = jax.device_put(theirs[source_path].astype(value.dtype), value.sharding)
      loaded.append(path)
  if mismatched:
    raise errors.ConfigError(f"config.init_from: params of other shapes: "
                             f"{'; '.join(mismatched[:4])}{' ...' if len(mismatched) > 4 else ''}"
                             ". Make config.model match the source's, or rename elsewhere")
  if not loaded:
    raise errors.ConfigError(
        f"config.init_from: no param of this model is in {init.workdir} (its top-level names: "
        f"{sorted({p.split('/')[0] for p in theirs})}); map ours onto them with "
        "config.init_from.rename, e.g. {'encoder': 'image_tower'}")
  used = {_source_path(p, dict(init.rename)) for p in loaded}
  logging.info("init_from %s step %d: loaded %d arrays (%s); fresh %d (%s); not used from the "
               "source %d (%s)", init.workdir, step, len(loaded), _summary(loaded), len(fresh),
               _summary(fresh), len(set(theirs) - used), _summary(sorted(set(theirs) - used)))
  return flax.traverse_util.unflatten_dict(ours, sep="/"), loaded, fresh
