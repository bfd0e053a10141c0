"""Evaluators, chosen by `type` in `config.evals`. Each is a module of this package defining

    default_config(**overrides)   the `config.evals` entry a config file starts from
    validate(name, eval_config)   ConfigError for a bad field
    Evaluator(name, eval_config, config, predict_fns, mesh, tokenizer)
        .run(params) -> {metric name: value}

An evaluator gets the model family's predict functions (`models.CAPTION_FNS`,
`models.EMBED_FNS`) and scores with whichever groups the family supplies; it never sees the model.
"""

import ml_collections

from ig_captioner import registry


def get(type_name: str, field: str):
  """The evaluator module of `type_name`; ConfigError naming `field` and the known types."""
  return registry.resolve(__name__, "Evaluator", type_name, field)


def validate(config: ml_collections.ConfigDict) -> None:
  for name, eval_config in config.get("evals", {}).items():
    get(eval_config.type, f"config.evals.{name}.type").validate(name, eval_config)


def build(config: ml_collections.ConfigDict, predict_fns: dict, mesh, tokenizer) -> list:
  """One Evaluator per entry of `config.evals`."""
  validate(config)
  return [get(ev.type, f"config.evals.{name}.type").Evaluator(
      name, ev, config, predict_fns, mesh, tokenizer) for name, ev in config.evals.items()]
