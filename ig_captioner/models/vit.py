"""ViT image encoder: patch embedding, learned position embedding, pre-LN blocks.

Shape letters: B batch, H/W image height/width, C channels, N patches (visual tokens), D width,
F MLP width.
"""

import dataclasses
from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import errors
from ig_captioner.models import layers


@dataclasses.dataclass(frozen=True)
class TransformerSize:
  width: int
  depth: int
  mlp_dim: int
  num_heads: int


# Named sizes (ViT paper and big_vision conventions); `mu` and `nano` are CPU-sized for tests.
SIZES = {
    "nano": TransformerSize(width=32, depth=1, mlp_dim=64, num_heads=2),
    "mu": TransformerSize(width=64, depth=2, mlp_dim=128, num_heads=4),
    "Ti": TransformerSize(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": TransformerSize(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": TransformerSize(width=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": TransformerSize(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": TransformerSize(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}


def parse_variant(variant: str) -> tuple[TransformerSize, int]:
  """'B/16' -> (size of B, patch 16)."""
  name, sep, patch = variant.partition("/")
  if not sep or name not in SIZES or not patch.isdigit():
    raise errors.ConfigError(f"ViT variant {variant!r} is not of the form SIZE/PATCH with SIZE in "
                     f"{sorted(SIZES)}, e.g. 'B/16'")
  return SIZES[name], int(patch)


class EncoderBlock(nn.Module):
  size: TransformerSize
  dtype: Any

  @nn.compact
  def __call__(self, x_BxNxD):
    y = layers.layer_norm(self.dtype, "ln_attn")(x_BxNxD)
    attention = layers.MultiHeadAttention(self.size.num_heads, self.dtype, name="attn")
    x_BxNxD = x_BxNxD + attention(y, y)
    y = layers.layer_norm(self.dtype, "ln_mlp")(x_BxNxD)
    x_BxNxD = x_BxNxD + layers.MlpBlock(self.size.mlp_dim, self.dtype, name="mlp")(y)
    return nn.with_logical_constraint(x_BxNxD, layers.BATCH_LENGTH_EMBED)


class VisionEncoder(nn.Module):
  """Maps images_BxHxWxC (float, normalized) to visual tokens_BxNxD."""
  variant: str
  image_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_BxHxWxC):
    size, patch = parse_variant(self.variant)
    if self.image_size % patch:
      raise errors.ConfigError(
          f"image_size {self.image_size} is not a multiple of the patch size {patch}")
    if images_BxHxWxC.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"images have shape {images_BxHxWxC.shape}, expected "
                       f"(B, {self.image_size}, {self.image_size}, C)")
    patches_BxNxP = einops.rearrange(
        images_BxHxWxC, "b (h p) (w q) c -> b (h w) (p q c)", p=patch, q=patch).astype(self.dtype)
    x_BxNxD = layers.dense(size.width, ("patch", "embed"), self.dtype, "patch_embed",
                           kernel_init=nn.initializers.lecun_normal())(patches_BxNxP)
    num_patches = (self.image_size // patch) ** 2
    pos_NxD = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("positions", "embed")),
        (num_patches, size.width), jnp.float32)
    x_BxNxD = nn.with_logical_constraint(x_BxNxD + pos_NxD.astype(self.dtype),
                                         layers.BATCH_LENGTH_EMBED)
    for i in range(size.depth):
      x_BxNxD = EncoderBlock(size, self.dtype, name=f"block{i}")(x_BxNxD)
    return layers.layer_norm(self.dtype, "ln_final")(x_BxNxD)
