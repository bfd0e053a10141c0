"""Zero-shot classification, scored with whatever the model family supplies:

- embeddings (`models.EMBED_FNS`: CLIP, SigLIP) follow CLIP's recipe (Radford et al., 2021): a
  class embedding is the L2-normalised mean of its templates' normalised text embeddings, and an
  image gets the class of highest cosine similarity. Metric `zeroshot/<name>/top1`.
- caption log-likelihoods (`models.CAPTION_FNS`: captioners) give the IG score
      s(c, I) = mean_k [log P(t_ck|I) - alpha * log P(t_ck)]
              = mean_k log P(t_ck|I) - alpha * mean_k log P(t_ck),
  the log of the geometric mean over templates k of the likelihood ratio, for every alpha of
  `alphas` from the same passes. log P(t) comes from the same decoder without visual tokens, once
  per prompt per checkpoint; the visual tokens once per image batch. Metrics
  `zeroshot/<name>/top1_alpha<alpha>`.
A family that supplies both gets both. With `prefixes`, every prompt is scored after each
prefix-conditioning token (for captioners the prior is then log P(t | prefix)), reported apart:
`zeroshot/<name>/<prefix>_prefix/top1...`.

Shape letters: B images, C classes, K templates, P prompts (C x K, class-major), A alphas,
E embedding width.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.evaluators import _common


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = _common.base_config(
      type="zeroshot",
      label_key="label",
      # Prompt templates ({} = class name); the class score averages the per-template scores.
      templates=("a photo of the number {}", "a handwritten {}", "the digit {} written by hand"),
      alphas=(0.0, 0.5, 1.0),  # For caption scoring.
  )
  cfg.update(overrides)
  return cfg


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  _common.validate_common(name, eval_config)
  templates = eval_config.get("templates", ())
  if not len(templates) or not all("{}" in t for t in templates):
    raise errors.ConfigError(f"config.evals.{name}.templates={templates!r} is invalid: it needs "
                             "at least one template, each with a '{}' for the class name")


def metric_name(name: str, alpha: float | None = None, prefix: str | None = None) -> str:
  return (_common.metric_stem("zeroshot", name, prefix) + "/top1" +
          ("" if alpha is None else f"_alpha{float(alpha)}"))


def class_scores(logp_img_BxP: jax.Array, logp_txt_P: jax.Array, num_classes: int,
                 alphas: Sequence[float]) -> jax.Array:
  """IG scores per alpha and class, templates averaged (prompts class-major). Returns (A, B, C)."""
  b = logp_img_BxP.shape[0]
  img_BxC = logp_img_BxP.reshape(b, num_classes, -1).mean(-1)
  txt_C = logp_txt_P.reshape(num_classes, -1).mean(-1)
  alphas_A = jnp.asarray(alphas, jnp.float32)
  return img_BxC[None] - alphas_A[:, None, None] * txt_C[None, None]


def class_embeddings(z_prompts_PxE: jax.Array, num_classes: int) -> jax.Array:
  """CLIP's prompt ensemble: normalised mean of each class's (normalised) template embeddings."""
  mean_CxE = z_prompts_PxE.reshape(num_classes, -1, z_prompts_PxE.shape[-1]).mean(1)
  return mean_CxE / jnp.linalg.norm(mean_CxE, axis=-1, keepdims=True)


class Evaluator(_common.EvaluatorBase):
  """Zero-shot top-1 on `eval_config.split` of `config.data` (+ `eval_config.data`)."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh: jax.sharding.Mesh,
               tokenizer):
    super().__init__(name, eval_config, config, predict_fns, mesh, "zeroshot")
    self.class_names = sources.class_names(self._data_config, eval_config.label_key)
    prompts = [t.format(c) for c in self.class_names for t in eval_config.templates]
    self.prefixes = tuple(eval_config.get("prefixes", (None,)))
    prompts_PxT = {p: tokenizer.encode_batch(prompts, config.model.max_text_len, strict=True,
                                             prefix=p) for p in self.prefixes}
    self._prompts_PxT = prompts_PxT
    self._replicated = NamedSharding(mesh, P())
    chunk, num_classes = int(eval_config.prompt_chunk), len(self.class_names)

    # Prompts are arguments, not constants baked into the compiled programs (ImageNet with 80
    # templates has 80k of them).
    if self._caption:
      # Template k's prompts share its words before the class name: one group each.
      groups_P = np.arange(len(prompts)) % len(eval_config.templates)
      self._scorers = {p: _common.prompt_scorer(predict_fns, prompts_PxT[p], groups_P,
                                                eval_config, mesh) for p in self.prefixes}
      scorer = self._scorers[self.prefixes[0]]  # Same shapes for every prefix.

      def caption_hits(params, inputs, logp_txt_P, images, labels, valid):
        visual = predict_fns["encode_images"](params, images)
        logp_img_BxP = scorer.image_text_logprobs(params, visual, inputs)
        scores_AxBxC = class_scores(logp_img_BxP, logp_txt_P, num_classes, self.alphas)
        return ((jnp.argmax(scores_AxBxC, axis=-1) == labels[None]) & valid[None]).sum(-1)

      self._text_only = jax.jit(scorer.text_logprobs, out_shardings=self._replicated)
      self._caption_hits = jax.jit(caption_hits, out_shardings=self._replicated)

    if self._embed:
      def classes(params, prompts_PxT):
        z_PxE = _common.embed_texts_chunked(predict_fns["embed_texts"], params, prompts_PxT,
                                            chunk)
        return class_embeddings(z_PxE, num_classes)

      def embed_hits(params, classes_CxE, images, labels, valid):
        sims_BxC = predict_fns["embed_images"](params, images) @ classes_CxE.T
        return ((jnp.argmax(sims_BxC, axis=-1) == labels) & valid).sum()

      self._classes = jax.jit(classes, out_shardings=self._replicated)
      self._embed_hits = jax.jit(embed_hits, out_shardings=self._replicated)

  def run(self, params) -> dict[str, float]:
    correct_PxA = {p: np.zeros(len(self.alphas), np.int64) for p in self.prefixes}
    correct_P = {p: 0 for p in self.prefixes}
    with sharding.activate(self._mesh):
      prompts, logp_txt, classes = {}, {}, {}
      for p in self.prefixes:
        if self._caption:  # log P(t): once per checkpoint, reused for every image batch.
          prompts[p] = jax.device_put(self._scorers[p].inputs, self._replicated)
          logp_txt[p] = self._text_only(params, prompts[p])
        if self._embed:
          classes[p] = self._classes(params, jax.device_put(self._prompts_PxT[p],
                                                            self._replicated))
      for local in pipeline.labeled_batches(self._data_config, self._cfg.split, self._image_size,
                                            self._cfg.batch_size, self._cfg.label_key):
        batch = sharding.global_batch_from_local(local, self._mesh)
        inputs = (batch["image"], batch["label"], batch["valid"])
        for p in self.prefixes:
          if self._caption:
            correct_PxA[p] += np.asarray(jax.device_get(
                self._caption_hits(params, prompts[p], logp_txt[p], *inputs)))
          if self._embed:
            correct_P[p] += int(jax.device_get(self._embed_hits(params, classes[p], *inputs)))
    total = len(sources.open_split(self._data_config, self._cfg.split))  # Each image once.
    metrics = {}
    for p in self.prefixes:
      if self._embed:
        metrics[metric_name(self.name, prefix=p)] = correct_P[p] / total
      if self._caption:
        metrics.update({metric_name(self.name, a, p): float(c) / total
                        for a, c in zip(self.alphas, correct_PxA[p])})
    return metrics
