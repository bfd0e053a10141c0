"""Caption generation (`type='caption_generation'`, named 'captioning' before 0.2): generate a
caption per image (`scoring.generation`, KV cache) and score it against the image's reference
captions with CIDEr-D and BLEU-4 (`caption_metrics`).

Decoding is greedy (`beam_size=1`) or beam search with a GNMT length penalty; each alpha of
`alphas` decodes once, ranking hypotheses by log P(t|I) - alpha * log P(t) (IG-guided decoding;
alpha 0 is plain decoding). With `prefixes`, decoding starts after that prefix-conditioning
token (prefix conditioning is tested with the caption prefix). Metrics:
`captioning/<name>/{cider_d,bleu4,words}_alpha<alpha>` (words: mean caption length).

Shape letters: B images, T text length.
"""

import logging

import jax
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
from ig_captioner.evaluators import caption_metrics
from ig_captioner.scoring import generation


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base.base_config(
      type="caption_generation",
      split="retrieval",
      captions_key="captions",
      max_tokens=None,  # Generated tokens at most (None: the model's text length allows).
      beam_size=1,  # 1: greedy.
      length_penalty=0.6,
      alphas=(0.0,),  # IG-guided decoding weights (0: plain decoding).
      num_examples=3,  # Captions logged per run.
  )
  cfg.update(overrides)
  return cfg


def validate(name: str, eval_config: ml_collections.ConfigDict) -> None:
  base.validate_common(name, eval_config)
  beam = eval_config.get("beam_size")
  if not isinstance(beam, int) or beam <= 0:
    raise errors.ConfigError(f"config.evals.{name}.beam_size={beam!r} must be a positive "
                             "integer (1: greedy)")
  max_tokens = eval_config.get("max_tokens")
  if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
    raise errors.ConfigError(f"config.evals.{name}.max_tokens={max_tokens!r} must be None or a "
                             "positive integer")


def metric_name(name: str, metric: str, alpha: float, prefix: str | None = None) -> str:
  return base.metric_stem("captioning", name, prefix) + f"/{metric}_alpha{float(alpha)}"


class Evaluator(base.EvaluatorBase):
  """CIDEr-D and BLEU-4 of generated captions on `eval_config.split`."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, predict_fns: dict, mesh: jax.sharding.Mesh,
               tokenizer):
    super().__init__(name, eval_config, config, predict_fns, mesh, "caption_generation")
    models.require(predict_fns, models.CAPTION_FNS + models.CACHE_FNS,
                   f"config.evals.{name} (caption_generation)", config.model.name)
    source = sources.open_split(self._data_config, eval_config.split)
    self._references = [records.texts(records.field(source[i], eval_config.captions_key))
                        for i in range(len(source))]
    self._tokenizer = tokenizer
    self.prefixes = tuple(eval_config.get("prefixes", (None,)))
    text_len = config.model.max_text_len
    replicated = NamedSharding(mesh, P())
    self._generate = {}
    for prefix in self.prefixes:
      start = token_ids.start_tokens(prefix)
      max_tokens = eval_config.max_tokens or text_len - len(start)
      for alpha in self.alphas:
        decode = generation.DecodeConfig(max_tokens=max_tokens, beam_size=eval_config.beam_size,
                                         length_penalty=float(eval_config.length_penalty),
                                         ig_alpha=alpha)

        def captions(params, images, decode=decode, start=start):
          visual = predict_fns["encode_images"](params, images)
          return generation.generate(predict_fns, params, visual, decode, text_len, start)[0]

        self._generate[prefix, alpha] = jax.jit(captions, out_shardings=replicated)

  def run(self, params) -> dict[str, float]:
    texts = {key: [] for key in self._generate}
    num_images, size = len(self._references), self._cfg.batch_size
    with sharding.activate(self._mesh):
      for b, local in enumerate(pipeline.labeled_batches(
          self._data_config, self._cfg.split, self._image_size, size, label_key=None)):
        batch = sharding.global_batch_from_local(local, self._mesh)
        valid_B = np.arange(b * size, (b + 1) * size) < num_images  # Rows are in record order.
        for key, generate in self._generate.items():
          tokens_BxT = np.asarray(jax.device_get(generate(params, batch["image"])))[valid_B]
          texts[key].extend(self._tokenizer.decode(t) for t in tokens_BxT)
    metrics = {}
    for (prefix, alpha), captions in texts.items():
      scores = caption_metrics.score(captions, self._references)
      scores["words"] = float(np.mean([len(caption_metrics.normalize(c).split())
                                       for c in captions]))
      metrics.update({metric_name(self.name, k, alpha, prefix): v for k, v in scores.items()})
      for i in range(min(int(self._cfg.num_examples), len(captions))):
        logging.info("%s alpha=%s prefix=%s image %d: %r (reference %r)", self.name, alpha,
                     prefix, i, captions[i], self._references[i][0])
    return metrics

