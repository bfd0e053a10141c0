"""CoCa's objective (Yu et al., *CoCa: Contrastive Captioners are Image-Text Foundation Models*,
2022), for the `coca` model family: CLIP's softmax contrastive loss on the embeddings plus
captioning on the multimodal half, from one forward pass (`caption_and_embed`):

    loss = contrastive_weight * L_contrastive
           + caption_weight * (CE(t | I) + text_only_weight * CE(t | no image))

The paper weighs contrastive 1 and captioning 2. `text_only_weight` > 0 makes CoCa's captioning
half an IG captioner (its decoder run without the image is the prior log P(t)); the
temperature's exp is clipped at `max_temperature`, as CLIP's.

config.objective: name='contrastive_captioning' (named 'coca' before 0.2), contrastive_weight,
caption_weight, text_only_weight, max_temperature.
"""

import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.objectives import base

NEEDS = models.CAPTION_FNS + models.EMBED_FNS + models.JOINT_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  base.validate_caption_fields(objective_config)
  base.validate_max_temperature(objective_config)
  if objective_config.get("logits_chunk", 0):
    raise errors.ConfigError("config.objective.logits_chunk is not supported by "
                             "'contrastive_captioning' (its joint forward gives whole logits): "
                             "set it to 0")
  for field in ("contrastive_weight", "caption_weight"):
    value = objective_config.get(field)
    if not isinstance(value, (int, float)) or value < 0:
      raise errors.ConfigError(f"config.objective.{field}={value!r} is invalid: it must be >= 0 "
                               "(CoCa: contrastive 1, caption 2)")


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  contrastive_weight = float(objective_config.contrastive_weight)
  caption_weight = float(objective_config.caption_weight)
  text_only_weight = float(objective_config.text_only_weight)
  limit = float(objective_config.max_temperature)

  def loss_fn(params, batch, rng, step=None):
    del rng, step  # Deterministic, no schedule.
    logits_BxLxV, z_img_BxE, z_txt_BxE = predict_fns["caption_and_embed"](
        params, batch["image"], batch["tokens"])
    sims_BxB = base.cosine_similarities(z_img_BxE, z_txt_BxE)
    scale = jnp.minimum(predict_fns["logit_scale_and_bias"](params)[0], limit)
    contrastive, logits_BxB = base.softmax_contrastive_loss(sims_BxB, scale)
    caption, metrics = base.caption_loss(
        predict_fns, params, batch["image"], batch["tokens"], batch["target_mask"],
        text_only_weight, logits_BxLxV=logits_BxLxV)
    loss = contrastive_weight * contrastive + caption_weight * caption
    metrics.update(loss=loss, contrastive_loss=contrastive, caption_loss=caption,
                   temperature=scale, batch_accuracy=base.batch_accuracy(logits_BxB))
    return loss, metrics
  return loss_fn
