"""Evaluators, chosen by `type` in `config.evals`. Each is a module of this package defining

    default_config(**overrides)   the `config.evals` entry a config file starts from
    validate(name, eval_config)   ConfigError for a bad field
    Evaluator(name, eval_config, config, predict_fns, mesh, tokenizer)
        .run(params) -> {metric name: value}

An evaluator gets the model family's predict functions (`models.CAPTION_FNS`,
`models.EMBED_FNS`) and scores with whichever groups the family supplies (through
`ig_captioner.scoring`); it never sees the model. What every evaluator shares (common fields,
data, batch checks) is in `base.py`; ready entries for real data sets by name in `catalog.py`.
"""

import ml_collections

from ig_captioner import registry


# Evaluators renamed so that no evaluator shares its name with an objective or a model family.
RENAMED = {"captioning": "caption_generation"}


def get(type_name: str, field: str):
  """The evaluator module of `type_name`; ConfigError naming `field` and the known types."""
  return registry.resolve(__name__, "Evaluator", type_name, field, RENAMED)


def validate(config: ml_collections.ConfigDict) -> None:
  for name, eval_config in config.get("evals", {}).items():
    get(eval_config.type, f"config.evals.{name}.type").validate(name, eval_config)


def build(config: ml_collections.ConfigDict, predict_fns: dict, mesh, tokenizer) -> list:
  """One Evaluator per entry of `config.evals`."""
  validate(config)
  return [get(ev.type, f"config.evals.{name}.type").Evaluator(
      name, ev, config, predict_fns, mesh, tokenizer) for name, ev in config.evals.items()]
