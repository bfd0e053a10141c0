"""Multihead attention pooling (MAP; big_vision's `MAPHead`, SigLIP's image pooling): one learned
probe attends to a tower's tokens, then a residual MLP on its layer-normed result.

Shape letters: B batch, N tokens, D width.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import sharding
from ig_captioner.models import layers


class MapHead(nn.Module):
  """Pools tokens_BxNxD into pooled_BxD; heads and MLP width are `size`'s (its depth unused)."""
  size: layers.TransformerSize
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()

  def setup(self):
    width = self.size.width
    self.probe = self.param("probe", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.02), (sharding.EMBED,)), (width,), jnp.float32)
    self.attn = layers.MultiHeadAttention(self.size.num_heads, width, self.dtype)
    self.ln = layers.layer_norm(self.dtype, None, self.style.ln_eps)
    self.mlp = layers.MlpBlock(self.size.mlp_dim, self.dtype, self.style.activation)

  def __call__(self, tokens_BxNxD):
    probe_Bx1xD = jnp.broadcast_to(self.probe.astype(self.dtype),
                                   (tokens_BxNxD.shape[0], 1, self.size.width))
    x_Bx1xD = self.attn(probe_Bx1xD, tokens_BxNxD)
    x_Bx1xD = x_Bx1xD + self.mlp(self.ln(x_Bx1xD))
    return nn.with_logical_constraint(x_Bx1xD[:, 0], sharding.BATCH_EMBED)
