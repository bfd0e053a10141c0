"""ViT image encoder: patch embedding, learned position embedding, pre-LN blocks.

Shape letters: B batch, H/W image height/width, C channels, N patches (visual tokens), P pixels
per patch, D width.
"""

import dataclasses
from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.models import layers


def parse_variant(variant: str, field: str = "model.encoder") -> tuple[layers.TransformerSize,
                                                                        int]:
  """'B/16' -> (size of B, patch 16); the size may also be explicit, 'WIDTH:DEPTH:HEADS:MLP_DIM'
  ('768:12:12:3072/32' is 'B/32'). ConfigError naming `field` otherwise."""
  name, sep, patch = variant.rpartition("/")
  try:
    if not sep or not patch.isdigit() or int(patch) <= 0:
      raise errors.ConfigError("no patch size")
    return layers.named_size(name, field), int(patch)
  except errors.ConfigError as e:
    raise errors.ConfigError(
        f"config.{field}={variant!r} is not a ViT variant SIZE/PATCH with SIZE in "
        f"{sorted(layers.SIZES)} or WIDTH:DEPTH:HEADS:MLP_DIM, e.g. 'B/16' ({e})") from None


@dataclasses.dataclass(frozen=True)
class Options:
  """What differs between ViTs from different codebases; the defaults are this codebase's own.

  class_token: a learned token before the patches (CLIP's; its position embedding comes first).
  ln_pre: a layer norm after the position embedding (CLIP's `ln_pre`).
  patch_bias: whether the patch embedding has a bias (CLIP's convolution has none).
  ln_final: a layer norm after the last block (open_clip's CoCa has its after the pooler).
  """
  class_token: bool = False
  ln_pre: bool = False
  patch_bias: bool = True
  ln_final: bool = True
  # The per-channel mean and std the weights were trained with, on pixels in [0, 1] (CLIP's:
  # (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)); None: images in [-1, 1] as given.
  # Every pipeline gives [-1, 1] (`image_ops.normalize_images`); the encoder renormalises.
  image_mean: tuple[float, float, float] | None = None
  image_std: tuple[float, float, float] | None = None


def options(model_config) -> Options:
  """The ViT Options of `config.model` (absent fields: the defaults; `ln_final` is read from
  `encoder_ln_final`, since a decoder may have its own)."""
  flags = {name: bool(model_config.get(key, default)) for name, key, default in (
      ("class_token", "class_token", False), ("ln_pre", "ln_pre", False),
      ("patch_bias", "patch_bias", True), ("ln_final", "encoder_ln_final", True))}
  stats = {}
  for name in ("image_mean", "image_std"):
    value = model_config.get(name)
    if value is not None:
      value = tuple(float(v) for v in value)
      if len(value) != 3 or (name == "image_std" and min(value) <= 0):
        raise errors.ConfigError(f"config.model.{name}={value} must be 3 numbers (RGB, for "
                                 "pixels in [0, 1]), std positive")
    stats[name] = value
  if (stats["image_mean"] is None) != (stats["image_std"] is None):
    raise errors.ConfigError("config.model.image_mean and image_std go together: set both or "
                             "neither")
  return Options(**flags, **stats)


def check(variant: str, image_size: int, field: str = "model.encoder") -> None:
  """Raises ConfigError unless `variant` is valid and its patch size divides `image_size`."""
  _, patch = parse_variant(variant, field)
  if image_size % patch:
    raise errors.ConfigError(f"config.model.image_size={image_size} is not a multiple of the "
                             f"patch size {patch} of config.{field}={variant!r}")


class VisionEncoder(nn.Module):
  """Maps images_BxHxWxC (float, normalized) to visual tokens_BxNxD (the class token first, if
  the options have one)."""
  variant: str
  image_size: int
  dtype: Any = jnp.float32
  remat: bool = False  # Recompute each block's activations in the backward pass.
  style: layers.BlockStyle = layers.BlockStyle()
  options: Options = Options()

  @nn.compact
  def __call__(self, images_BxHxWxC):
    size, patch = parse_variant(self.variant)
    if images_BxHxWxC.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"images have shape {images_BxHxWxC.shape}, expected "
                       f"(B, {self.image_size}, {self.image_size}, C)")
    if self.options.image_mean is not None:  # [-1, 1] -> [0, 1] -> the weights' statistics.
      mean_C = jnp.asarray(self.options.image_mean, jnp.float32)
      std_C = jnp.asarray(self.options.image_std, jnp.float32)
      images_BxHxWxC = ((images_BxHxWxC.astype(jnp.float32) + 1) * 0.5 - mean_C) / std_C
    patches_BxNxP = einops.rearrange(
        images_BxHxWxC, "b (h p) (w q) c -> b (h w) (p q c)", p=patch, q=patch).astype(self.dtype)
    x_BxNxD = layers.dense(size.width, (sharding.PATCH, sharding.EMBED), self.dtype, "patch_embed",
                           use_bias=self.options.patch_bias,
                           kernel_init=nn.initializers.lecun_normal())(patches_BxNxP)
    if self.options.class_token:  # N counts it from here on.
      cls_D = self.param("class_token", nn.with_logical_partitioning(
          nn.initializers.normal(stddev=0.02), (sharding.EMBED,)), (size.width,), jnp.float32)
      cls_Bx1xD = jnp.broadcast_to(cls_D.astype(self.dtype), (x_BxNxD.shape[0], 1, size.width))
      x_BxNxD = jnp.concatenate([cls_Bx1xD, x_BxNxD], axis=1)
    pos_NxD = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02),
                                     (sharding.POSITIONS, sharding.EMBED)),
        (x_BxNxD.shape[1], size.width), jnp.float32)
    x_BxNxD = nn.with_logical_constraint(x_BxNxD + pos_NxD.astype(self.dtype),
                                         sharding.BATCH_LENGTH_EMBED)
    eps = self.style.ln_eps
    if self.options.ln_pre:
      x_BxNxD = layers.layer_norm(self.dtype, "ln_pre", eps)(x_BxNxD)
    block = nn.remat(layers.TransformerBlock) if self.remat else layers.TransformerBlock
    for i in range(size.depth):
      x_BxNxD = block(size, dtype=self.dtype, style=self.style, name=f"block{i}")(x_BxNxD)
    if not self.options.ln_final:
      return x_BxNxD
    return layers.layer_norm(self.dtype, "ln_final", eps)(x_BxNxD)
