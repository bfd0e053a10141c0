"""Zero-shot scoring with information gain: s(t, I) = log P(t|I) - alpha * log P(t).

Shape letters: B images, N visual tokens, D width, P prompts (= C classes x K templates),
L prompt length, A alphas.

`log P(t)` comes from the same decoder without visual tokens. It does not depend on the image,
so `text_only_logprobs` runs once per prompt and the result is reused for every image batch.

Templates are combined per class by averaging the per-template scores:
    s(c, I) = mean_k [log P(t_ck|I) - alpha * log P(t_ck)]
            = mean_k log P(t_ck|I) - alpha * mean_k log P(t_ck),
i.e. the log of the geometric mean over templates of the likelihood ratio.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from ig_captioner import objective


def _chunked(prompts_PxT: jax.Array, chunk: int) -> tuple[jax.Array, int]:
  """Pads P up to a multiple of `chunk` (with copies of prompt 0) and splits it into
  (P/chunk, chunk, T)."""
  num_prompts = prompts_PxT.shape[0]
  pad = -num_prompts % chunk
  if pad:
    prompts_PxT = jnp.concatenate([prompts_PxT, jnp.repeat(prompts_PxT[:1], pad, axis=0)])
  return prompts_PxT.reshape(-1, chunk, prompts_PxT.shape[-1]), num_prompts


def text_only_logprobs(model: Any, params: Any, prompts_PxT: jax.Array, chunk: int) -> jax.Array:
  """log P(t) for every prompt, from the decoder with cross-attention skipped. Returns (P,)."""
  chunks_GxCxT, num_prompts = _chunked(prompts_PxT, chunk)

  def score(tokens_CxT):
    inputs, targets = objective.inputs_and_targets(tokens_CxT)
    logits = model.apply({"params": params}, inputs, None, method="decode")
    return objective.sequence_logprob(logits, targets)

  return jax.lax.map(score, chunks_GxCxT).reshape(-1)[:num_prompts]


def image_logprobs(model: Any, params: Any, visual_BxNxD: jax.Array, prompts_PxT: jax.Array,
                   chunk: int) -> jax.Array:
  """log P(t|I) for every (image, prompt) pair. Returns (B, P).

  Each decoder call scores B x chunk pairs: visual tokens are repeated per prompt in the chunk,
  keeping the (sharded) image axis leading.
  """
  chunks_GxCxT, num_prompts = _chunked(prompts_PxT, chunk)
  b, n, d = visual_BxNxD.shape

  def score(tokens_CxT):
    c, t = tokens_CxT.shape
    inputs, targets = objective.inputs_and_targets(
        jnp.broadcast_to(tokens_CxT[None], (b, c, t)).reshape(b * c, t))
    visual = jnp.broadcast_to(visual_BxNxD[:, None], (b, c, n, d)).reshape(b * c, n, d)
    logits = model.apply({"params": params}, inputs, visual, method="decode")
    return objective.sequence_logprob(logits, targets).reshape(b, c)

  logp_GxBxC = jax.lax.map(score, chunks_GxCxT)
  return jnp.moveaxis(logp_GxBxC, 0, 1).reshape(b, -1)[:, :num_prompts]


def class_scores(logp_img_BxP: jax.Array, logp_txt_P: jax.Array, num_classes: int,
                 alphas: Sequence[float]) -> jax.Array:
  """IG scores per alpha and class, templates averaged. Prompts are ordered class-major (c, k).

  Returns (A, B, C).
  """
  b = logp_img_BxP.shape[0]
  img_BxC = logp_img_BxP.reshape(b, num_classes, -1).mean(-1)
  txt_C = logp_txt_P.reshape(num_classes, -1).mean(-1)
  alphas_A = jnp.asarray(alphas, jnp.float32)
  return img_BxC[None] - alphas_A[:, None, None] * txt_C[None, None]
