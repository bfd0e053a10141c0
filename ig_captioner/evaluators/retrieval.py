"""Zero-shot image-text retrieval: Recall@k in both directions on a split whose records hold an
image and several captions (`captions_key`; a nested one reads 'outer/inner', as COCO's
'captions/text').

- Candidates: identical caption texts are one candidate, relevant to every image they caption
  (on the embedded digits data all images of a class share their captions, so retrieval there is
  class-level; on COCO-like data exact duplicates are rare and this is the usual protocol).
  Image->text queries are the images; text->image queries are the distinct texts.
- Scores: cosine similarity of the embeddings (`models.EMBED_FNS`), or for captioners
  (`models.CAPTION_FNS`) s(t, I) = log P(t|I) - alpha * log P(t) over all pairs. For text->image
  the query text is fixed, so alpha * log P(t) is the same for every candidate image: alpha
  cannot change that ranking, and text->image metrics carry no alpha.
- Rank: the number of irrelevant candidates scoring at least as high as the query's best
  relevant candidate (ties count against the model); Recall@k is the fraction of queries whose
  rank is below k.
Metrics: `retrieval/<name>/{i2t,t2i}_r<k>`, and for captioners `i2t_r<k>_alpha<alpha>`.

CLIP_benchmark's protocol is reported beside it (evaluators/protocol_metrics.py), from the same
scores: every caption its own candidate (duplicates apart, each relevant only to its own
image), `retrieval/<name>/text_retrieval_recall@<k>` (image queries; `_alpha<alpha>` for
captioners) and `retrieval/<name>/image_retrieval_recall@<k>` (caption queries); ties in
index order. On COCO or Flickr these are the published protocol's figures; on data whose
images share caption texts (the embedded digits) only the merged variant is meaningful.

With `prefixes`, the texts are read after each prefix-conditioning token, reported apart
(`retrieval/<name>/<prefix>_prefix/...`).

Shape letters: I images, U distinct texts, N captions (duplicates apart), B image batch,
E embedding width, Q queries, C candidates.
"""

import functools
from typing import Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.data import pipeline
from ig_captioner.data import records
from ig_captioner.data import sources
from ig_captioner.evaluators import base
from ig_captioner.evaluators import protocol_metrics
from ig_captioner.scoring import embeddings


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base.base_config(
      type="retrieval",
      split="retrieval",
      captions_key="captions",
      ks=(1, 5, 10),
      alphas=(0.0, 1.0),  # For caption scoring, image->text.
      prior="no_image",  # log P(t) from: "no_image" or "null_image" (as the zero-shot evaluator).
  )
  cfg.update(overrides)
  return cfg


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  base.validate_common(name, eval_config)
  ks = eval_config.get("ks", ())
  if not len(ks) or not all(isinstance(k, int) and k > 0 for k in ks):
    raise errors.ConfigError(f"config.evals.{name}.ks={ks!r} is invalid: it needs positive "
                             "integers (the k of Recall@k)")


def metric_name(name: str, direction: str, k: int, alpha: float | None = None,
                prefix: str | None = None) -> str:
  """Merged candidates: direction 'i2t' or 't2i'."""
  return protocol_name(name, f"{direction}_r{k}", alpha, prefix)


def protocol_name(name: str, metric: str, alpha: float | None = None,
                  prefix: str | None = None) -> str:
  """'retrieval/<name>[/<prefix>_prefix]/<metric>[_alpha<a>]'."""
  return (base.metric_stem("retrieval", name, prefix) + f"/{metric}" +
          ("" if alpha is None else f"_alpha{float(alpha)}"))


def recall_at_k(scores_QxC: np.ndarray, relevant_QxC: np.ndarray,
                ks: Sequence[int]) -> dict[int, float]:
  """{k: fraction of queries whose best relevant candidate has fewer than k irrelevant candidates
  scoring at least as high}. Every query needs at least one relevant candidate. Non-finite
  scores raise FloatingPointError (a NaN compares false, so it would rank as a hit)."""
  if not np.isfinite(scores_QxC).all():
    raise FloatingPointError(f"{np.size(scores_QxC) - np.isfinite(scores_QxC).sum()} of "
                             f"{np.size(scores_QxC)} retrieval scores are NaN or infinite: the "
                             "params (or the inputs) are broken")
  best_Q = np.where(relevant_QxC, scores_QxC, -np.inf).max(axis=1)
  rank_Q = np.sum(~relevant_QxC & (scores_QxC >= best_Q[:, None]), axis=1)
  return {k: float(np.mean(rank_Q < k)) for k in ks}


