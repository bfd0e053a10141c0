"""Captioning with information gain: the shared decoder runs twice on each batch,

    loss = CE(t | I) + text_only_weight * CE(t' | no image)

where CE is the mean negative log-likelihood per scored target token: the batch's
`target_mask` (the pipeline leaves out PAD and prefix tokens; layout: `models.likelihood`).
`text_only_weight` (lambda) 0 is the standard captioner, and then the text-only pass is not
traced at all; 1 is the IG captioner of arXiv:2311.17072 (t' = t, every example). Variants of
the text-only term, each off by default (the defaults are the paper's objective):

- `text_only_fraction` f < 1: the text-only pass sees the batch's first ceil(f * B) texts only
  (a random subset: batches are shuffled), its CE averaged over their tokens.
- `text_only_batch='separate'`: t' is a batch of its own, texts without images (as web text
  is), read from `config.data.text_only_split` (batch keys `text_only_tokens`,
  `text_only_target_mask`), instead of the captions of the image batch ('paired').
- `text_only_warmup_steps` > 0: lambda ramps linearly from 0 at step 0 to its value then.
- `text_only_trainable` (a regex): the text-only loss changes only the params whose path
  (`tree_paths.path_name`: 'decoder/block0/mlp/...') it matches; a stop-gradient keeps it from
  every other param. It only ever reaches the decoder's token/position embeddings,
  self-attention, MLP, layer-norm and head params (the text-only pass skips the image tower and
  cross-attention), so e.g. 'decoder/(ln_final|head)' leaves the shared representation to the
  captioning loss. None: every param.

Memory: `logits_chunk` C > 0 computes the decoder's head and the cross-entropy C positions at a
time (recomputed in the backward pass), so the float32 logits of the whole batch, B x L x V,
never exist at once; the loss is the same. 0 (default): in one piece.

config.objective: name='captioning', text_only_weight, and the optional fields above.
"""

import math
import re

import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import tree_paths
from ig_captioner.models import likelihood

NEEDS = models.CAPTION_FNS
TEXT_ONLY_BATCHES = ("paired", "separate")


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
  source = objective_config.get("text_only_batch", "paired")
  if source not in TEXT_ONLY_BATCHES:
    raise errors.ConfigError(
        f"config.objective.text_only_batch={source!r} is invalid: one of "
        f"{list(TEXT_ONLY_BATCHES)} ('separate' reads config.data.text_only_split)")
  chunk = objective_config.get("logits_chunk", 0)
  if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
    raise errors.ConfigError(
        f"config.objective.logits_chunk={chunk!r} is invalid: it must be an int >= 0 (decoder "
        "positions per chunk of the cross-entropy; 0 = the whole sequence at once)")
  pattern = objective_config.get("text_only_trainable")
  if pattern is not None:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise errors.ConfigError(
          f"config.objective.text_only_trainable={pattern!r} is not a regular expression ({e}); "
          "it selects the param paths the text-only loss may change, e.g. "
          "'decoder/(ln_final|head)', or None for all") from e


def restrict_gradient(params, pattern: str | None):
  """`params`, with a stop-gradient on every param whose path `pattern` does not match;
  ConfigError if it matches none (a typo would silently turn the text-only loss off)."""
  if pattern is None:
    return params
  regex = re.compile(pattern)
  names = tree_paths.leaf_names(params)
  if not any(regex.search(name) for name in names):
    raise errors.ConfigError(
        f"config.objective.text_only_trainable={pattern!r} matches no param; the params: {names}")
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x if regex.search(tree_paths.path_name(path)) else jax.lax.stop_gradient(x),
      params)


def mean_nll(logp_BxL, mask_BxL):
  """Mean negative log-likelihood per scored target token, from token log-probabilities."""
  mask_BxL = mask_BxL.astype(jnp.float32)
  return -jnp.sum(logp_BxL * mask_BxL) / jnp.maximum(mask_BxL.sum(), 1.0)


def mean_ce(logits_BxLxV, targets_BxL, mask_BxL):
  """Mean negative log-likelihood per scored target token."""
  return mean_nll(likelihood.token_logprobs(logits_BxLxV, targets_BxL), mask_BxL)


def target_logprobs(predict_fns: dict, params, inputs_BxL, targets_BxL, visual_BxNxD,
                    logits_chunk: int = 0, parallel_B=None):
  """logp_BxL of the targets from the decoder (visual None: text only); `logits_chunk` > 0
  never holds the whole batch's logits (`models.CHUNKED_FNS`)."""
  if logits_chunk:
    return predict_fns["decode_logprobs"](params, inputs_BxL, targets_BxL, visual_BxNxD,
                                          parallel_B, logits_chunk)
  if parallel_B is not None:
    logits_BxLxV = predict_fns["decode_parallel"](params, inputs_BxL, visual_BxNxD, parallel_B)
  else:
    logits_BxLxV = predict_fns["decode"](params, inputs_BxL, visual_BxNxD)
  return likelihood.token_logprobs(logits_BxLxV, targets_BxL)


