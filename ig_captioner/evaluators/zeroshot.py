"""Zero-shot classification, scored with whatever the model family supplies:

- embeddings (`models.EMBED_FNS`: CLIP, SigLIP) follow CLIP's recipe (Radford et al., 2021): a
  class embedding is the L2-normalised mean of its templates' normalised text embeddings, and an
  image's classes rank by cosine similarity. Metrics `zeroshot/<name>/<metric>`.
- caption log-likelihoods (`models.CAPTION_FNS`: captioners) give the IG score
      s(c, I) = mean_k [log P(t_ck|I) - alpha * log P(t_ck)]
              = mean_k log P(t_ck|I) - alpha * mean_k log P(t_ck),
  the log of the geometric mean over templates k of the likelihood ratio, for every alpha of
  `alphas` from the same passes. log P(t) comes from the same decoder without visual tokens, once
  per prompt per checkpoint; the visual tokens once per image batch. Metrics
  `zeroshot/<name>/<metric>_alpha<alpha>`.
A family that supplies both gets both. <metric>: CLIP_benchmark's `acc1`, `acc5` (5 classes or
more) and `mean_per_class_recall` (evaluators/protocol_metrics.py; ties to the lower class).
Caption likelihoods come from the cached scorer (`scoring='cached'`, scoring/prompt_scoring.py;
`'reference'` decodes every pair in full, with the same numbers); `stream_blocks` streams large
prompt sets with progress and an ETA (scoring/prompt_streaming.py); `shortlist=k` is two-stage
scoring (scoring/shortlist.py), an approximation reported apart:
`zeroshot/<name>/shortlist<k>/acc1_alpha<alpha>` (and `mean_per_class_recall`) and
`.../shortlist<k>/recall`. With `prefixes`, every prompt is scored after each prefix-conditioning
token (for captioners the prior is then log P(t | prefix)), reported apart:
`zeroshot/<name>/<prefix>_prefix/acc1...`. Prompt ensembles beyond the equal average
(`weightings`: 'logmeanexp', 'zpe') and per-class descriptions (`descriptions`, CuPL's layout)
take the prompt-ensemble path (evaluators/prompt_ensembles.py), each under its own names:
`zeroshot/<name>[/descriptions]/<weighting>/acc1...`.

Shape letters: B images, C classes, K templates, P prompts (C x K, class-major), A alphas,
E embedding width, R ranks kept per image (min(5, C)).
"""

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.evaluators import base
from ig_captioner.evaluators import prompt_ensembles
from ig_captioner.evaluators import protocol_metrics
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import embeddings
from ig_captioner.scoring import prompt_scoring
from ig_captioner.scoring import prompt_streaming
from ig_captioner.scoring import shortlist


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base.base_config(
      type="zeroshot",
      label_key="label",
      # Class names in prompts: None, the ClassLabel's ('_' read as a space); "imagenet", the
      # package's human-readable ImageNet names (imagenet2012's labels are WordNet ids); else a
      # file with one name a line, in label order.
      class_names=ml_collections.FieldReference(None, field_type=str),
      # Prompt templates ({} = class name); the class score averages the per-template scores.
      templates=("a photo of the number {}", "a handwritten {}", "the digit {} written by hand"),
      alphas=(0.0, 0.5, 1.0),  # For caption scoring.
      # Caption scoring's log P(t): "no_image" (the decoder with cross-attention skipped, the
      # IG paper's) or "null_image" (the decoder given a blank mid-grey image: for captioners
      # never trained on text alone, such as converted public CoCa checkpoints).
      prior="no_image",
      # Large prompt sets (caption scoring, cached): > 0 streams this many suffix blocks per
      # jitted call with progress and an ETA (scoring/prompt_streaming.py); 0: one program.
      stream_blocks=0,
      # Two-stage scoring (scoring/shortlist.py), reported under its own names: > 0 keeps the
      # top `shortlist` classes by the IG score (alpha `shortlist_alpha`) of the first
      # `shortlist_templates` templates, then scores those with every template. 0: exact.
      shortlist=0,
      shortlist_templates=1,
      shortlist_alpha=1.0,
      # Prompt ensembles, each reported apart (evaluators/prompt_ensembles.py): "equal" (the
      # average above), "logmeanexp", "zpe" (weights from unlabelled images: the test split
      # and `zpe_images` of a pretraining sample, `zpe_data` overriding config.data, split
      # `zpe_split`, default its train split).
      weightings=("equal",),
      zpe_data=ml_collections.ConfigDict(),
      zpe_split=ml_collections.FieldReference(None, field_type=str),
      zpe_images=1024,
      # Per-class sentences instead of templates: a JSON file in CLIP_benchmark's
      # cupl_prompts.json layout (a bare name is looked up among the package's metadata too),
      # and its key (None: its only one).
      descriptions=ml_collections.FieldReference(None, field_type=str),
      descriptions_key=ml_collections.FieldReference(None, field_type=str),
  )
  cfg.update(overrides)
  return cfg


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  base.validate_common(name, eval_config)
  prompt_ensembles.validate(name, eval_config)
  for field in ("stream_blocks", "shortlist", "shortlist_templates"):
    value = eval_config.get(field, 0)
    if not isinstance(value, int) or value < 0:
      raise errors.ConfigError(f"config.evals.{name}.{field}={value!r} is invalid: it must be an "
                               "integer >= 0")
  if eval_config.get("shortlist", 0) and eval_config.get("scoring", "cached") != "cached":
    raise errors.ConfigError(f"config.evals.{name}.shortlist needs scoring='cached'")
  if eval_config.get("shortlist_templates", 1) > len(eval_config.get("templates", ())):
    raise errors.ConfigError(f"config.evals.{name}.shortlist_templates="
                             f"{eval_config.shortlist_templates} exceeds the "
                             f"{len(eval_config.templates)} templates")
  templates = eval_config.get("templates", ())
  if not len(templates) or not all("{}" in t for t in templates):
    raise errors.ConfigError(f"config.evals.{name}.templates={templates!r} is invalid: it needs "
                             "at least one template, each with a '{}' for the class name")


