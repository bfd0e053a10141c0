"""Causal text decoder, shared between the captioner P(t|I) and the text-only model P(t).

Each layer has causal self-attention, cross-attention to visual tokens, and an MLP (pre-LN).
Called with `visual_BxNxE=None` it skips every cross-attention sublayer, so the very same
parameters define the text-only language model used for the IG prior.

Two ways to run it: `__call__` recomputes a whole text (training, the reference scorer), and
the cached path (`cross_kv` once per image, `extend` for new tokens after cached ones) that fast
scoring and generation use; both give the same logits.

Shape letters: B batch (images), C rows per image, L/Q text length, N visual tokens,
E visual width, D decoder width, V vocabulary, H heads, K head width.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import sharding
from ig_captioner.models import layers

def extend_blocks(blocks: Sequence[layers.TransformerBlock], x_BxCxQxD, contexts, cross_kvs):
  """Runs `TransformerBlock.extend` through a stack. `contexts` (None: nothing cached) and
  `cross_kvs` (None: no image) hold one entry per block. Returns x and each block's new (k, v)."""
  contexts = contexts if contexts is not None else ((),) * len(blocks)
  cross_kvs = cross_kvs if cross_kvs is not None else (None,) * len(blocks)
  new_kvs = []
  for block, context, cross_kv in zip(blocks, contexts, cross_kvs, strict=True):
    x_BxCxQxD, new_kv = block.extend(x_BxCxQxD, context, cross_kv)
    new_kvs.append(new_kv)
  return x_BxCxQxD, tuple(new_kvs)


class TextDecoder(nn.Module):
  """Maps input tokens_BxL (and optional visual tokens) to next-token logits_BxLxV (float32)."""
  size: layers.TransformerSize
  vocab_size: int
  max_len: int
  dtype: Any = jnp.float32
  remat: bool = False  # Recompute each block's activations in the backward pass.

  def setup(self):
    self.token_embedding, self.pos_embedding = layers.embedding_tables(
        self, self.vocab_size, self.max_len, self.size.width)
    block = nn.remat(layers.TransformerBlock) if self.remat else layers.TransformerBlock
    self.blocks = [block(self.size, causal=True, dtype=self.dtype, name=f"block{i}")
                   for i in range(self.size.depth)]
    self.ln_final = layers.layer_norm(self.dtype, None)
    self.head = layers.dense(self.vocab_size, (sharding.EMBED, sharding.VOCAB), self.dtype, None,
                             kernel_init=nn.initializers.zeros_init())

  def _embed(self, tokens_XxL, positions_L=None):
    return layers.embed_tokens(self.token_embedding, self.pos_embedding, tokens_XxL, self.dtype,
                               positions_L)

  def __call__(self, tokens_BxL, visual_BxNxE=None, bidirectional_B=None):
    """`bidirectional_B` (bool per example): no causal mask for those examples (CapPa)."""
    return self.logits(self.features(tokens_BxL, visual_BxNxE, bidirectional_B))

  def features(self, tokens_BxL, visual_BxNxE=None, bidirectional_B=None):
    """The final-layer-normed features h_BxLxD that `logits` maps to the vocabulary."""
    x_BxLxD = self._embed(tokens_BxL)
    if visual_BxNxE is not None:
      visual_BxNxE = nn.with_logical_constraint(visual_BxNxE.astype(self.dtype),
                                                sharding.BATCH_LENGTH_EMBED)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, visual_BxNxE, bidirectional_B)
    return self.ln_final(x_BxLxD)

  def logits(self, h_BxLxD):
    """Next-token logits_BxLxV (float32) of features from `features` (any L: a chunk too)."""
    return nn.with_logical_constraint(self.head(h_BxLxD).astype(jnp.float32),
                                      sharding.BATCH_LENGTH_VOCAB)

  def cross_kv(self, visual_BxNxE):
    """Every block's cross-attention (k_BxHxNxK, v_BxHxNxK): computed once per image."""
    return tuple(block.cross_kv(visual_BxNxE) for block in self.blocks)

  def extend(self, tokens_BxCxQ, positions_Q, contexts=None, cross_kvs=None):
    """Logits_BxCxQxV (float32) of Q new tokens at `positions_Q` after the cached `contexts`
    (one tuple of `layers.Segment`s per block; None: none), with the image's `cross_kvs` (None:
    the text-only model); and each block's (k, v) of the new tokens, to cache."""
    x_BxCxQxD, new_kvs = extend_blocks(self.blocks, self._embed(tokens_BxCxQ, positions_Q),
                                       contexts, cross_kvs)
    return self.head(self.ln_final(x_BxCxQxD)).astype(jnp.float32), new_kvs