def check_chunking(logits_chunk: int, predict_fns: dict) -> None:
  """ConfigError if `logits_chunk` is set but the model cannot compute its logits in chunks."""
  if logits_chunk and not models.supplies(predict_fns, models.CHUNKED_FNS):
    raise errors.ConfigError(
        f"config.objective.logits_chunk={logits_chunk} needs a model supplying "
        f"{models.CHUNKED_FNS} (the captioner family) and this one does not: set "
        "config.objective.logits_chunk=0")


def caption_loss(predict_fns: dict, params, images_BxHxWxC, tokens_BxT, mask_BxL,
                 text_only_weight: float, logits_BxLxV=None, text_only_fraction: float = 1.0,
                 text_only_ramp=1.0, text_only_tokens_BxT=None, text_only_mask_BxL=None,
                 text_only_trainable: str | None = None, logits_chunk: int = 0,
                 logprobs_BxL=None):
  """(loss, metrics): `loss`, `ce_with_image` and, when the text-only pass runs,
  `ce_text_only` and, if it scores the same texts, `info_gain_per_token`
  (mean log P(t_i|I,t_<i) - log P(t_i|t_<i), nats).

  `mask_BxL` marks the scored targets `tokens[:, 1:]`. `text_only_weight` is a Python float, so
  that 0 removes the text-only pass at trace time. `logits_BxLxV`: the with-image logits if the
  caller has them already (CoCa's joint forward). `text_only_fraction`: the text-only pass sees
  the first ceil(fraction * B) texts (static, so it is a smaller pass, not a masked one).
  `text_only_ramp` (may be traced) multiplies lambda: a warm-up's position.
  `text_only_tokens_BxT`/`text_only_mask_BxL`: a separate text-only batch (default: `tokens`).
  `text_only_trainable`: see the module docstring. `logits_chunk`: positions per chunk of the
  logits (0: all at once). `logprobs_BxL`: the with-image target log-probabilities if the
  caller has them already (CapPa, chunked), instead of `logits_BxLxV`.
  """
  inputs_BxL, targets_BxL = likelihood.inputs_and_targets(tokens_BxT)
  if logprobs_BxL is None and logits_BxLxV is None:
    visual_BxNxD = predict_fns["encode_images"](params, images_BxHxWxC)
    logprobs_BxL = target_logprobs(predict_fns, params, inputs_BxL, targets_BxL, visual_BxNxD,
                                   logits_chunk)
  elif logprobs_BxL is None:
    logprobs_BxL = likelihood.token_logprobs(logits_BxLxV, targets_BxL)
  ce_with_image = mean_nll(logprobs_BxL, mask_BxL)
  metrics = {"ce_with_image": ce_with_image}
  loss = ce_with_image

  if text_only_weight:
    paired = text_only_tokens_BxT is None
    if paired:
      text_inputs, text_targets, text_mask = inputs_BxL, targets_BxL, mask_BxL
    else:
      text_inputs, text_targets = likelihood.inputs_and_targets(text_only_tokens_BxT)
      text_mask = text_only_mask_BxL
    k = min(len(text_inputs), math.ceil(text_only_fraction * len(text_inputs)))
    text_params = restrict_gradient(params, text_only_trainable)
    ce_text_only = mean_nll(target_logprobs(predict_fns, text_params, text_inputs[:k],
                                            text_targets[:k], None, logits_chunk),
                            text_mask[:k])
    loss = loss + text_only_weight * text_only_ramp * ce_text_only
    metrics["ce_text_only"] = ce_text_only
    if paired and k == len(tokens_BxT):  # Otherwise the two CEs are of different texts.
      metrics["info_gain_per_token"] = ce_text_only - ce_with_image
  metrics["loss"] = loss
  return loss, metrics


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  weight = float(objective_config.text_only_weight)
  fraction = float(objective_config.get("text_only_fraction", 1.0))
  warmup = int(objective_config.get("text_only_warmup_steps", 0))
  separate = objective_config.get("text_only_batch", "paired") == "separate"
  trainable = objective_config.get("text_only_trainable")
  chunk = int(objective_config.get("logits_chunk", 0))
  check_chunking(chunk, predict_fns)

  def loss_fn(params, batch, rng, step=None):
    del rng  # Deterministic.
    ramp = 1.0
    if warmup:
      if step is None:
        raise ValueError("text_only_warmup_steps needs the train step: loss_fn(..., step)")
      ramp = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)
    text_only = {}
    if separate and weight:
      if "text_only_tokens" not in batch:
        raise errors.ConfigError(
            "config.objective.text_only_batch='separate' needs a text-only batch: set "
            "config.data.text_only_split (e.g. 'train': texts read apart from the images)")
      text_only = dict(text_only_tokens_BxT=batch["text_only_tokens"],
                       text_only_mask_BxL=batch["text_only_target_mask"])
    loss, metrics = caption_loss(predict_fns, params, batch["image"], batch["tokens"],
                                 batch["target_mask"], weight, text_only_fraction=fraction,
                                 text_only_ramp=ramp, text_only_trainable=trainable,
                                 logits_chunk=chunk, **text_only)
    if warmup and weight:
      metrics["text_only_weight"] = weight * ramp
    return loss, metrics
  return loss_fn
