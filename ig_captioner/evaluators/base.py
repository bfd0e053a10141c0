"""What the evaluators share: their common config fields, metric names, the data they read and
the caption scorer they build."""

import ml_collections

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner.data import presets
from ig_captioner.data import sources
from ig_captioner.scoring import prompt_scoring


def base_config(**fields) -> ml_collections.ConfigDict:
  """Fields every evaluator has; `data` (optional) overrides fields of `config.data`."""
  cfg = ml_collections.ConfigDict(dict(
      split="zeroshot",
      batch_size=128,  # Images per global batch (a multiple of the mesh's batch axes).
      prompt_chunk=64,  # Texts scored per decoder call (x batch_size pairs) or embedded per call.
      # Caption likelihoods: "cached" (image K/V once per image, shared prompt prefixes decoded
      # once; see scoring/prompt_scoring.py) or "reference" (every pair in full; same numbers).
      scoring="cached",
      block_tokens=4096,  # Cached scoring: decoder positions per block per device.
      # Prefix-conditioning tokens put before every text, each reported apart: None (no
      # prefix), "caption", "classification".
      prefixes=(None,),
  ))
  cfg.update(fields)
  return cfg


def validate_common(name: str, eval_config: ml_collections.ConfigDict) -> None:
  for field in ("batch_size", "prompt_chunk", "block_tokens"):
    value = eval_config.get(field)
    if not isinstance(value, int) or value <= 0:
      raise errors.ConfigError(f"config.evals.{name}.{field}={value!r} is invalid: it must be a "
                               "positive integer")
  if eval_config.get("scoring", "cached") not in prompt_scoring.METHODS:
    raise errors.ConfigError(f"config.evals.{name}.scoring={eval_config.scoring!r} is not one "
                             f"of {prompt_scoring.METHODS}")
  if eval_config.get("prior", "no_image") not in prompt_scoring.PRIORS:
    raise errors.ConfigError(f"config.evals.{name}.prior={eval_config.prior!r} is not one of "
                             f"{prompt_scoring.PRIORS}")
  prefixes = eval_config.get("prefixes", (None,))
  if not len(prefixes) or not all(p is None or p in token_ids.PREFIX_IDS for p in prefixes):
    raise errors.ConfigError(f"config.evals.{name}.prefixes={prefixes!r} is invalid: each is "
                             f"None or one of {sorted(token_ids.PREFIX_IDS)}")
  if "alphas" in eval_config and not len(eval_config.alphas):
    raise errors.ConfigError(f"config.evals.{name}.alphas={eval_config.alphas!r} is invalid: it "
                             "needs at least one alpha")


def metric_stem(kind: str, name: str, prefix: str | None) -> str:
  """'zeroshot/digits', or 'zeroshot/digits/caption_prefix' for texts with the caption prefix."""
  return f"{kind}/{name}" + (f"/{prefix}_prefix" if prefix else "")


def data_config(config: ml_collections.ConfigDict,
                eval_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.data` with the evaluator's `data` overrides (which may add fields: `manual_dir`)."""
  return presets.with_overrides(config.data, eval_config.get("data", {}))


def check_batch_size(name: str, eval_config: ml_collections.ConfigDict, mesh) -> None:
  sharding.check_batch_divides(eval_config.batch_size, mesh, f"config.evals.{name}.batch_size")


def prompt_scorer(predict_fns: dict, texts_PxT, groups_P, eval_config: ml_collections.ConfigDict,
                  mesh, image_size: int | None = None,
                  unscored_ids=token_ids.UNSCORED_IDS) -> prompt_scoring.PromptScorer:
  """The caption-likelihood scorer of `eval_config.scoring` for a fixed set of texts, its
  log P(t) from `eval_config.prior` (default 'no_image'; 'null_image' needs `image_size`)."""
  return prompt_scoring.PromptScorer(
      predict_fns, texts_PxT, groups_P, eval_config.get("scoring", "cached"),
      images_per_device=max(1, eval_config.batch_size // sharding.batch_axis_size(mesh)),
      block_tokens=int(eval_config.get("block_tokens", 4096)),
      chunk=int(eval_config.prompt_chunk), prior=eval_config.get("prior", "no_image"),
      image_size=image_size, unscored_ids=unscored_ids)


class EvaluatorBase:
  """What every evaluator sets up: its fields, the scorings the family supplies (embeddings,
  caption likelihoods; at least one), the batch size check, and its split's records checked
  before the first checkpoint."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh, kind: str):
    self.name = name
    self._cfg = eval_config
    self._data_config = data_config(config, eval_config)
    self._image_size = config.model.image_size
    self._mesh = mesh
    self.alphas = tuple(float(a) for a in eval_config.alphas)
    self._embed = models.supplies(predict_fns, models.EMBED_FNS)
    self._caption = models.supplies(predict_fns, models.CAPTION_FNS)
    if not (self._embed or self._caption):
      models.require(predict_fns, models.EMBED_FNS + models.CAPTION_FNS,
                     f"config.evals.{name} ({kind})", config.model.name)
    check_batch_size(name, eval_config, mesh)
    sources.verify_split(self._data_config, eval_config.split)
