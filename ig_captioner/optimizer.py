"""optax AdamW with linear warmup + cosine decay, global-norm clipping and a weight-decay mask."""

import jax
import ml_collections
import optax

from ig_captioner import errors

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


def build(opt_config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  if opt_config.learning_rate <= 0:
    raise errors.ConfigError(
        f"config.optimizer.learning_rate={opt_config.learning_rate} must be positive")
  if opt_config.weight_decay < 0:
    raise errors.ConfigError(
        f"config.optimizer.weight_decay={opt_config.weight_decay} must be >= 0")
  if opt_config.clip_norm <= 0:
    raise errors.ConfigError(f"config.optimizer.clip_norm={opt_config.clip_norm} must be positive")
  return optax.chain(
      optax.clip_by_global_norm(opt_config.clip_norm),
      optax.adamw(learning_rate_schedule(opt_config, total_steps), b1=opt_config.b1,
                  b2=opt_config.b2, weight_decay=opt_config.weight_decay, mask=weight_decay_mask))
