"""The zero-shot evaluator's prompt-ensemble path (`weightings` beyond 'equal', or
`descriptions`): per-prompt scores of every image brought to the host and combined there
(`scoring/prompt_weighting.py`), each weighting reported under its own name:

    zeroshot/<name>[/descriptions]/<weighting>/<metric>[_alpha<a>]

('equal' with descriptions drops the weighting: `zeroshot/<name>/descriptions/acc1...`).
Two towers: 'equal' is CLIP's ensemble (normalised mean embedding of a class's prompts), the
others combine the per-prompt logits 100 * cos. Captioners: s = log P(t|I) - alpha log P(t),
log P(t) once per prompt. ZPE reads its pretraining sample (`zpe_data`, `zpe_split`,
`zpe_images`; default the run's own train data) and the test split twice more, unlabelled, for
the means and the template scores; it needs templates (not descriptions).

Shape letters: A alphas, B images, P prompts, C classes, K templates, E embedding width.
"""

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.data import pipeline
from ig_captioner.data import presets
from ig_captioner.evaluators import base
from ig_captioner.evaluators import protocol_metrics
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import embeddings
from ig_captioner.scoring import prompt_weighting


def wanted(eval_config: ml_collections.ConfigDict) -> bool:
  """Whether the evaluator takes this path."""
  return bool(eval_config.get("descriptions")) or any(
      w != "equal" for w in eval_config.get("weightings", ("equal",)))


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  weightings = tuple(eval_config.get("weightings", ("equal",)))
  bad = [w for w in weightings if w not in prompt_weighting.WEIGHTINGS]
  if not weightings or bad:
    raise errors.ConfigError(f"config.evals.{name}.weightings={weightings!r} is invalid: each is "
                             f"one of {prompt_weighting.WEIGHTINGS}")
  if not wanted(eval_config):
    return
  if eval_config.get("descriptions") and "zpe" in weightings:
    raise errors.ConfigError(f"config.evals.{name}: ZPE weights templates, and descriptions have "
                             "none: drop 'zpe' from weightings or unset descriptions")
  for field, default in (("shortlist", 0), ("stream_blocks", 0)):
    if eval_config.get(field, default):
      raise errors.ConfigError(f"config.evals.{name}.{field} does not combine with weightings "
                               "or descriptions: use a second evaluator for them")
  if tuple(eval_config.get("prefixes", (None,))) != (None,):
    raise errors.ConfigError(f"config.evals.{name}.prefixes does not combine with weightings or "
                             "descriptions yet: use a second evaluator for them")


def metric_stem(name: str, weighting: str, descriptions: bool) -> str:
  parts = [f"zeroshot/{name}"] + (["descriptions"] if descriptions else []) + (
      [] if weighting == "equal" else [weighting])
  return "/".join(parts)


