"""Causal text decoder, shared between the captioner P(t|I) and the text-only model P(t).

Each layer has causal self-attention, cross-attention to visual tokens, and an MLP (pre-LN).
Called with `visual_BxNxE=None` it skips every cross-attention sublayer, so the very same
parameters define the text-only language model used for the IG prior.

Shape letters: B batch, L text length, N visual tokens, E visual width, D decoder width,
V vocabulary.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner.models import layers
from ig_captioner.models.vit import TransformerSize


class DecoderBlock(nn.Module):
  size: TransformerSize
  dtype: Any

  @nn.compact
  def __call__(self, x_BxLxD, visual_BxNxE):
    y = layers.layer_norm(self.dtype, "ln_self")(x_BxLxD)
    self_attention = layers.MultiHeadAttention(self.size.num_heads, self.dtype, name="self_attn")
    x_BxLxD = x_BxLxD + self_attention(y, y, causal=True)
    if visual_BxNxE is not None:
      y = layers.layer_norm(self.dtype, "ln_cross")(x_BxLxD)
      cross_attention = layers.MultiHeadAttention(self.size.num_heads, self.dtype,
                                                  name="cross_attn")
      x_BxLxD = x_BxLxD + cross_attention(y, visual_BxNxE)
    y = layers.layer_norm(self.dtype, "ln_mlp")(x_BxLxD)
    x_BxLxD = x_BxLxD + layers.MlpBlock(self.size.mlp_dim, self.dtype, name="mlp")(y)
    return nn.with_logical_constraint(x_BxLxD, layers.BATCH_LENGTH_EMBED)


class TextDecoder(nn.Module):
  """Maps input tokens_BxL (and optional visual tokens) to next-token logits_BxLxV (float32)."""
  size: TransformerSize
  vocab_size: int
  max_len: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens_BxL, visual_BxNxE=None):
    length = tokens_BxL.shape[1]
    if length > self.max_len:
      raise ValueError(f"text length {length} exceeds the decoder's max_len {self.max_len}")
    table_VxD = self.param(
        "token_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
        (self.vocab_size, self.size.width), jnp.float32)
    # Gather from a replicated copy (as FSDP does for every weight just in time): a gather from a
    # vocab-sharded table would make XLA replicate the batch-sharded activations instead.
    table_VxD = nn.with_logical_constraint(table_VxD.astype(self.dtype), (None, None))
    pos_LxD = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("positions", "embed")),
        (self.max_len, self.size.width), jnp.float32)[:length]
    x_BxLxD = jnp.take(table_VxD, tokens_BxL, axis=0) + pos_LxD.astype(self.dtype)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, layers.BATCH_LENGTH_EMBED)
    if visual_BxNxE is not None:
      visual_BxNxE = nn.with_logical_constraint(visual_BxNxE.astype(self.dtype),
                                                layers.BATCH_LENGTH_EMBED)
    for i in range(self.size.depth):
      x_BxLxD = DecoderBlock(self.size, self.dtype, name=f"block{i}")(x_BxLxD, visual_BxNxE)
    x_BxLxD = layers.layer_norm(self.dtype, "ln_final")(x_BxLxD)
    logits_BxLxV = layers.dense(self.vocab_size, ("embed", "vocab"), self.dtype, "head",
                                kernel_init=nn.initializers.zeros_init())(x_BxLxD)
    return nn.with_logical_constraint(logits_BxLxV.astype(jnp.float32),
                                      ("activation_batch", "activation_length", "activation_vocab"))
