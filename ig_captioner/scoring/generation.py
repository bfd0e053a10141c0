"""Caption generation with a KV cache: greedy and beam search, optionally IG-guided.

The decoder runs once per generated token (`models.CACHE_FNS`): the visual tokens' cross-attention
keys/values are computed once per image; every block keeps the keys/values of the tokens so far
in a head-major buffer of the text's length (a per-row `layers.Segment`, positions not yet
written masked);
each step decodes one token per beam at its position and writes its keys/values. Beams of one
image attend to that image's visual keys/values without copies. `full_recompute=True` decodes
the whole buffer at every step instead (no cache): the same tokens, for tests and benchmarks.

A hypothesis ends at EOS or after `max_tokens`. Its score is the sum of its tokens' log P(t|I)
(EOS included) minus `ig_alpha` times their log P(t) from the same decoder without the image
(IG-guided decoding; 0 is plain decoding), divided by the length penalty
((5 + length) / 6) ** `length_penalty` (GNMT; 0 compares raw sums). Beam search keeps the
`beam_size` best (alive or ended) candidates by that score at every step. Special ids other than
EOS are never generated.

Shape letters: B images, W beams, T tokens, V vocabulary, N visual tokens, D width.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ig_captioner.token_ids import BOS_ID, EOS_ID, NUM_SPECIAL_IDS, PAD_ID

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  max_tokens: int  # Generated tokens at most (EOS included).
  beam_size: int = 1  # 1: greedy.
  length_penalty: float = 0.0
  ig_alpha: float = 0.0
  full_recompute: bool = False  # No KV cache (the reference).


def _allowed_tokens(vocab_size: int) -> jax.Array:
  """Tokens that may be generated: EOS and every non-special id."""
  ids_V = jnp.arange(vocab_size)
  return (ids_V >= NUM_SPECIAL_IDS) | (ids_V == EOS_ID)


def _penalty(length, power: float):
  return ((5.0 + length) / 6.0) ** power


class _Model:
  """One decoder stream (with the image, or text only): next-token log-probs for the last
  written position, through the cache or by full recomputation."""

  def __init__(self, fns, params, cross_kvs, b: int, w: int, text_len: int, full: bool,
               visual_BxNxD):
    self._fns, self._params, self._cross = fns, params, cross_kvs
    self._b, self._w, self._len, self._full = b, w, text_len, full
    self._visual = visual_BxNxD

  def start(self, tokens_BxWxS):
    """Decodes the start tokens; returns (cache, logp_BxWxV of the next token)."""
    if self._full:
      return None, self.recompute(tokens_BxWxS, tokens_BxWxS.shape[-1] - 1)
    s = tokens_BxWxS.shape[-1]
    logits, kvs = self._fns["extend"](self._params, tokens_BxWxS, jnp.arange(s), None,
                                      self._cross)
    cache = tuple(tuple(jnp.zeros(k.shape[:3] + (self._len,) + k.shape[4:], k.dtype)
                        .at[:, :, :, :s].set(k) for k in kv) for kv in kvs)
    return cache, jax.nn.log_softmax(logits[:, :, -1], axis=-1)

  def step(self, cache, tokens_BxWxT, position):
    """Decodes the token at `position` (cache: written before it); returns (cache, logp)."""
    if self._full:
      return None, self.recompute(tokens_BxWxT, position)
    token_BxWx1 = jax.lax.dynamic_slice_in_dim(tokens_BxWxT, position, 1, axis=2)
    visible_T = jnp.arange(self._len) < position
    contexts = tuple(((k, v, visible_T),) for k, v in cache)
    logits, kvs = self._fns["extend"](self._params, token_BxWx1, position[None], contexts,
                                      self._cross)
    cache = tuple(tuple(jax.lax.dynamic_update_slice_in_dim(c, n, position, axis=3)
                        for c, n in zip(old, new)) for old, new in zip(cache, kvs))
    return cache, jax.nn.log_softmax(logits[:, :, 0], axis=-1)

  def recompute(self, tokens_BxWxT, position):
    """Full recomputation: the decoder over every position (fixed length; causal, so the
    tokens not yet generated do not matter), logits taken at `position`."""
    tokens_BxWxT = tokens_BxWxT[:, :, :self._len]
    t = tokens_BxWxT.shape[-1]
    tokens = jnp.zeros((self._b, self._w, self._len), jnp.int32).at[:, :, :t].set(tokens_BxWxT)
    visual = None
    if self._visual is not None:
      visual = jnp.repeat(self._visual, self._w, axis=0)
    logits = self._fns["decode"](self._params, tokens.reshape(self._b * self._w, self._len),
                                 visual)
    logits = logits.reshape(self._b, self._w, self._len, -1)
    return jax.nn.log_softmax(jnp.take(logits, position, axis=2), axis=-1)


def _reorder(tree, parent_BxW):
  """Each beam's state taken from its parent beam (axis 1)."""
  def take(x):
    index = parent_BxW.reshape(parent_BxW.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)
  return jax.tree.map(take, tree)


