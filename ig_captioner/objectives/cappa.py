"""CapPa (Tschannen et al., *Image Captioners Are Scalable Vision Learners Too*, 2023):
captioning with parallel prediction. Each example of a batch is, with probability
`parallel_fraction` (0.75 in the paper), predicted in parallel: its decoder input is all
`<mask>` tokens (id 4; a prefix-conditioning token stays, as it is conditioning, not content)
and the decoder runs without its causal mask, so every token must come from the image alone.
The other examples are ordinary autoregressive captioning. The IG term is available as for
`captioning`:

    loss = CE(t | I; mixed parallel/autoregressive) + text_only_weight * CE(t | no image)

where the text-only pass is autoregressive on every example (it is the prior log P(t) that IG
scoring subtracts). Which examples are parallel is drawn from the step's `rng` (config seed and
step), so a resumed run draws the same ones. Scoring stays autoregressive, as in big_vision.

config.objective: name='cappa', parallel_fraction, text_only_weight, optional logits_chunk
(as `captioning`'s).
"""

import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import token_ids
from ig_captioner.objectives import base
from ig_captioner.scoring import likelihood

NEEDS = models.CAPTION_FNS + models.PARALLEL_FNS


def validate(objective_config: ml_collections.ConfigDict) -> None:
  base.validate_caption_fields(objective_config)
  fraction = objective_config.get("parallel_fraction")
  if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
    raise errors.ConfigError(f"config.objective.parallel_fraction={fraction!r} is invalid: it "
                             "must be in [0, 1] (CapPa: 0.75)")


def check_tokenizer(tokenizer) -> None:
  tokenizer.require_reserved_ids("config.objective.name='cappa' (its <mask> input token)")


def parallel_inputs(inputs_BxL, parallel_B):
  """The decoder inputs: all <mask> for parallel examples (prefix tokens kept), as given else."""
  is_prefix_BxL = jnp.isin(inputs_BxL, jnp.asarray(tuple(token_ids.PREFIX_IDS.values())))
  masked_BxL = jnp.where(is_prefix_BxL, inputs_BxL, token_ids.MASK_ID)
  return jnp.where(parallel_B[:, None], masked_BxL, inputs_BxL)


def cappa_loss(predict_fns: dict, params, batch, parallel_B, text_only_weight: float,
               logits_chunk: int = 0):
  """(loss, metrics) as the module docstring says, for the examples' draws `parallel_B`."""
  inputs_BxL, targets_BxL = likelihood.inputs_and_targets(batch["tokens"])
  visual_BxNxD = predict_fns["encode_images"](params, batch["image"])
  logp_BxL = base.target_logprobs(predict_fns, params,
                                        parallel_inputs(inputs_BxL, parallel_B), targets_BxL,
                                        visual_BxNxD, logits_chunk, parallel_B)
  loss, metrics = base.caption_loss(predict_fns, params, batch["image"], batch["tokens"],
                                          batch["target_mask"], text_only_weight,
                                          logits_chunk=logits_chunk, logprobs_BxL=logp_BxL)
  metrics["parallel_fraction"] = jnp.mean(parallel_B.astype(jnp.float32))
  return loss, metrics


def accumulation_error(objective_config: ml_collections.ConfigDict) -> str | None:
  """A mean over scored tokens; each microbatch draws its parallel examples itself."""
  del objective_config
  return None


def make_loss(objective_config: ml_collections.ConfigDict, predict_fns: dict):
  fraction = float(objective_config.parallel_fraction)
  weight = float(objective_config.text_only_weight)
  chunk = int(objective_config.get("logits_chunk", 0))
  base.check_chunking(chunk, predict_fns)

  def loss_fn(params, batch, rng, step=None):
    del step  # No schedule.
    parallel_B = jax.random.bernoulli(rng, fraction, (batch["tokens"].shape[0],))
    return cappa_loss(predict_fns, params, batch, parallel_B, weight, chunk)
  return loss_fn
