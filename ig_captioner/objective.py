"""Sequence log-probabilities and the IG training objective.

Token layout: a text is stored as `[BOS, t_1, ..., t_n, EOS, PAD, ...]` (length T). The decoder
reads `tokens[:, :-1]` and predicts `tokens[:, 1:]`. So log P(t) sums the log-probabilities of
t_1..t_n *and EOS* (the model must also say where the text ends), never of BOS (it is given) and
never of PAD (masked out).

The objective runs the shared decoder twice on each batch:

    loss = CE(t | I) + text_only_weight * CE(t | no image)

where CE is the mean negative log-likelihood per (non-pad) target token. With
`text_only_weight == 0` (the standard captioner) the text-only pass is not traced at all.
"""

from typing import Any

import jax
import jax.numpy as jnp

PAD_ID = 0


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


def caption_loss(model: Any, params: Any, images_BxHxWxC: jax.Array,
                 tokens_BxT: jax.Array, text_only_weight: float):
  """The IG objective and its parts.

  Args:
    model: a `Captioner` (anything with `apply(..., method="encode" | "decode")`).
    params: model params.
    images_BxHxWxC: normalized images.
    tokens_BxT: texts as described in the module docstring.
    text_only_weight: lambda; a Python float, so that 0 removes the text-only pass at trace time.

  Returns:
    (loss, metrics) where metrics holds `loss`, `ce_with_image` and, when the text-only pass
    runs, `ce_text_only` and `info_gain_per_token` (mean log P(t_i|I,t_<i) - log P(t_i|t_<i), nats).
  """
  inputs_BxL, targets_BxL = inputs_and_targets(tokens_BxT)
  mask_BxL = (targets_BxL != PAD_ID).astype(jnp.float32)
  num_tokens = jnp.maximum(mask_BxL.sum(), 1.0)

  visual_BxNxD = model.apply({"params": params}, images_BxHxWxC, method="encode")
  logits_BxLxV = model.apply({"params": params}, inputs_BxL, visual_BxNxD, method="decode")
  logp_img_BxL = token_logprobs(logits_BxLxV, targets_BxL)
  ce_with_image = -jnp.sum(logp_img_BxL * mask_BxL) / num_tokens
  metrics = {"ce_with_image": ce_with_image}
  loss = ce_with_image

  if text_only_weight:
    logits_BxLxV = model.apply({"params": params}, inputs_BxL, None, method="decode")
    logp_txt_BxL = token_logprobs(logits_BxLxV, targets_BxL)
    ce_text_only = -jnp.sum(logp_txt_BxL * mask_BxL) / num_tokens
    loss = loss + text_only_weight * ce_text_only
    metrics["ce_text_only"] = ce_text_only
    metrics["info_gain_per_token"] = ce_text_only - ce_with_image
  metrics["loss"] = loss
  return loss, metrics