def generate(fns: dict, params, visual_BxNxD, config: DecodeConfig, text_len: int,
             start_tokens=(BOS_ID,)):
  """Generated tokens_BxT (start tokens first, PAD after EOS; T = `text_len`), the best beam
  per image, with its summed log P(t|I) and log P(t) (the latter 0 unless `ig_alpha`)
  (logp_img_B, logp_txt_B) and its ranking score_B."""
  b, w, s = visual_BxNxD.shape[0], config.beam_size, len(start_tokens)
  if s + config.max_tokens > text_len:
    raise ValueError(f"{s} start tokens + max_tokens={config.max_tokens} exceed the model's "
                     f"text length {text_len}")
  positions = text_len - 1  # Decoder input positions.
  streams = [_Model(fns, params, None if config.full_recompute else fns["cross_kv"](
      params, visual_BxNxD), b, w, positions, config.full_recompute, visual_BxNxD)]
  if config.ig_alpha:
    streams.append(_Model(fns, params, None, b, w, positions, config.full_recompute, None))
  tokens_BxWxT = jnp.zeros((b, w, text_len), jnp.int32).at[:, :, :s].set(
      jnp.asarray(start_tokens, jnp.int32))
  caches, logps = zip(*(m.start(tokens_BxWxT[:, :, :s]) for m in streams))
  vocab = logps[0].shape[-1]
  allowed_V = _allowed_tokens(vocab)
  # Only beam 0 is alive at first, so that the first step picks W different tokens.
  sums_BxWx2 = jnp.zeros((b, w, 2)).at[:, 1:, :].set(NEG_INF)
  ended_BxW = jnp.zeros((b, w), bool)
  length_BxW = jnp.zeros((b, w), jnp.int32)

  def ranking(sums, length):
    return (sums[..., 0] - config.ig_alpha * sums[..., 1]) / _penalty(length,
                                                                         config.length_penalty)

  def body(i, state):
    tokens, sums, ended, length, caches, logps = state
    logp_img = logps[0]
    logp_txt = logps[1] if config.ig_alpha else jnp.zeros_like(logp_img)
    # Candidates: alive beams extend by an allowed token; ended beams carry on with PAD.
    step_BxWxVx2 = jnp.stack([logp_img, logp_txt], -1)
    cand_sums = sums[:, :, None] + jnp.where(ended[..., None, None], 0.0, step_BxWxVx2)
    cand_len = jnp.broadcast_to(length[:, :, None] + jnp.where(ended, 0, 1)[..., None],
                                cand_sums.shape[:-1])
    valid = jnp.where(ended[..., None], jnp.arange(vocab) == PAD_ID, allowed_V)
    scores = jnp.where(valid & (sums[:, :, None, 0] > NEG_INF / 2),
                       ranking(cand_sums, cand_len), NEG_INF)
    _, best_BxW = jax.lax.top_k(scores.reshape(b, -1), w)
    parent, token = best_BxW // vocab, best_BxW % vocab
    if w > 1:  # Greedy has nothing to reorder (and copying the cache costs as much as a step).
      tokens, ended, caches = _reorder((tokens, ended, caches), parent)
    sums = jnp.take_along_axis(cand_sums.reshape(b, -1, 2), best_BxW[..., None], axis=1)
    length = jnp.take_along_axis(cand_len.reshape(b, -1), best_BxW, axis=1)
    token = jnp.where(ended, PAD_ID, token)
    position = s + i
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[..., None], position, axis=2)
    ended = ended | (token == EOS_ID)
    # Decode the new token for the next step (after the last step, wasted but harmless).
    new = [m.step(c, tokens, jnp.minimum(position, positions - 1))
           for m, c in zip(streams, caches)]
    caches, logps = tuple(c for c, _ in new), tuple(lp for _, lp in new)
    return tokens, sums, ended, length, caches, logps

  state = (tokens_BxWxT, sums_BxWx2, ended_BxW, length_BxW, tuple(caches), tuple(logps))
  tokens, sums, _, length, _, _ = jax.lax.fori_loop(0, config.max_tokens, body, state)
  final = ranking(sums, length)
  best_B = jnp.argmax(final, axis=1)
  pick = functools.partial(lambda x: jnp.take_along_axis(
      x, best_B.reshape((b, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0])
  best_sums = pick(sums)
  return pick(tokens), (best_sums[:, 0], best_sums[:, 1]), pick(final)