def metric_name(name: str, alpha: float | None = None, prefix: str | None = None,
                shortlist: int = 0, metric: str = "acc1") -> str:
  """'zeroshot/<name>[/<prefix>_prefix][/shortlist<k>]/<metric>[_alpha<a>]'."""
  return (base.metric_stem("zeroshot", name, prefix) +
          (f"/shortlist{shortlist}" if shortlist else "") + f"/{metric}" +
          ("" if alpha is None else f"_alpha{float(alpha)}"))


class _Ranks:
  """The best classes of every image seen, and its label, for the metrics at the end."""

  def __init__(self):
    self._top, self._labels = [], []

  def add(self, top_XxBxR, labels_B, valid_B) -> None:
    """top_XxBxR: ranks per image (X: alphas, or none), best first, of one global batch."""
    valid_B = np.asarray(valid_B, bool)
    self._top.append(np.asarray(top_XxBxR)[..., valid_B, :])
    self._labels.append(np.asarray(labels_B)[valid_B])

  def metrics(self, num_classes: int) -> list[dict[str, float]]:
    """protocol_metrics.classification per alpha (one dict without alphas)."""
    top = np.concatenate(self._top, axis=-2)
    labels_B = np.concatenate(self._labels)
    if top.ndim == 2:
      return [protocol_metrics.classification(top, labels_B, num_classes)]
    return [protocol_metrics.classification(t, labels_B, num_classes) for t in top]


