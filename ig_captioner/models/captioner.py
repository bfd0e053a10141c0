"""The captioner: ViT encoder + shared causal decoder, built from `config.model`.

    visual_BxNxD = model.apply(params, images_BxHxWxC, method=model.encode)
    logits_BxLxV = model.apply(params, tokens_BxL, visual_BxNxD, method=model.decode)  # P(t|I)
    logits_BxLxV = model.apply(params, tokens_BxL, None, method=model.decode)          # P(t)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner.models import decoder as decoder_lib
from ig_captioner.models import vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Captioner(nn.Module):
  encoder_variant: str
  decoder_size: vit.TransformerSize
  vocab_size: int
  image_size: int
  max_text_len: int
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype)
    # Input tokens are the text without its last token (next-token prediction), hence -1.
    self.decoder = decoder_lib.TextDecoder(self.decoder_size, self.vocab_size,
                                           self.max_text_len - 1, self.dtype)

  def encode(self, images_BxHxWxC):
    return self.encoder(images_BxHxWxC)

  def decode(self, tokens_BxL, visual_BxNxD=None):
    return self.decoder(tokens_BxL, visual_BxNxD)

  def __call__(self, images_BxHxWxC, tokens_BxL):
    """Runs both paths; used to create every parameter at init."""
    return self.decode(tokens_BxL, self.encode(images_BxHxWxC))


def build(model_config: ml_collections.ConfigDict) -> Captioner:
  """Builds the captioner from `config.model`, checking its values."""
  if model_config.dtype not in DTYPES:
    raise errors.ConfigError(
        f"config.model.dtype={model_config.dtype!r} is not one of {sorted(DTYPES)}")
  if model_config.decoder not in vit.SIZES:
    raise errors.ConfigError(f"config.model.decoder={model_config.decoder!r} is not one of "
                     f"{sorted(vit.SIZES)}")
  vit.parse_variant(model_config.encoder)  # Raises a clear error on a malformed variant.
  size = vit.SIZES[model_config.decoder]
  if model_config.get("decoder_depth"):
    size = vit.TransformerSize(size.width, model_config.decoder_depth, size.mlp_dim, size.num_heads)
  if model_config.max_text_len < 2:
    raise errors.ConfigError(f"config.model.max_text_len={model_config.max_text_len} must be >= 2 "
                     "(BOS plus at least EOS)")
  return Captioner(
      encoder_variant=model_config.encoder,
      decoder_size=size,
      vocab_size=model_config.vocab_size,
      image_size=model_config.image_size,
      max_text_len=model_config.max_text_len,
      dtype=DTYPES[model_config.dtype])


def init_params(model: Captioner, rng: jax.Array, num_channels: int = 3):
  """Boxed (logically partitioned) params from dummy inputs of the model's shapes."""
  images = jnp.zeros((1, model.image_size, model.image_size, num_channels), jnp.float32)
  tokens = jnp.zeros((1, model.max_text_len - 1), jnp.int32)
  return model.init(rng, images, tokens)["params"]