def read_captions(source, captions_key: str
                  ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
  """(distinct texts in order of appearance, relevant_IxU: image i has text u as a caption,
  image_N and text_N: the image and the distinct text of every caption, in record order)."""
  per_image = []
  for i in range(len(source)):
    per_image.append(records.texts(records.field(source[i], captions_key)))
  texts = list(dict.fromkeys(c for captions in per_image for c in captions))
  position = {t: u for u, t in enumerate(texts)}
  relevant_IxU = np.zeros((len(per_image), len(texts)), bool)
  for i, captions in enumerate(per_image):
    relevant_IxU[i, [position[c] for c in captions]] = True
  image_N = np.array([i for i, captions in enumerate(per_image) for _ in captions], np.int64)
  text_N = np.array([position[c] for captions in per_image for c in captions], np.int64)
  return texts, relevant_IxU, image_N, text_N


class Evaluator(base.EvaluatorBase):
  """Recall@k both ways on `eval_config.split` of `config.data` (+ `eval_config.data`)."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh: jax.sharding.Mesh,
               tokenizer):
    super().__init__(name, eval_config, config, predict_fns, mesh, "retrieval")
    source = sources.open_split(self._data_config, eval_config.split)
    texts, self._relevant_IxU, self._image_N, self._text_N = read_captions(
        source, eval_config.captions_key)
    # Long captions are cut to the model's length, as in training.
    self.prefixes = tuple(eval_config.get("prefixes", (None,)))
    self._texts_UxT = {p: tokenizer.encode_batch(texts, config.model.max_text_len, prefix=p)
                       for p in self.prefixes}
    self._replicated = NamedSharding(mesh, P())
    chunk = int(eval_config.prompt_chunk)

    if self._caption:
      self._scorers = {p: base.prompt_scorer(predict_fns, self._texts_UxT[p], None,
                                                eval_config, mesh, self._image_size,
                                                tokenizer.unscored_ids)
                       for p in self.prefixes}
      scorer = self._scorers[self.prefixes[0]]  # Same shapes for every prefix.

      def caption_scores(params, inputs, images):
        visual = predict_fns["encode_images"](params, images)
        return scorer.image_text_logprobs(params, visual, inputs)

      self._text_only = jax.jit(scorer.text_logprobs, out_shardings=self._replicated)
      self._caption_scores = jax.jit(caption_scores, out_shardings=self._replicated)

    if self._embed:
      def embed_texts(params, texts_UxT):
        return embeddings.embed_texts_chunked(predict_fns["embed_texts"], params, texts_UxT, chunk)

      def similarities(params, z_txt_UxE, images):
        return predict_fns["embed_images"](params, images) @ z_txt_UxE.T

      self._embed_texts = jax.jit(embed_texts, out_shardings=self._replicated)
      self._similarities = jax.jit(similarities, out_shardings=self._replicated)

  def _score_rows(self, score_fns: dict) -> dict:
    """{key: score_fn(global image batch) -> B x U}, stacked for every image (I x U), in one
    pass over the images."""
    rows = {key: [] for key in score_fns}
    num_images, size = self._relevant_IxU.shape[0], self._cfg.batch_size
    for b, local in enumerate(pipeline.labeled_batches(
        self._data_config, self._cfg.split, self._image_size, size, label_key=None)):
      batch = sharding.global_batch_from_local(local, self._mesh)
      valid_B = np.arange(b * size, (b + 1) * size) < num_images  # Rows are in record order.
      for key, score_fn in score_fns.items():
        rows[key].append(np.asarray(jax.device_get(score_fn(batch["image"])))[valid_B])
    return {key: np.concatenate(r) for key, r in rows.items()}

  def _recalls(self, scores_IxU: np.ndarray, alpha: float | None, prefix: str | None,
               both: bool) -> dict:
    out = {metric_name(self.name, "i2t", k, alpha, prefix): r
           for k, r in recall_at_k(scores_IxU, self._relevant_IxU, self._cfg.ks).items()}
    if both:
      out.update({metric_name(self.name, "t2i", k, prefix=prefix): r for k, r in recall_at_k(
          scores_IxU.T, self._relevant_IxU.T, self._cfg.ks).items()})
    # CLIP_benchmark's: every caption a candidate (a duplicate text scores as its first copy).
    protocol = protocol_metrics.caption_retrieval(scores_IxU[:, self._text_N], self._image_N,
                                                  self._cfg.ks, text_only=not both)
    out.update({protocol_name(self.name, m, alpha if m.startswith("text") else None, prefix): r
                for m, r in protocol.items()})
    return out

  def run(self, params) -> dict[str, float]:
    metrics, score_fns, logp_txt_U = {}, {}, {}
    with sharding.activate(self._mesh):
      for p in self.prefixes:
        texts_UxT = jax.device_put(self._texts_UxT[p], self._replicated)
        if self._embed:
          z_txt_UxE = self._embed_texts(params, texts_UxT)
          score_fns[("embedding", p)] = functools.partial(self._similarities, params, z_txt_UxE)
        if self._caption:
          inputs = jax.device_put(self._scorers[p].inputs, self._replicated)
          logp_txt_U[p] = np.asarray(jax.device_get(self._text_only(params, inputs)))
          score_fns[("caption", p)] = functools.partial(self._caption_scores, params, inputs)
      scores = self._score_rows(score_fns)
    for p in self.prefixes:
      if self._embed:
        metrics.update(self._recalls(scores[("embedding", p)], None, p, both=True))
      if self._caption:
        for i, alpha in enumerate(self.alphas):
          # t2i rankings do not depend on alpha (see the module docstring): computed once.
          metrics.update(self._recalls(scores[("caption", p)] - alpha * logp_txt_U[p][None],
                                       alpha, p, both=i == 0 and not self._embed))
    return metrics
