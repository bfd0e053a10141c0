"""CLIP's objective (Radford et al., 2021): softmax cross-entropy over the batch in both
directions, with a learned temperature whose exp is clipped at `max_temperature` (CLIP: 100).

    logits_ij = min(exp(t), max_temperature) * z_img_i . z_txt_j
    loss = (mean_i CE(logits_i., i) + mean_j CE(logits_.j, j)) / 2

config.objective: name='softmax_contrastive', max_temperature.
"""

import jax.numpy as jnp
import ml_collections

from ig_captioner import models
from ig_captioner.objectives import base

NEEDS = models.EMBED_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  base.validate_max_temperature(objective_config)


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  limit = float(objective_config.max_temperature)

  def loss_fn(params, batch, rng, step=None):
    del rng, step  # Deterministic, no schedule.
    sims_BxB, scale, _ = base.similarities(predict_fns, params, batch)
    scale = jnp.minimum(scale, limit)
    loss, logits_BxB = base.softmax_contrastive_loss(sims_BxB, scale)
    return loss, {"loss": loss, "temperature": scale,
                  "batch_accuracy": base.batch_accuracy(logits_BxB)}
  return loss_fn
