"""Training objectives, chosen by `config.objective.name`. Each is a module of this package
defining

    NEEDS                                    the predict-function group it uses (`models`)
    validate(objective_config)               ConfigError for a bad field
    make_loss(objective_config, predict_fns) -> loss_fn(params, batch, rng, step) -> (loss, metrics)
    check_tokenizer(tokenizer)               (optional) TokenizerError if it lacks an id it needs
    accumulation_error(objective_config)     (optional) None if its loss is a mean over the
                                             batch's scored tokens (`target_mask`), so that
                                             microbatches weighted by their share of them give
                                             the full batch's gradient; else why not

`batch` is {'image': float BxHxWxC, 'tokens': int BxT, 'target_mask': bool Bx(T-1)} (the
targets `tokens[:, 1:]` that are scored); `rng` is a key derived from the config's seed and the
step, so that a resumed run draws the same numbers; `metrics` holds `loss` and whatever the
objective logs (averaged over the log interval by the trainer). The loss terms several
objectives combine (captioning with the IG term, contrastive similarities) are in `base.py`.
"""

from typing import Callable

import ml_collections

from ig_captioner import models
from ig_captioner import registry


# Objectives renamed so that no objective shares its name with a model family or an evaluator.
RENAMED = {"coca": "contrastive_captioning"}


def get(name: str):
  """The objective module named `name`; ConfigError listing the known ones otherwise."""
  return registry.resolve(__name__, "make_loss", name, "config.objective.name", RENAMED)


def validate(config: ml_collections.ConfigDict) -> None:
  get(config.objective.name).validate(config.objective)


def make_loss(config: ml_collections.ConfigDict, predict_fns: dict) -> Callable:
  """The loss of `config.objective` for a model with `predict_fns` (checked to fit)."""
  objective = get(config.objective.name)
  objective.validate(config.objective)
  models.require(predict_fns, objective.NEEDS, f"config.objective.name="
                 f"{config.objective.name!r}", config.model.name)
  return objective.make_loss(config.objective, predict_fns)


def check_tokenizer(config: ml_collections.ConfigDict, tokenizer) -> None:
  objective = get(config.objective.name)
  if hasattr(objective, "check_tokenizer"):
    objective.check_tokenizer(tokenizer)


def accumulation_error(config: ml_collections.ConfigDict) -> str | None:
  """Why `config.grad_accum_steps` > 1 cannot give the full batch's update with this
  objective, or None."""
  objective = get(config.objective.name)
  if not hasattr(objective, "accumulation_error"):
    return (f"config.objective.name={config.objective.name!r} couples every example of the "
            "batch (a contrastive loss), so microbatches would change it")
  return objective.accumulation_error(config.objective)
