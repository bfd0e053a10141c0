"""A decoder layer whose cross-attention is a residual block of its own, as open_clip's CoCa
builds its multimodal decoder: a causal self-attention block (self-attention, MLP), then a
cross-attention block (layer-normed queries and layer-normed visual tokens, cross-attention,
then its own MLP). `SelfThenCrossLayer` has `layers.TransformerBlock`'s interface (full and
cached paths), so the CoCa decoder stacks either. Without visual tokens the cross-attention
sublayer is skipped and the cross block's MLP still runs: the decoder's text-only path, as the
fused block's.

Shape letters: B batch, C rows per image, L/Q text length, N visual tokens, D width,
E width of the visual tokens.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import sharding
from ig_captioner.models import layers


class CrossAttentionBlock(nn.Module):
  """x + cross-attention(ln(x), ln(visual)), then x + MLP(ln(x))."""
  size: layers.TransformerSize
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()

  def setup(self):
    eps = self.style.ln_eps
    self.ln_query = layers.layer_norm(self.dtype, None, eps)
    self.ln_visual = layers.layer_norm(self.dtype, None, eps)
    self.cross_attn = layers.MultiHeadAttention(self.size.num_heads, self.size.width, self.dtype)
    self.ln_mlp = layers.layer_norm(self.dtype, None, eps)
    self.mlp = layers.MlpBlock(self.size.mlp_dim, self.dtype, self.style.activation)

  def __call__(self, x_BxLxD, visual_BxNxE=None):
    if visual_BxNxE is not None:
      x_BxLxD = x_BxLxD + self.cross_attn(self.ln_query(x_BxLxD), self.ln_visual(visual_BxNxE))
    x_BxLxD = x_BxLxD + self.mlp(self.ln_mlp(x_BxLxD))
    return nn.with_logical_constraint(x_BxLxD, sharding.BATCH_LENGTH_EMBED)

  def cross_kv(self, visual_BxNxE):
    """Keys and values k_BxHxNxK, v_BxHxNxK of the (normed) visual tokens."""
    return self.cross_attn.project_kv_heads(self.ln_visual(visual_BxNxE.astype(self.dtype)))

  def extend(self, x_BxCxQxD, cross_kv=None):
    if cross_kv is not None:
      x_BxCxQxD = x_BxCxQxD + self.cross_attn.attend_segments(self.ln_query(x_BxCxQxD),
                                                              ((*cross_kv, None),))
    return x_BxCxQxD + self.mlp(self.ln_mlp(x_BxCxQxD))


class SelfThenCrossLayer(nn.Module):
  """A causal self-attention block then a `CrossAttentionBlock`, with TransformerBlock's calls."""
  size: layers.TransformerSize
  causal: bool = True
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()

  def setup(self):
    self.self_block = layers.TransformerBlock(self.size, self.causal, self.dtype, self.style)
    self.cross_block = CrossAttentionBlock(self.size, self.dtype, self.style)

  def __call__(self, x_BxLxD, cross_BxNxE=None, bidirectional_B=None, allowed_BxLxL=None):
    x_BxLxD = self.self_block(x_BxLxD, None, bidirectional_B, allowed_BxLxL)
    return self.cross_block(x_BxLxD, cross_BxNxE)

  def cross_kv(self, cross_BxNxE):
    return self.cross_block.cross_kv(cross_BxNxE)

  def extend(self, x_BxCxQxD, context: Sequence[layers.Segment], cross_kv=None):
    """As `TransformerBlock.extend`: (x_BxCxQxD, the new tokens' self-attention (k, v))."""
    x_BxCxQxD, new_kv = self.self_block.extend(x_BxCxQxD, context)
    return self.cross_block.extend(x_BxCxQxD, cross_kv), new_kv
