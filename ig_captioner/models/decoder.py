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


class TextDecoder(nn.Module):
  """Maps input tokens_BxL (and optional visual tokens) to next-token logits_BxLxV (float32)."""
  size: layers.TransformerSize
  vocab_size: int
  max_len: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens_BxL, visual_BxNxE=None, bidirectional_B=None):
    """`bidirectional_B` (bool per example): no causal mask for those examples (CapPa)."""
    x_BxLxD = layers.token_and_position_embedding(self, tokens_BxL, self.vocab_size, self.max_len,
                                                  self.size.width, self.dtype)
    if visual_BxNxE is not None:
      visual_BxNxE = nn.with_logical_constraint(visual_BxNxE.astype(self.dtype),
                                                layers.BATCH_LENGTH_EMBED)
    for i in range(self.size.depth):
      x_BxLxD = layers.TransformerBlock(self.size, causal=True, dtype=self.dtype,
                                        name=f"block{i}")(x_BxLxD, visual_BxNxE, bidirectional_B)
    x_BxLxD = layers.layer_norm(self.dtype, "ln_final")(x_BxLxD)
    logits_BxLxV = layers.dense(self.vocab_size, ("embed", "vocab"), self.dtype, "head",
                                kernel_init=nn.initializers.zeros_init())(x_BxLxD)
    return nn.with_logical_constraint(logits_BxLxV.astype(jnp.float32),
                                      ("activation_batch", "activation_length", "activation_vocab"))
