"""Captioning with information gain: the shared decoder runs twice on each batch,

    loss = CE(t | I) + text_only_weight * CE(t | no image)

where CE is the mean negative log-likelihood per scored target token: the batch's
`target_mask` (the pipeline leaves out PAD and prefix tokens; layout: `models.likelihood`).
`text_only_weight` (lambda) 0 is the standard captioner, and then the text-only pass is not
traced at all; 1 is the IG captioner of arXiv:2311.17072. `text_only_fraction` (default 1, the
paper's objective) runs the text-only pass on the batch's first ceil(fraction * B) examples only
(a random subset: batches are shuffled), averaging its CE over their tokens.
`text_only_warmup_steps` > 0 ramps lambda linearly from 0 at step 0 to its value at that step
(default 0: the full lambda from the start, the paper's).

config.objective: name='captioning', text_only_weight, optional text_only_fraction and
text_only_warmup_steps.
"""

import math

import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.models import likelihood

NEEDS = models.CAPTION_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  weight = objective_config.get("text_only_weight")
  if not isinstance(weight, (int, float)) or weight < 0:
    raise errors.ConfigError(
        f"config.objective.text_only_weight={weight!r} is invalid: lambda must be >= 0 "
        "(0 = standard captioner, 1 = IG captioner)")
  fraction = objective_config.get("text_only_fraction", 1.0)
  if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
    raise errors.ConfigError(
        f"config.objective.text_only_fraction={fraction!r} is invalid: the share of each batch "
        "that the text-only pass sees must be in (0, 1] (1 = every example, the paper's loss)")
  warmup = objective_config.get("text_only_warmup_steps", 0)
  if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
    raise errors.ConfigError(
        f"config.objective.text_only_warmup_steps={warmup!r} is invalid: it must be an int >= 0 "
        "(0 = the full lambda from step 0)")


def mean_ce(logits_BxLxV, targets_BxL, mask_BxL):
  """Mean negative log-likelihood per scored target token."""
  mask_BxL = mask_BxL.astype(jnp.float32)
  logp_BxL = likelihood.token_logprobs(logits_BxLxV, targets_BxL)
  return -jnp.sum(logp_BxL * mask_BxL) / jnp.maximum(mask_BxL.sum(), 1.0)


def caption_loss(predict_fns: dict, params, images_BxHxWxC, tokens_BxT, mask_BxL,
                 text_only_weight: float, logits_BxLxV=None, text_only_fraction: float = 1.0,
                 text_only_ramp=1.0):
  """(loss, metrics): `loss`, `ce_with_image` and, when the text-only pass runs,
  `ce_text_only` and `info_gain_per_token` (mean log P(t_i|I,t_<i) - log P(t_i|t_<i), nats).

  `mask_BxL` marks the scored targets `tokens[:, 1:]`. `text_only_weight` is a Python float, so
  that 0 removes the text-only pass at trace time. `logits_BxLxV`: the with-image logits if the
  caller has them already (CoCa's joint forward). `text_only_fraction`: the text-only pass sees
  the first ceil(fraction * B) examples (static, so it is a smaller pass, not a masked one).
  `text_only_ramp` (may be traced) multiplies lambda: a warm-up's position.
  """
  inputs_BxL, targets_BxL = likelihood.inputs_and_targets(tokens_BxT)
  if logits_BxLxV is None:
    visual_BxNxD = predict_fns["encode_images"](params, images_BxHxWxC)
    logits_BxLxV = predict_fns["decode"](params, inputs_BxL, visual_BxNxD)
  ce_with_image = mean_ce(logits_BxLxV, targets_BxL, mask_BxL)
  metrics = {"ce_with_image": ce_with_image}
  loss = ce_with_image

  if text_only_weight:
    k = min(len(tokens_BxT), math.ceil(text_only_fraction * len(tokens_BxT)))
    ce_text_only = mean_ce(predict_fns["decode"](params, inputs_BxL[:k], None), targets_BxL[:k],
                           mask_BxL[:k])
    loss = loss + text_only_weight * text_only_ramp * ce_text_only
    metrics["ce_text_only"] = ce_text_only
    if k == len(tokens_BxT):  # Otherwise the two CEs are of different examples.
      metrics["info_gain_per_token"] = ce_text_only - ce_with_image
  metrics["loss"] = loss
  return loss, metrics


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  weight = float(objective_config.text_only_weight)
  fraction = float(objective_config.get("text_only_fraction", 1.0))
  warmup = int(objective_config.get("text_only_warmup_steps", 0))

  def loss_fn(params, batch, rng, step=None):
    del rng  # Deterministic.
    ramp = 1.0
    if warmup:
      if step is None:
        raise ValueError("text_only_warmup_steps needs the train step: loss_fn(..., step)")
      ramp = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)
    loss, metrics = caption_loss(predict_fns, params, batch["image"], batch["tokens"],
                                 batch["target_mask"], weight, text_only_fraction=fraction,
                                 text_only_ramp=ramp)
    if warmup and weight:
      metrics["text_only_weight"] = weight * ramp
    return loss, metrics
  return loss_fn
