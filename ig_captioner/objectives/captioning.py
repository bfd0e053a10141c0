"""Captioning with information gain: the shared decoder runs twice on each batch,

    loss = CE(t | I) + text_only_weight * CE(t | no image)

where CE is the mean negative log-likelihood per (non-pad) target token (token layout:
`models.likelihood`). `text_only_weight` (lambda) 0 is the standard captioner, and then the
text-only pass is not traced at all; 1 is the IG captioner of arXiv:2311.17072.

config.objective: name='captioning', text_only_weight.
"""

import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.data.tokenizer import PAD_ID
from ig_captioner.models import likelihood

NEEDS = models.CAPTION_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  weight = objective_config.get("text_only_weight")
  if not isinstance(weight, (int, float)) or weight < 0:
    raise errors.ConfigError(
        f"config.objective.text_only_weight={weight!r} is invalid: lambda must be >= 0 "
        "(0 = standard captioner, 1 = IG captioner)")


def caption_loss(predict_fns: dict, params, images_BxHxWxC, tokens_BxT,
                 text_only_weight: float):
  """(loss, metrics): `loss`, `ce_with_image` and, when the text-only pass runs,
  `ce_text_only` and `info_gain_per_token` (mean log P(t_i|I,t_<i) - log P(t_i|t_<i), nats).
  `text_only_weight` is a Python float, so that 0 removes the text-only pass at trace time."""
  inputs_BxL, targets_BxL = likelihood.inputs_and_targets(tokens_BxT)
  mask_BxL = (targets_BxL != PAD_ID).astype(jnp.float32)
  num_tokens = jnp.maximum(mask_BxL.sum(), 1.0)

  visual_BxNxD = predict_fns["encode_images"](params, images_BxHxWxC)
  logits_BxLxV = predict_fns["decode"](params, inputs_BxL, visual_BxNxD)
  logp_img_BxL = likelihood.token_logprobs(logits_BxLxV, targets_BxL)
  ce_with_image = -jnp.sum(logp_img_BxL * mask_BxL) / num_tokens
  metrics = {"ce_with_image": ce_with_image}
  loss = ce_with_image

  if text_only_weight:
    logits_BxLxV = predict_fns["decode"](params, inputs_BxL, None)
    logp_txt_BxL = likelihood.token_logprobs(logits_BxLxV, targets_BxL)
    ce_text_only = -jnp.sum(logp_txt_BxL * mask_BxL) / num_tokens
    loss = loss + text_only_weight * ce_text_only
    metrics["ce_text_only"] = ce_text_only
    metrics["info_gain_per_token"] = ce_text_only - ce_with_image
  metrics["loss"] = loss
  return loss, metrics


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  weight = float(objective_config.text_only_weight)
  return lambda params, batch: caption_loss(predict_fns, params, batch["image"], batch["tokens"],
                                            weight)