class PromptEnsembles:
  """Scores prompts of one zero-shot evaluator and combines them per weighting."""

  def __init__(self, name: str, eval_config, config, predict_fns: dict, mesh, tokenizer,
               class_names, data_config, caption: bool, embed: bool, alphas):
    self.name, self._cfg, self._mesh = name, eval_config, mesh
    self._data_config, self._alphas = data_config, np.asarray(alphas, np.float64)
    self._image_size = config.model.image_size
    self._zpe_data = presets.with_overrides(config.data, eval_config.get("zpe_data") or {})
    self._num_classes = len(class_names)
    self._descriptions = bool(eval_config.get("descriptions"))
    equal_done_elsewhere = not self._descriptions
    self.weightings = [w for w in eval_config.get("weightings", ("equal",))
                       if not (w == "equal" and equal_done_elsewhere)]
    if self._descriptions:
      prompts, self._class_P = prompt_weighting.read_descriptions(
          eval_config.descriptions, class_names, eval_config.get("descriptions_key"))
      groups_P = None
    else:
      templates = tuple(eval_config.templates)
      prompts = class_scores.class_prompts(class_names, templates)
      self._class_P = np.repeat(np.arange(self._num_classes), len(templates))
      groups_P = np.arange(len(prompts)) % len(templates)
    self.prompts = prompts
    prompts_PxT = tokenizer.encode_batch(prompts, config.model.max_text_len, strict=True)
    self._replicated = NamedSharding(mesh, P())
    self._caption, self._embed = caption, embed
    if caption:
      self._scorer = base.prompt_scorer(predict_fns, prompts_PxT, groups_P, eval_config, mesh,
                                        self._image_size, tokenizer.unscored_ids)
      scorer = self._scorer

      def caption_scores(params, inputs, images, valid, labels):
        visual = predict_fns["encode_images"](params, images)
        return scorer.image_text_logprobs(params, visual, inputs), valid, labels

      self._text_only = jax.jit(scorer.text_logprobs, out_shardings=self._replicated)
      self._caption_scores = jax.jit(caption_scores, out_shardings=self._replicated)
    if embed:
      chunk = int(eval_config.prompt_chunk)
      self._prompts_PxT = prompts_PxT
      self._embed_texts = jax.jit(
          lambda params, texts: embeddings.embed_texts_chunked(predict_fns["embed_texts"],
                                                               params, texts, chunk),
          out_shardings=self._replicated)
      self._embed_images = jax.jit(lambda params, images, valid, labels: (
          predict_fns["embed_images"](params, images), valid, labels),
                                   out_shardings=self._replicated)

  # ------------------------------------------------------------------------------ Scores ---
  def _prompt_scores(self, params, data_config, split, label_key, limit=None):
    """Yields ({scoring: per-prompt scores X x b x P}, {scoring: what they come from}, labels b
    or None) of the valid images of each global batch of `split`, the first `limit` at most."""
    seen = 0
    for local in pipeline.labeled_batches(data_config, split, self._image_size,
                                          self._cfg.batch_size, label_key):
      batch = sharding.global_batch_from_local(local, self._mesh)
      labels = batch.get("label", batch["valid"])
      out = {}
      if self._caption:
        logp_BxP, valid, labels_B = jax.device_get(self._caption_scores(
            params, self._inputs, batch["image"], batch["valid"], labels))
        valid = np.asarray(valid, bool)
        out["caption"] = (np.asarray(logp_BxP, np.float64)[valid][None]
                          - self._alphas[:, None, None] * self._logp_txt_P)
      if self._embed:
        z_BxE, valid, labels_B = jax.device_get(self._embed_images(
            params, batch["image"], batch["valid"], labels))
        valid = np.asarray(valid, bool)
        z_BxE = np.asarray(z_BxE, np.float64)[valid]
        out["embedding"] = z_BxE / np.linalg.norm(z_BxE, axis=-1, keepdims=True)
      labels_B = np.asarray(labels_B)[valid] if label_key else None
      count = int(valid.sum())
      if limit is not None and seen + count > limit:
        count = limit - seen
        out = {k: v[..., :count, :] for k, v in out.items()}
      seen += count
      yield self._per_prompt(out), out, labels_B
      if limit is not None and seen >= limit:
        return

  def _per_prompt(self, out: dict) -> dict:
    """{scoring: X x b x P per-prompt scores} (two towers: 100 * cos)."""
    scores = {}
    if "caption" in out:
      scores["caption"] = out["caption"]
    if "embedding" in out:
      scores["embedding"] = prompt_weighting.EMBEDDING_SCALE * (
          out["embedding"] @ self._z_PxE.T)[None]
    return scores

  # --------------------------------------------------------------------------------- Run ---
  def run(self, params) -> dict[str, float]:
    with sharding.activate(self._mesh):
      if self._caption:
        self._inputs = jax.device_put(self._scorer.inputs, self._replicated)
        self._logp_txt_P = np.asarray(jax.device_get(self._text_only(params, self._inputs)),
                                      np.float64)
      if self._embed:
        z_PxE = np.asarray(jax.device_get(self._embed_texts(
            params, jax.device_put(self._prompts_PxT, self._replicated))), np.float64)
        self._z_PxE = z_PxE / np.linalg.norm(z_PxE, axis=-1, keepdims=True)
        self._classes_CxE = self._clip_ensemble(self._z_PxE)
      weights = self._zpe_weights(params) if "zpe" in self.weightings else {}
      ranks = {}
      for scores, raw, labels in self._prompt_scores(params, self._data_config, self._cfg.split,
                                                     self._cfg.label_key):
        for scoring, s_XxBxP in scores.items():
          for weighting in self.weightings:
            class_XxBxC = self._class_scores(scoring, weighting, s_XxBxP, raw, weights)
            top = np.argsort(-class_XxBxC, axis=-1, kind="stable")[
                ..., :protocol_metrics.TOP_K]
            ranks.setdefault((scoring, weighting), []).append((top, labels))
    return self._metrics(ranks)

  def _class_scores(self, scoring, weighting, s_XxBxP, raw, weights):
    if weighting == "equal" and scoring == "embedding":
      return prompt_weighting.EMBEDDING_SCALE * (raw["embedding"] @ self._classes_CxE.T)[None]
    if weighting == "zpe":
      w_XxP = weights[scoring]  # Per template, repeated over its prompts.
      return np.stack([prompt_weighting.combine(s[None], self._class_P, self._num_classes,
                                                weights_P=w)[0]
                       for s, w in zip(s_XxBxP, w_XxP)])
    how = "mean" if weighting == "equal" else weighting
    return prompt_weighting.combine(s_XxBxP, self._class_P, self._num_classes, how)

  def _clip_ensemble(self, z_PxE: np.ndarray) -> np.ndarray:
    """CLIP's class embeddings: the normalised mean of each class's normalised prompts."""
    mean_CxE = prompt_weighting.combine(z_PxE.T[None], self._class_P, self._num_classes)[0].T
    return mean_CxE / np.linalg.norm(mean_CxE, axis=-1, keepdims=True)

  def _zpe_weights(self, params) -> dict[str, np.ndarray]:
    """{scoring: X x P weights}: softmax over templates of z_k, repeated over its prompts."""
    limit = int(self._cfg.get("zpe_images", 1024))
    split = self._cfg.get("zpe_split") or self._zpe_data.get("train_split", "train")
    means = {}
    for name, data, data_split, n in (("pre", self._zpe_data, split, limit),
                                      ("test", self._data_config, self._cfg.split, None)):
      sums, count = {}, 0
      for scores, _, _ in self._prompt_scores(params, data, data_split, None, n):
        for scoring, s in scores.items():
          sums[scoring] = sums.get(scoring, 0.0) + s.sum(axis=-2)
        count += next(iter(scores.values())).shape[-2]
      if not count:
        raise errors.DataError(f"zeroshot/{self.name}: ZPE's {name} sample ({data.name}, split "
                               f"{data_split!r}) holds no image")
      means[name] = {k: v / count for k, v in sums.items()}
    mean = {k: (means["pre"][k] + means["test"][k]) / 2 for k in means["test"]}
    z, count = {}, 0
    for scores, _, _ in self._prompt_scores(params, self._data_config, self._cfg.split, None):
      for scoring, s in scores.items():
        z[scoring] = z.get(scoring, 0.0) + prompt_weighting.zpe_template_scores(
            s, mean[scoring], self._num_classes)
      count += next(iter(scores.values())).shape[-2]
    templates = len(self._class_P) // self._num_classes
    return {k: np.tile(prompt_weighting.softmax(v / count), (1, self._num_classes)).reshape(
        v.shape[0], self._num_classes * templates) for k, v in z.items()}

  def _metrics(self, ranks: dict) -> dict[str, float]:
    out = {}
    for (scoring, weighting), batches in ranks.items():
      labels_B = np.concatenate([labels for _, labels in batches])
      top_XxBxR = np.concatenate([top for top, _ in batches], axis=-2)
      alphas = self._alphas if scoring == "caption" else [None]
      stem = metric_stem(self.name, weighting, self._descriptions)
      for alpha, top_BxR in zip(alphas, top_XxBxR):
        values = protocol_metrics.classification(top_BxR, labels_B, self._num_classes)
        suffix = "" if alpha is None else f"_alpha{float(alpha)}"
        out.update({f"{stem}/{m}{suffix}": v for m, v in values.items()})
    return out
