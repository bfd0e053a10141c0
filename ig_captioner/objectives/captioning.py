"""Captioning with information gain: the shared decoder runs twice on each batch,

    loss = CE(t | I) + text_only_weight * CE(t' | no image)

where CE is the mean negative log-likelihood per scored target token: the batch's
`target_mask` (the pipeline leaves out PAD and prefix tokens; the loss terms: `base.py`).
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

import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.objectives import base

NEEDS = models.CAPTION_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  base.validate_caption_fields(objective_config)


def accumulation_error(objective_config: ml_collections.ConfigDict) -> str | None:
  """Both terms are means over the same scored tokens unless a variant changes the text-only
  term's texts."""
  if float(objective_config.text_only_weight) == 0:
    return None
  if float(objective_config.get("text_only_fraction", 1.0)) < 1:
    return "config.objective.text_only_fraction < 1 takes the first texts of the whole batch"
  if objective_config.get("text_only_batch", "paired") == "separate":
    return "config.objective.text_only_batch='separate' averages over another batch's tokens"
  return None


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  weight = float(objective_config.text_only_weight)
  fraction = float(objective_config.get("text_only_fraction", 1.0))
  warmup = int(objective_config.get("text_only_warmup_steps", 0))
  separate = objective_config.get("text_only_batch", "paired") == "separate"
  trainable = objective_config.get("text_only_trainable")
  chunk = int(objective_config.get("logits_chunk", 0))
  base.check_chunking(chunk, predict_fns)

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
    loss, metrics = base.caption_loss(predict_fns, params, batch["image"], batch["tokens"],
                                      batch["target_mask"], weight, text_only_fraction=fraction,
                                      text_only_ramp=ramp, text_only_trainable=trainable,
                                      logits_chunk=chunk, **text_only)
    if warmup and weight:
      metrics["text_only_weight"] = weight * ramp
    return loss, metrics
  return loss_fn
