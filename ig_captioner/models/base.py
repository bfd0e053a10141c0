"""What the family modules share: their common config checks, init from dummy inputs, and
predict functions that call a module method."""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors


def check_max_text_len(model_config: ml_collections.ConfigDict) -> None:
  if model_config.max_text_len < 2:
    raise errors.ConfigError(f"config.model.max_text_len={model_config.max_text_len} must be "
                             ">= 2 (BOS plus at least EOS)")


def check_temperature_init(model_config: ml_collections.ConfigDict, usual: str) -> None:
  if model_config.temperature_init <= 0:
    raise errors.ConfigError(f"config.model.temperature_init={model_config.temperature_init} "
                             f"must be positive ({usual})")


def init_params(model, rng: jax.Array, text_len: int):
  """Boxed (logically partitioned) params of `model(images, tokens)`, from dummy inputs of the
  model's image size and `text_len` tokens."""
  images = jnp.zeros((1, model.image_size, model.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, text_len), jnp.int32)
  return model.init(rng, images, tokens)["params"]


def method_fn(model, name: str) -> Callable:
  """`fn(params, *args)` calling the module's method `name`."""
  return lambda params, *args: model.apply({"params": params}, *args, method=name)
