"""optax AdamW with linear warmup + cosine decay, global-norm clipping and a weight-decay mask."""

import re

import jax
import ml_collections
import optax

from ig_captioner import errors
from ig_captioner import tree_paths

# Params named like this are decayed; biases, norm scales/offsets and embeddings are not.
DECAYED_PARAM_NAMES = ("kernel",)


def weight_decay_mask(params):
  """True for params that get weight decay (2-D matmul kernels), False for the rest."""
  def decayed(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and names[-1] in DECAYED_PARAM_NAMES
  return jax.tree_util.tree_map_with_path(decayed, params)


def learning_rate_schedule(opt_config: ml_collections.ConfigDict, total_steps: int):
  if not 0 <= opt_config.warmup_steps < total_steps:
    raise errors.ConfigError(f"config.optimizer.warmup_steps={opt_config.warmup_steps} must be in "
                     f"[0, config.total_steps={total_steps})")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_config.learning_rate, warmup_steps=opt_config.warmup_steps,
      decay_steps=total_steps, end_value=opt_config.learning_rate * opt_config.final_lr_fraction)


def _frozen_pattern(frozen: str) -> re.Pattern:
  try:
    return re.compile(frozen)
  except re.error as e:
    raise errors.ConfigError(f"config.frozen={frozen!r} is not a regular expression: {e}") from None


def frozen_mask(params, frozen: str | None):
  """True for the params whose 'a/b/c' path the regex `frozen` finds (re.search)."""
  pattern = _frozen_pattern(frozen) if frozen else None
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(pattern and pattern.search(tree_paths.path_name(path))), params)


def check_frozen(params, frozen: str | None) -> int:
  """The number of params `config.frozen` freezes; ConfigError if it is not a regex or freezes
  nothing (a typo would otherwise train everything)."""
  if not frozen:
    return 0
  mask = frozen_mask(params, frozen)
  count = sum(int(x.size) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
  if not count:
    top = sorted({tree_paths.path_name(p).split("/")[0] for p, _ in
                  jax.tree_util.tree_flatten_with_path(params)[0]})
    raise errors.ConfigError(f"config.frozen={frozen!r} matches no param path (paths look like "
                             f"'encoder/block0/mlp/fc1/kernel'; top-level names: {top})")
  return count


def _zero_frozen(frozen: str) -> optax.GradientTransformation:
  """Sets the gradients of the params `frozen` finds to zero (stateless)."""
  def update(updates, state, params=None):
    del params
    zeroed = jax.tree.map(lambda u, f: jax.numpy.zeros_like(u) if f else u, updates,
                          frozen_mask(updates, frozen))
    return zeroed, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(opt_config: ml_collections.ConfigDict, total_steps: int,
          frozen: str | None = None) -> optax.GradientTransformation:
  """AdamW as the module says. Params whose path `frozen` (a regex) finds get a zero gradient
  (outside the clipped norm) and no weight decay, so Adam's update for them is exactly zero and
  they stay bit-identical; their (zero) moments keep the optimizer state's layout unchanged."""
  if opt_config.learning_rate <= 0:
    raise errors.ConfigError(
        f"config.optimizer.learning_rate={opt_config.learning_rate} must be positive")
  if opt_config.weight_decay < 0:
    raise errors.ConfigError(
        f"config.optimizer.weight_decay={opt_config.weight_decay} must be >= 0")
  if opt_config.clip_norm <= 0:
    raise errors.ConfigError(f"config.optimizer.clip_norm={opt_config.clip_norm} must be positive")
  decay_mask = weight_decay_mask
  if frozen:
    _frozen_pattern(frozen)  # A bad regex is named here, before anything is traced.
    decay_mask = lambda params: jax.tree.map(  # pylint: disable=unnecessary-lambda-assignment
        lambda decayed, fixed: decayed and not fixed, weight_decay_mask(params),
        frozen_mask(params, frozen))
  adamw = [optax.clip_by_global_norm(opt_config.clip_norm),
           optax.adamw(learning_rate_schedule(opt_config, total_steps), b1=opt_config.b1,
                       b2=opt_config.b2, weight_decay=opt_config.weight_decay, mask=decay_mask)]
  return optax.chain(*([_zero_frozen(frozen)] if frozen else []), *adamw)
