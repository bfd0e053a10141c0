"""CLIP's objective (Radford et al., 2021): softmax cross-entropy over the batch in both
directions, with a learned temperature whose exp is clipped at `max_temperature` (CLIP: 100).

    logits_ij = min(exp(t), max_temperature) * z_img_i . z_txt_j
    loss = (mean_i CE(logits_i., i) + mean_j CE(logits_.j, j)) / 2

config.objective: name='softmax_contrastive', max_temperature.
"""

import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.objectives import _contrastive

NEEDS = models.EMBED_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  limit = objective_config.get("max_temperature")
  if not isinstance(limit, (int, float)) or limit <= 0:
    raise errors.ConfigError(f"config.objective.max_temperature={limit!r} is invalid: it must be "
                             "positive (CLIP clips exp(t) at 100)")


def softmax_contrastive_loss(sims_BxB, scale):
  """The loss above, from cosine similarities (rows images, columns texts)."""
  logits_BxB = scale * sims_BxB
  positives_B = jnp.diagonal(logits_BxB)
  image_to_text = jnp.mean(jax.nn.logsumexp(logits_BxB, axis=1) - positives_B)
  text_to_image = jnp.mean(jax.nn.logsumexp(logits_BxB, axis=0) - positives_B)
  return (image_to_text + text_to_image) / 2, logits_BxB


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  limit = float(objective_config.max_temperature)

  def loss_fn(params, batch, rng, step=None):
    del rng, step  # Deterministic, no schedule.
    sims_BxB, scale, _ = _contrastive.similarities(predict_fns, params, batch)
    scale = jnp.minimum(scale, limit)
    loss, logits_BxB = softmax_contrastive_loss(sims_BxB, scale)
    return loss, {"loss": loss, "temperature": scale,
                  "batch_accuracy": _contrastive.batch_accuracy(logits_BxB)}
  return loss_fn
