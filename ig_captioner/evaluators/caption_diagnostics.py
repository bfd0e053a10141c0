"""What the text-only pass of a captioner learns, on held-out data: does it model the caption
prior, and does it take capacity from P(t|I)? For captioners (`models.CAPTION_FNS`).

- `ce_with_image`, `ce_text_only`: mean negative log-likelihood per scored token (nats) of the
  split's captions (`captions_key`, the first `max_captions` of each record) with and without
  the image; `info_gain_per_token` = their difference, the mean of
  log P(t_i|I, t_<i) - log P(t_i|t_<i).
- `prior_kl`: KL(pi || q) over the classes, where pi is the empirical caption prior, the share
  of `prior_split`'s captions (`config.data.text_key`) that read `template.format(class)` for
  some template of `prior_templates`, and q the text-only model's:
  q(c) ∝ sum_k P(template_k(c)). `prior_coverage`: the share of those captions that matched a
  (template, class) pair (the rest are not counted). Per class, `prior_log_ratio/<class>` =
  log q(c) / pi(c): where the model over- (> 0) or under-states (< 0) a class's popularity.
Metrics are named `diagnostics/<name>/<metric>`.

Shape letters: B images, K captions per image, T text length, N visual tokens, D width,
C classes, P prompts (C x templates, class-major).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner.data import pipeline
from ig_captioner.data import records
from ig_captioner.data import sources
from ig_captioner.evaluators import base
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import likelihood


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base.base_config(
      type="caption_diagnostics",
      split="validation",
      captions_key="captions",
      max_captions=6,  # Captions scored per image (the first ones of `captions_key`).
      label_key="label",
      prior_split="train",
      prior_templates=(),  # The caption phrasings of the train data, '{}' = class name.
  )
  cfg.update(overrides)
  return cfg


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  base.validate_common(name, eval_config)
  templates = eval_config.get("prior_templates", ())
  if not len(templates) or not all("{}" in t for t in templates):
    raise errors.ConfigError(
        f"config.evals.{name}.prior_templates={templates!r} is invalid: it needs the train "
        "captions' phrasings, each with a '{}' for the class name")
  k = eval_config.get("max_captions")
  if not isinstance(k, int) or k <= 0:
    raise errors.ConfigError(f"config.evals.{name}.max_captions={k!r} must be a positive int")


def metric_name(name: str, metric: str) -> str:
  return f"diagnostics/{name}/{metric}"


def empirical_prior(texts, class_names, templates) -> tuple[np.ndarray, float]:
  """(pi over classes, the share of texts matched): how often a text reads
  `template.format(class)` for some template, per class, normalised over the matched texts."""
  owner = {t.format(c).strip().lower(): i for i, c in enumerate(class_names) for t in templates}
  counts, total = np.zeros(len(class_names)), 0
  for text in texts:
    total += 1
    i = owner.get(records.as_text(text).strip().lower())
    if i is not None:
      counts[i] += 1
  if not counts.sum():
    raise sources.DataError(
        f"none of {total} texts reads a prior template with a class name (e.g. "
        f"{templates[0].format(class_names[0])!r}): set prior_templates to the train captions' "
        "phrasings")
  return counts / counts.sum(), counts.sum() / max(total, 1)


def model_prior(logp_txt_P: np.ndarray, num_classes: int) -> np.ndarray:
  """q(c) ∝ sum_k P(t_ck), from log P(t) of the class-major prompts."""
  logp_CxK = np.asarray(logp_txt_P, np.float64).reshape(num_classes, -1)
  top = logp_CxK.max()
  mass_C = np.exp(logp_CxK - top).sum(-1)
  return mass_C / mass_C.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
  """KL(p || q) in nats (terms with p = 0 are 0)."""
  keep = p > 0
  return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(q[keep]))))


class Evaluator:
  """The diagnostics above on `eval_config.split` of `config.data` (+ `eval_config.data`)."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh: jax.sharding.Mesh,
               tokenizer):
    models.require(predict_fns, models.CAPTION_FNS, f"config.evals.{name} (caption_diagnostics)",
                   config.model.name)
    base.check_batch_size(name, eval_config, mesh)
    self.name = name
    self._cfg = eval_config
    self._data = base.data_config(config, eval_config)
    sources.verify_split(self._data, eval_config.split)
    self._image_size = config.model.image_size
    self._max_len = config.model.max_text_len
    self._tokenizer = tokenizer
    self._mesh = mesh
    self._replicated = NamedSharding(mesh, P())
    self.class_names = sources.class_names(self._data, eval_config.label_key)
    templates = tuple(eval_config.prior_templates)
    prior_source = sources.open_split(self._data, eval_config.prior_split)
    self.prior, self.coverage = empirical_prior(
        (text for i in range(len(prior_source))
         for text in records.texts(records.field(prior_source[i], self._data.text_key))),
        self.class_names, templates)
    self._prompts_PxT = tokenizer.encode_batch(
        class_scores.class_prompts(self.class_names, templates), self._max_len, strict=True)

    def nll_sums(params, images, tokens_BxKxT, pair_valid_BxK):
      """Summed NLL with and without the image, and the number of scored tokens."""
      b, k, t = tokens_BxKxT.shape
      inputs, targets = likelihood.inputs_and_targets(tokens_BxKxT.reshape(b * k, t))
      mask = (token_ids.is_scored(targets, tokenizer.unscored_ids)
              & pair_valid_BxK.reshape(b * k, 1))
      visual_BxNxD = predict_fns["encode_images"](params, images)
      n, d = visual_BxNxD.shape[1:]
      visual = jnp.broadcast_to(visual_BxNxD[:, None], (b, k, n, d)).reshape(b * k, n, d)
      sums = []
      for vis in (visual, None):
        logp = likelihood.token_logprobs(predict_fns["decode"](params, inputs, vis), targets)
        sums.append(-jnp.sum(jnp.where(mask, logp, 0.0)))
      return jnp.stack(sums + [mask.sum().astype(jnp.float32)])

    self._nll_sums = jax.jit(nll_sums, out_shardings=self._replicated)
    self._scorer = base.prompt_scorer(
        predict_fns, self._prompts_PxT, np.arange(len(self._prompts_PxT)) % len(templates),
        eval_config, mesh, unscored_ids=tokenizer.unscored_ids)
    self._text_only = jax.jit(self._scorer.text_logprobs, out_shardings=self._replicated)

  def _captions(self, source, index_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (b, K, T) of each row's first K captions, and which (row, caption) are real."""
    k = int(self._cfg.max_captions)
    tokens = np.zeros((len(index_b), k, self._max_len), np.int32)
    valid = np.zeros((len(index_b), k), bool)
    for row, i in enumerate(index_b):
      if i < 0:
        continue
      texts = records.texts(records.field(source[int(i)], self._cfg.captions_key))[:k]
      tokens[row, :len(texts)] = self._tokenizer.encode_batch(texts, self._max_len)
      valid[row, :len(texts)] = True
    return tokens, valid

  def run(self, params) -> dict[str, float]:
    source = sources.open_split(self._data, self._cfg.split)
    sums = np.zeros(3)
    with sharding.activate(self._mesh):
      prompts = jax.device_put(self._scorer.inputs, self._replicated)
      logp_txt_P = np.asarray(jax.device_get(self._text_only(params, prompts)))
      for local in pipeline.labeled_batches(self._data, self._cfg.split, self._image_size,
                                            self._cfg.batch_size, label_key=None):
        tokens, valid = self._captions(source, local["index"])
        batch = sharding.global_batch_from_local(
            {"image": local["image"], "tokens": tokens, "valid": valid}, self._mesh)
        sums += np.asarray(jax.device_get(
            self._nll_sums(params, batch["image"], batch["tokens"], batch["valid"])))
    ce_image, ce_text = sums[0] / sums[2], sums[1] / sums[2]
    q = model_prior(logp_txt_P, len(self.class_names))
    metrics = {"ce_with_image": ce_image, "ce_text_only": ce_text,
               "info_gain_per_token": ce_text - ce_image,
               "prior_kl": kl_divergence(self.prior, q), "prior_coverage": self.coverage}
    for c, name in enumerate(self.class_names):
      if self.prior[c] > 0:
        metrics[f"prior_log_ratio/{name}"] = float(np.log(q[c]) - np.log(self.prior[c]))
    return {metric_name(self.name, k): float(v) for k, v in metrics.items()}
