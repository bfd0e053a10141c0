"""The loss terms the objectives combine: captioning with the IG term (`captioning`, `cappa`,
`contrastive_captioning`) and contrastive similarities (`softmax_contrastive`,
`sigmoid_contrastive`, `contrastive_captioning`), with the checks of their config fields.

Captioning: CE is the mean negative log-likelihood per scored target token, the batch's
`target_mask` (the pipeline leaves out PAD and prefix tokens; layout: `scoring.likelihood`).

    loss = CE(t | I) + text_only_weight * CE(t' | no image)

Contrastive: negatives come from the whole global batch. Inside `jit` the embeddings are global
arrays, so `z_img @ z_txt.T` compares every image with every text whatever the sharding (XLA
gathers the text embeddings); the similarity matrix is kept split by rows (images) over the
batch axes.

Shape letters: B batch, L text length (decoder positions), V vocabulary, N visual tokens,
D width, E joint embedding width.
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import tree_paths
from ig_captioner.scoring import likelihood

TEXT_ONLY_BATCHES = ("paired", "separate")


# --------------------------------------------------------------------------- Captioning ---
def validate_caption_fields(objective_config: ml_collections.ConfigDict) -> None:
  """The IG term's fields (`captioning`'s docstring), shared by every captioning objective."""
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
    h_BxLxD = predict_fns["decode_features"](params, inputs_BxL, visual_BxNxD, parallel_B)
    return likelihood.chunked_token_logprobs(
        lambda h: predict_fns["decode_logits"](params, h), h_BxLxD, targets_BxL, logits_chunk)
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
  `text_only_trainable`: see `restrict_gradient`. `logits_chunk`: positions per chunk of the
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


# -------------------------------------------------------------------------- Contrastive ---
def validate_max_temperature(objective_config: ml_collections.ConfigDict) -> None:
  limit = objective_config.get("max_temperature")
  if not isinstance(limit, (int, float)) or limit <= 0:
    raise errors.ConfigError(f"config.objective.max_temperature={limit!r} is invalid: it must be "
                             "positive (CLIP clips exp(t) at 100)")


def cosine_similarities(z_img_BxE, z_txt_BxE):
  """sims_BxB of unit embeddings, rows = images, columns = texts, split by rows."""
  sims_BxB = jnp.einsum("ie,te->it", z_img_BxE, z_txt_BxE, preferred_element_type=jnp.float32)
  return nn.with_logical_constraint(sims_BxB, (sharding.ACTIVATION_BATCH, None))


def similarities(predict_fns: dict, params, batch) -> tuple:
  """(cosine similarities sims_BxB with rows = images and columns = texts, scale, bias)."""
  z_img_BxE = predict_fns["embed_images"](params, batch["image"])
  z_txt_BxE = predict_fns["embed_texts"](params, batch["tokens"])
  scale, bias = predict_fns["logit_scale_and_bias"](params)
  return cosine_similarities(z_img_BxE, z_txt_BxE), scale, bias


def softmax_contrastive_loss(sims_BxB, scale):
  """CLIP's loss (`softmax_contrastive`), from cosine similarities (rows images, columns
  texts): (loss, logits_BxB)."""
  logits_BxB = scale * sims_BxB
  positives_B = jnp.diagonal(logits_BxB)
  image_to_text = jnp.mean(jax.nn.logsumexp(logits_BxB, axis=1) - positives_B)
  text_to_image = jnp.mean(jax.nn.logsumexp(logits_BxB, axis=0) - positives_B)
  return (image_to_text + text_to_image) / 2, logits_BxB


def batch_accuracy(logits_BxB) -> jnp.ndarray:
  """Fraction of images whose own text scores highest in the batch (a training-time signal)."""
  return jnp.mean(jnp.argmax(logits_BxB, axis=1) == jnp.arange(logits_BxB.shape[0]))
