"""Token layout and sequence log-likelihoods of a next-token predictor.

A text is stored as `[BOS, t_1, ..., t_n, EOS, PAD, ...]` (length T). The decoder reads
`tokens[:, :-1]` and predicts `tokens[:, 1:]`. So log P(t) sums the log-probabilities of t_1..t_n
*and EOS* (the model must also say where the text ends), never of BOS (it is given) and never of
PAD (masked out).
"""

import jax
import jax.numpy as jnp

from ig_captioner.data.tokenizer import PAD_ID


def inputs_and_targets(tokens_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Decoder inputs (drop the last token) and next-token targets (drop BOS)."""
  return tokens_BxT[:, :-1], tokens_BxT[:, 1:]


def token_logprobs(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """log P(target token | prefix) for every position, padding included (mask it yourself)."""
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def sequence_logprob(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """log P(t) of each sequence: the sum of its non-pad target token log-probabilities."""
  mask_BxL = targets_BxL != PAD_ID
  return jnp.sum(jnp.where(mask_BxL, token_logprobs(logits_BxLxV, targets_BxL), 0.0), axis=-1)