class Evaluator(base.EvaluatorBase):
  """Zero-shot classification (CLIP_benchmark's metrics) on `eval_config.split` of
  `config.data` (+ `eval_config.data`)."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh: jax.sharding.Mesh,
               tokenizer):
    super().__init__(name, eval_config, config, predict_fns, mesh, "zeroshot")
    self.class_names = sources.readable_class_names(self._data_config, eval_config.label_key,
                                                    eval_config.get("class_names"))
    self.prompts = class_scores.class_prompts(self.class_names, eval_config.templates)
    self._ensembles = None
    if prompt_ensembles.wanted(eval_config):
      self._ensembles = prompt_ensembles.PromptEnsembles(
          name, eval_config, config, predict_fns, mesh, tokenizer, self.class_names,
          self._data_config, self._caption, self._embed, self.alphas)
    self._templates_path = not eval_config.get("descriptions")
    prompts = self.prompts
    self.prefixes = tuple(eval_config.get("prefixes", (None,)))
    prompts_PxT = {p: tokenizer.encode_batch(prompts, config.model.max_text_len, strict=True,
                                             prefix=p) for p in self.prefixes}
    self._prompts_PxT = prompts_PxT
    self._replicated = NamedSharding(mesh, P())
    chunk, num_classes = int(eval_config.prompt_chunk), len(self.class_names)
    ranks = min(protocol_metrics.TOP_K, num_classes)

    # Prompts are arguments, not constants baked into the compiled programs (ImageNet with 80
    # templates has 80k of them).
    self._shortlist = int(eval_config.get("shortlist", 0))
    self._streamers = {}
    if self._caption:
      # Template k's prompts share its words before the class name: one group each.
      num_templates = len(eval_config.templates)
      groups_P = np.arange(len(prompts)) % num_templates
      self._scorers = {p: base.prompt_scorer(predict_fns, prompts_PxT[p], groups_P,
                                                eval_config, mesh, self._image_size,
                                                tokenizer.unscored_ids)
                       for p in self.prefixes}
      scorer = self._scorers[self.prefixes[0]]  # Same shapes for every prefix.
      self._text_only = jax.jit(scorer.text_logprobs, out_shardings=self._replicated)

      def top(scores_AxBxC, labels, valid):  # Ties: the lower class first (lax.top_k).
        return jax.lax.top_k(scores_AxBxC, ranks)[1], labels, valid

      def caption_top(params, inputs, logp_txt_P, images, labels, valid):
        visual = predict_fns["encode_images"](params, images)
        logp_img_BxP = scorer.image_text_logprobs(params, visual, inputs)
        scores_AxBxC = class_scores.ig_class_scores(logp_img_BxP, logp_txt_P, num_classes,
                                                    self.alphas)
        return top(scores_AxBxC, labels, valid)

      self._caption_top = jax.jit(caption_top, out_shardings=self._replicated)
      if int(eval_config.get("stream_blocks", 0)) and not self._shortlist:
        def cached(p):  # Streaming runs the cached path whatever `scoring` says.
          scorer = self._scorers[p]
          return scorer if scorer.plan is not None else prompt_scoring.PromptScorer(
              predict_fns, prompts_PxT[p], groups_P, images_per_device=scorer.images_per_device,
              block_tokens=int(eval_config.block_tokens), unscored_ids=scorer.unscored_ids)

        self._streamers = {p: prompt_streaming.StreamingScorer(
            predict_fns, cached(p), int(eval_config.stream_blocks), self._replicated)
            for p in self.prefixes}
        self._encode = jax.jit(predict_fns["encode_images"])
        self._top_from_logp = jax.jit(
            lambda logp_img, logp_txt, labels, valid: top(
                class_scores.ig_class_scores(logp_img, logp_txt, num_classes, self.alphas),
                labels, valid),
            out_shardings=self._replicated)
      if self._shortlist:
        self._setup_shortlist(predict_fns, eval_config, prompts_PxT, num_classes, num_templates)

    if self._embed:
      def classes(params, prompts_PxT):
        z_PxE = embeddings.embed_texts_chunked(predict_fns["embed_texts"], params, prompts_PxT,
                                            chunk)
        return class_scores.class_embeddings(z_PxE, num_classes)

      def embed_top(params, classes_CxE, images, labels, valid):
        sims_BxC = predict_fns["embed_images"](params, images) @ classes_CxE.T
        return jax.lax.top_k(sims_BxC, ranks)[1], labels, valid

      self._classes = jax.jit(classes, out_shardings=self._replicated)
      self._embed_top = jax.jit(embed_top, out_shardings=self._replicated)

  def run(self, params) -> dict[str, float]:
    metrics = self._run_templates(params) if self._templates_path else {}
    if self._ensembles:
      metrics.update(self._ensembles.run(params))
    return metrics

  def _run_templates(self, params) -> dict[str, float]:
    caption_ranks = {p: _Ranks() for p in self.prefixes}
    self._recall = {p: 0 for p in self.prefixes}
    embed_ranks = {p: _Ranks() for p in self.prefixes}
    total = len(sources.open_split(self._data_config, self._cfg.split))  # Each image once.
    self._progress = None
    if self._streamers or self._shortlist:
      self._progress = prompt_streaming.Progress(
          f"zeroshot/{self.name}", total, len(self._prompts_PxT[self.prefixes[0]]))
    with sharding.activate(self._mesh):
      prompts, logp_txt, classes = {}, {}, {}
      for p in self.prefixes:
        if self._caption:  # log P(t): once per checkpoint, reused for every image batch.
          prompts[p] = jax.device_put(self._scorers[p].inputs, self._replicated)
          logp_txt[p] = self._text_only(params, prompts[p])
          if self._shortlist:
            self._stage1_txt[p] = self._stage1_text(params, self._stage1_inputs[p])
        if self._embed:
          classes[p] = self._classes(params, jax.device_put(self._prompts_PxT[p],
                                                            self._replicated))
      for local in pipeline.labeled_batches(self._data_config, self._cfg.split, self._image_size,
                                            self._cfg.batch_size, self._cfg.label_key):
        batch = sharding.global_batch_from_local(local, self._mesh)
        inputs = (batch["image"], batch["label"], batch["valid"])
        if self._progress:
          self._progress.update(int(local["valid"].sum()) * jax.process_count())
        for p in self.prefixes:
          if self._caption:
            caption_ranks[p].add(*self._caption_batch(params, p, prompts[p], logp_txt[p],
                                                      inputs))
          if self._embed:
            embed_ranks[p].add(*jax.device_get(self._embed_top(params, classes[p], *inputs)))
    metrics, num_classes = {}, len(self.class_names)
    for p in self.prefixes:
      if self._embed:
        (values,) = embed_ranks[p].metrics(num_classes)
        metrics.update({metric_name(self.name, None, p, metric=m): v for m, v in values.items()})
      if self._caption:
        for a, values in zip(self.alphas, caption_ranks[p].metrics(num_classes)):
          metrics.update({metric_name(self.name, a, p, self._shortlist, m): v
                          for m, v in values.items()})
      if self._shortlist:
        metrics[metric_name(self.name, None, p, self._shortlist, "recall")] = (
            self._recall[p] / total)
    return metrics

  def _caption_batch(self, params, prefix, inputs, logp_txt_P, batch) -> tuple:
    """(best classes per alpha A x B x R, labels, valid) of one global image batch (images,
    labels, valid); R is 1 with a shortlist."""
    if self._shortlist:
      pred_AxB, kept, labels, valid = jax.device_get(self._shortlist_top(
          params, self._stage1_inputs[prefix], self._stage1_txt[prefix], self._tables[prefix],
          logp_txt_P, *batch))
      self._recall[prefix] += int(kept)
      return np.asarray(pred_AxB)[..., None], labels, valid
    if self._streamers:
      visual = self._encode(params, batch[0])
      logp_img = jax.device_put(self._streamers[prefix].image_text_logprobs(params, visual),
                                self._replicated)
      return jax.device_get(self._top_from_logp(logp_img, logp_txt_P, *batch[1:]))
    return jax.device_get(self._caption_top(params, inputs, logp_txt_P, *batch))

  def _setup_shortlist(self, predict_fns, eval_config, prompts_PxT, num_classes, num_templates):
    """Stage 1: a cached scorer of the first `shortlist_templates` templates; stage 2: every
    template's suffix table (see scoring/shortlist.py)."""
    k1 = int(eval_config.shortlist_templates)
    size = min(self._shortlist, num_classes)
    keep_P = (np.arange(num_classes * num_templates) % num_templates) < k1
    stage1 = {p: base.prompt_scorer(predict_fns, prompts_PxT[p][keep_P],
                                       np.arange(num_classes * k1) % k1, eval_config, self._mesh,
                                       self._image_size, self._scorers[p].unscored_ids)
              for p in self.prefixes}
    self._tables = {p: jax.device_put(shortlist.suffix_tables(prompts_PxT[p], num_templates),
                                      self._replicated) for p in self.prefixes}
    scorer = stage1[self.prefixes[0]]
    self._stage1_inputs = {p: jax.device_put(stage1[p].inputs, self._replicated)
                           for p in self.prefixes}
    self._stage1_text = jax.jit(scorer.text_logprobs, out_shardings=self._replicated)
    self._stage1_txt = {}
    alpha1 = float(eval_config.shortlist_alpha)

    def shortlist_top(params, inputs1, logp_txt1, tables, logp_txt_P, images, labels, valid):
      visual = predict_fns["encode_images"](params, images)
      stage1_BxC = class_scores.ig_class_scores(
          scorer.image_text_logprobs(params, visual, inputs1), logp_txt1, num_classes,
          (alpha1,))[0]
      _, shortlist_BxS = jax.lax.top_k(stage1_BxC, size)
      logp_img = shortlist.shortlisted_logprobs(predict_fns, params, visual, tables,
                                                shortlist_BxS, scorer.unscored_ids)
      pred_AxB = shortlist.predictions(logp_img, logp_txt_P, shortlist_BxS, self.alphas,
                                       num_templates)
      kept = ((shortlist_BxS == labels[:, None]).any(-1) & valid).sum()
      return pred_AxB, kept, labels, valid

    self._shortlist_top = jax.jit(shortlist_top, out_shardings=self._replicated)
