"""Text tower of the two-tower (CLIP/SigLIP) models: a transformer pooled at the text's end, as
CLIP's text tower (causal) or big_vision's (bidirectional, `causal=False`).

Pooling: the features of the last non-pad token (`pooling='last'`: EOS, or the last token of a
text cut at `max_len`); of the highest id (`'argmax'`: CLIP's end token, which its tokenizer
keeps last when cutting a text; id 0, the pad, is also a piece there); or of the final position
whatever it holds (`'final'`: big_vision's `pool_type='last'`, whose texts end with EOS repeated
as padding, `data/sticky_eos.py`). With causal attention the first two see the whole text and
nothing of the padding after it: no attention mask is needed, and a text encodes the same
whatever its padded length. Bidirectional attention sees the padding too, so such a tower reads
texts padded to `max_len` exactly, as the evaluators give them.

Shape letters: B batch, L text length, D width.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import sharding
from ig_captioner.token_ids import PAD_ID
from ig_captioner.models import layers

POOLINGS = ("last", "argmax", "final")


class TextEncoder(nn.Module):
  """Maps tokens_BxL (`[BOS, pieces..., EOS, PAD...]`) to one feature vector each, x_BxD."""
  size: layers.TransformerSize
  vocab_size: int
  max_len: int
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()
  pooling: str = "last"  # One of POOLINGS.
  causal: bool = True

  @nn.compact
  def __call__(self, tokens_BxL):
    x_BxLxD = layers.token_and_position_embedding(self, tokens_BxL, self.vocab_size, self.max_len,
                                                  self.size.width, self.dtype)
    for i in range(self.size.depth):
      x_BxLxD = layers.TransformerBlock(self.size, causal=self.causal, dtype=self.dtype,
                                        style=self.style, name=f"block{i}")(x_BxLxD)
    x_BxLxD = layers.layer_norm(self.dtype, "ln_final", self.style.ln_eps)(x_BxLxD)
    if self.pooling == "final":
      return nn.with_logical_constraint(x_BxLxD[:, -1], sharding.BATCH_EMBED)
    if self.pooling == "argmax":
      last_B = jnp.argmax(tokens_BxL, axis=1)
    else:
      last_B = jnp.maximum(jnp.sum(tokens_BxL != PAD_ID, axis=1) - 1, 0)
    x_BxD = jnp.take_along_axis(x_BxLxD, last_B[:, None, None], axis=1)[:, 0]
    return nn.with_logical_constraint(x_BxD, sharding.BATCH_EMBED)
