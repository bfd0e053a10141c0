"""ViT image encoder: patch embedding, learned position embedding, pre-LN blocks.

Shape letters: B batch, H/W image height/width, C channels, N patches (visual tokens), P pixels
per patch, D width.
"""

from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.models import layers


def parse_variant(variant: str, field: str = "model.encoder") -> tuple[layers.TransformerSize,
                                                                        int]:
  """'B/16' -> (size of B, patch 16); ConfigError naming `field` otherwise."""
  name, sep, patch = variant.partition("/")
  if not sep or name not in layers.SIZES or not patch.isdigit():
    raise errors.ConfigError(f"config.{field}={variant!r} is not a ViT variant SIZE/PATCH with "
                             f"SIZE in {sorted(layers.SIZES)}, e.g. 'B/16'")
  return layers.SIZES[name], int(patch)


def check(variant: str, image_size: int, field: str = "model.encoder") -> None:
  """Raises ConfigError unless `variant` is valid and its patch size divides `image_size`."""
  _, patch = parse_variant(variant, field)
  if image_size % patch:
    raise errors.ConfigError(f"config.model.image_size={image_size} is not a multiple of the "
                             f"patch size {patch} of config.{field}={variant!r}")


class VisionEncoder(nn.Module):
  """Maps images_BxHxWxC (float, normalized) to visual tokens_BxNxD."""
  variant: str
  image_size: int
  dtype: Any = jnp.float32
  remat: bool = False  # Recompute each block's activations in the backward pass.

  @nn.compact
  def __call__(self, images_BxHxWxC):
    size, patch = parse_variant(self.variant)
    if images_BxHxWxC.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"images have shape {images_BxHxWxC.shape}, expected "
                       f"(B, {self.image_size}, {self.image_size}, C)")
    patches_BxNxP = einops.rearrange(
        images_BxHxWxC, "b (h p) (w q) c -> b (h w) (p q c)", p=patch, q=patch).astype(self.dtype)
    x_BxNxD = layers.dense(size.width, (sharding.PATCH, sharding.EMBED), self.dtype, "patch_embed",
                           kernel_init=nn.initializers.lecun_normal())(patches_BxNxP)
    num_patches = (self.image_size // patch) ** 2
    pos_NxD = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02),
                                     (sharding.POSITIONS, sharding.EMBED)),
        (num_patches, size.width), jnp.float32)
    x_BxNxD = nn.with_logical_constraint(x_BxNxD + pos_NxD.astype(self.dtype),
                                         sharding.BATCH_LENGTH_EMBED)
    block = nn.remat(layers.TransformerBlock) if self.remat else layers.TransformerBlock
    for i in range(size.depth):
      x_BxNxD = block(size, dtype=self.dtype, name=f"block{i}")(x_BxNxD)
    return layers.layer_norm(self.dtype, "ln_final")(x_BxNxD)
