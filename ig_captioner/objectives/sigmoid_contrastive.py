"""SigLIP's objective (Zhai et al., 2023): every (image, text) pair of the batch is a binary
classification, positive on the diagonal, with a learned temperature and bias (the model's
`temperature_init` 10 and `bias_init` -10, as the paper initialises them).

    logits_ij = exp(t) * z_img_i . z_txt_j + b,   y_ij = 1 if i == j else -1
    loss = -(1/B) sum_ij log sigmoid(y_ij * logits_ij)

config.objective: name='sigmoid_contrastive'. The model must have a bias (`bias_init` set).
"""

import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.objectives import base

NEEDS = models.EMBED_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  del objective_config  # No fields beyond the name.


def sigmoid_contrastive_loss(sims_BxB, scale, bias):
  """The loss above, from cosine similarities (rows images, columns texts)."""
  logits_BxB = scale * sims_BxB + bias
  signs_BxB = 2 * jnp.eye(sims_BxB.shape[0], dtype=jnp.float32) - 1
  return -jnp.sum(jax.nn.log_sigmoid(signs_BxB * logits_BxB)) / sims_BxB.shape[0], logits_BxB


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  del objective_config

  def loss_fn(params, batch, rng, step=None):
    del rng, step  # Deterministic, no schedule.
    sims_BxB, scale, bias = base.similarities(predict_fns, params, batch)
    if bias is None:
      raise errors.ConfigError("config.objective.name='sigmoid_contrastive' needs a learned "
                               "bias: set config.model.bias_init (SigLIP: -10)")
    loss, logits_BxB = sigmoid_contrastive_loss(sims_BxB, scale, bias)
    return loss, {"loss": loss, "temperature": scale, "bias": bias,
                  "batch_accuracy": base.batch_accuracy(logits_BxB)}
  return loss_fn
