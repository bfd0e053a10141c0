"""The two-tower family (CLIP, SigLIP): a ViT image tower and a causal text tower, each pooled,
projected to a joint space of `embed_dim` and L2-normalised, plus the learned parameters of the
contrastive logits `z_img . z_txt * exp(log_temperature) + bias`.

config.model: name='two_towers', encoder ('B/16'), text_encoder (a size name), text_depth (None:
the size's), embed_dim, vocab_size, image_size, max_text_len, dtype, temperature_init (the initial
exp(log_temperature): 1/0.07 for CLIP, 10 for SigLIP), bias_init (None: no bias, as CLIP; -10 for
SigLIP). Predict functions: `models.EMBED_FNS`.

Pooling: the image tower averages its visual tokens (`image_pooling='mean'`, global average
pooling, the default) or takes its class token (`'cls'`, with `class_token=True`: CLIP's); the
text tower takes the features of the text's last non-pad token (`text_encoder`). Each is followed
by a linear projection (no bias) to the joint space. Optional fields for checkpoints of other
codebases: `class_token`, `ln_pre`, `patch_bias` (`vit.Options`), `activation`, `ln_eps`
(`layers.BlockStyle`), `text_pooling` ('last' or 'argmax', `text_encoder`).

Shape letters: B batch, H/W image size, C channels, N visual tokens, D tower width, L text
length, E joint embedding width.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.models import base
from ig_captioner.models import layers
from ig_captioner.models import mixed_precision
from ig_captioner.models import text_encoder
from ig_captioner.models import vit


def normalize(x_BxE):
  """Rows scaled to unit L2 norm (in float32)."""
  x_BxE = x_BxE.astype(jnp.float32)
  return x_BxE * jax.lax.rsqrt(jnp.sum(x_BxE * x_BxE, axis=-1, keepdims=True) + 1e-12)


class TwoTowers(nn.Module):
  encoder_variant: str
  text_size: layers.TransformerSize
  embed_dim: int
  vocab_size: int
  image_size: int
  max_text_len: int
  temperature_init: float
  bias_init: float | None
  dtype: Any = jnp.float32
  image_pooling: str = "mean"
  text_pooling: str = "last"
  style: layers.BlockStyle = layers.BlockStyle()
  vit_options: vit.Options = vit.Options()

  def setup(self):
    self.image_tower = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype,
                                         style=self.style, options=self.vit_options)
    self.image_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                         self.dtype, "image_projection", use_bias=False)
    self.text_tower = text_encoder.TextEncoder(self.text_size, self.vocab_size,
                                               self.max_text_len, self.dtype, self.style,
                                               self.text_pooling)
    self.text_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                        self.dtype, "text_projection", use_bias=False)
    # Scalars: no axes to name, replicated everywhere.
    self.log_temperature = self.param(
        "log_temperature", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(self.temperature_init)), ()), (), jnp.float32)
    if self.bias_init is not None:
      self.bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.constant(self.bias_init), ()), (), jnp.float32)

  def embed_images(self, images_BxHxWxC):
    visual_BxNxD = self.image_tower(images_BxHxWxC)
    pooled_BxD = (visual_BxNxD[:, 0] if self.image_pooling == "cls"
                  else jnp.mean(visual_BxNxD, axis=1))
    return normalize(self.image_projection(pooled_BxD))

  def embed_texts(self, tokens_BxL):
    return normalize(self.text_projection(self.text_tower(tokens_BxL)))

  def logit_scale_and_bias(self):
    return jnp.exp(self.log_temperature), (self.bias if self.bias_init is not None else None)

  def __call__(self, images_BxHxWxC, tokens_BxL):
    """Runs every part; used to create every parameter at init."""
    return (self.embed_images(images_BxHxWxC), self.embed_texts(tokens_BxL),
            self.logit_scale_and_bias())


def build(model_config: ml_collections.ConfigDict) -> TwoTowers:
  """Builds the two towers from `config.model`, checking its values."""
  vit.check(model_config.encoder, model_config.image_size)
  size = layers.named_size(model_config.text_encoder, "model.text_encoder",
                           model_config.get("text_depth"))
  if model_config.embed_dim <= 0:
    raise errors.ConfigError(f"config.model.embed_dim={model_config.embed_dim} must be positive")
  base.check_temperature_init(model_config, "CLIP: 1/0.07; SigLIP: 10")
  base.check_max_text_len(model_config)
  bias_init = model_config.get("bias_init")
  image_pooling = model_config.get("image_pooling", "mean")
  vit_options = vit.options(model_config)
  if image_pooling not in ("mean", "cls"):
    raise errors.ConfigError(f"config.model.image_pooling={image_pooling!r} is not 'mean' or "
                             "'cls'")
  text_pooling = model_config.get("text_pooling", "last")
  if text_pooling not in ("last", "argmax"):
    raise errors.ConfigError(f"config.model.text_pooling={text_pooling!r} is not 'last' or "
                             "'argmax'")
  if image_pooling == "cls" and not vit_options.class_token:
    raise errors.ConfigError("config.model.image_pooling='cls' needs config.model.class_token="
                             "True (the token it pools)")
  return TwoTowers(
      encoder_variant=model_config.encoder, text_size=size, embed_dim=model_config.embed_dim,
      vocab_size=model_config.vocab_size, image_size=model_config.image_size,
      max_text_len=model_config.max_text_len,
      temperature_init=float(model_config.temperature_init),
      bias_init=None if bias_init is None else float(bias_init),
      dtype=mixed_precision.compute_dtype(model_config.dtype), image_pooling=image_pooling,
      text_pooling=text_pooling, style=layers.block_style(model_config),
      vit_options=vit_options)


def init_params(model: TwoTowers, rng: jax.Array):
  """Boxed (logically partitioned) params from dummy inputs of the model's shapes."""
  return base.init_params(model, rng, model.max_text_len)


def predict_fns(model: TwoTowers) -> dict:
  """`models.EMBED_FNS` for this model."""
  return {name: base.method_fn(model, name)
          for name in ("embed_images", "embed_texts", "logit_scale_and_bias")}
