"""Sequence log-likelihoods of a next-token predictor, and the reference scorer of texts.

A text is stored as `[BOS, (prefix,) t_1, ..., t_n, EOS, PAD, ...]` (length T; the prefix is
the optional prefix-conditioning token, see `token_ids`). The decoder reads `tokens[:, :-1]` and
predicts `tokens[:, 1:]`. So log P(t) sums the log-probabilities of t_1..t_n *and EOS* (the
model must also say where the text ends), never of BOS or the prefix (they are given: with a
prefix, it is log P(t | prefix)) and never of PAD.

`text_logprobs` and `image_text_logprobs` decode every (image, text) pair in full from a
family's `encode_images` and `decode` (`models.CAPTION_FNS`): the reference that the cached
scorer (`prompt_scoring`) is tested against.

Shape letters: B images, N visual tokens, D width, L/T text length, V vocabulary, P texts,
G chunks of C texts.
"""

import jax
import jax.numpy as jnp

from ig_captioner import token_ids


def inputs_and_targets(tokens_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Decoder inputs (drop the last token) and next-token targets (drop BOS)."""
  return tokens_BxT[:, :-1], tokens_BxT[:, 1:]


def token_logprobs(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """log P(target token | prefix) for every position, padding included (mask it yourself)."""
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def chunked_token_logprobs(logits_fn, h_BxLxD: jax.Array, targets_BxL: jax.Array,
                           chunk: int) -> jax.Array:
  """`token_logprobs(logits_fn(h_BxLxD), targets_BxL)`, `chunk` positions at a time: only one
  chunk's B x chunk x V logits exist at once, forward and backward (the backward pass
  recomputes them from the features h). Shape letters: G chunks of C positions."""
  b, length, d = h_BxLxD.shape
  pad = -length % chunk
  h_BxGCxD = jnp.pad(h_BxLxD, ((0, 0), (0, pad), (0, 0)))
  targets_BxGC = jnp.pad(targets_BxL, ((0, 0), (0, pad)))
  h_GxBxCxD = h_BxGCxD.reshape(b, -1, chunk, d).swapaxes(0, 1)
  targets_GxBxC = targets_BxGC.reshape(b, -1, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_logprobs(h_and_targets):
    h_BxCxD, targets_BxC = h_and_targets
    logits_BxCxV = logits_fn(h_BxCxD).astype(jnp.float32)
    target_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
    return target_BxC - jax.nn.logsumexp(logits_BxCxV, axis=-1)

  logp_GxBxC = jax.lax.map(chunk_logprobs, (h_GxBxCxD, targets_GxBxC))
  return logp_GxBxC.swapaxes(0, 1).reshape(b, -1)[:, :length]


def sequence_logprob(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                     unscored_ids=token_ids.UNSCORED_IDS) -> jax.Array:
  """log P(t) of each sequence: the sum of its scored target token log-probabilities."""
  return jnp.sum(jnp.where(token_ids.is_scored(targets_BxL, unscored_ids),
                           token_logprobs(logits_BxLxV, targets_BxL), 0.0), axis=-1)


def chunked(texts_PxT: jax.Array, chunk: int) -> tuple[jax.Array, int]:
  """Pads P up to a multiple of `chunk` (with copies of text 0) and splits it: (G, C, T), P."""
  num_texts = texts_PxT.shape[0]
  pad = -num_texts % chunk
  if pad:
    texts_PxT = jnp.concatenate([texts_PxT, jnp.repeat(texts_PxT[:1], pad, axis=0)])
  return texts_PxT.reshape(-1, chunk, texts_PxT.shape[-1]), num_texts


def text_logprobs(fns: dict, params, texts_PxT, chunk: int, unscored_ids=token_ids.UNSCORED_IDS):
  """log P(t) of every text, logp_P: `chunk` texts per decoder call, cross-attention skipped."""
  chunks_GxCxT, num_texts = chunked(texts_PxT, chunk)

  def score(tokens_CxT):
    inputs, targets = inputs_and_targets(tokens_CxT)
    return sequence_logprob(fns["decode"](params, inputs, None), targets, unscored_ids)

  return jax.lax.map(score, chunks_GxCxT).reshape(-1)[:num_texts]


def image_text_logprobs(fns: dict, params, visual_BxNxD, texts_PxT, chunk: int,
                        unscored_ids=token_ids.UNSCORED_IDS):
  """log P(t|I) of every (image, text) pair, logp_BxP; each decoder call scores B x chunk
  pairs, the visual tokens repeated per text with the (sharded) image axis leading."""
  chunks_GxCxT, num_texts = chunked(texts_PxT, chunk)
  b, n, d = visual_BxNxD.shape

  def score(tokens_CxT):
    c, t = tokens_CxT.shape
    inputs, targets = inputs_and_targets(
        jnp.broadcast_to(tokens_CxT[None], (b, c, t)).reshape(b * c, t))
    visual = jnp.broadcast_to(visual_BxNxD[:, None], (b, c, n, d)).reshape(b * c, n, d)
    return sequence_logprob(fns["decode"](params, inputs, visual), targets,
                            unscored_ids).reshape(b, c)

  logp_GxBxC = jax.lax.map(score, chunks_GxCxT)
  return jnp.moveaxis(logp_GxBxC, 0, 1).reshape(b, -1)[:, :num_texts]
