"""Zero-shot classification by (IG) caption scoring, for a grid of alpha in one pass.

Per checkpoint: log P(t) of every class prompt once (text-only decoder); per image batch: the
visual tokens once, log P(t|I) for every (image, prompt) pair, then top-1 for every alpha.
Yields `(f"zeroshot/{name}/top1_alpha{alpha}", accuracy)`.
"""

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import scoring
from ig_captioner import sharding
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import verify


def metric_name(name: str, alpha: float) -> str:
  return f"zeroshot/{name}/top1_alpha{float(alpha)}"


class Evaluator:
  """Zero-shot top-1 on `eval_config.split` of the data set `config.data` (+ `eval_config.data`)."""

  def __init__(self, name: str, eval_config: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh,
               tokenizer: tokenizer_lib.Tokenizer):
    self.name = name
    self._cfg = eval_config
    self._data_config = config.data.copy_and_resolve_references()
    self._data_config.update(eval_config.get("data", {}))
    self._image_size = config.model.image_size
    self._mesh = mesh
    self.alphas = tuple(float(a) for a in eval_config.alphas)
    verify.verify_split(self._data_config, eval_config.split)  # Before the first checkpoint.
    self.class_names = sources.class_names(self._data_config, eval_config.label_key)
    prompts = [t.format(c) for c in self.class_names for t in eval_config.templates]  # Class-major.
    self._prompts_PxT = tokenizer.encode_batch(prompts, config.model.max_text_len, strict=True)
    if eval_config.batch_size % sharding.batch_axis_size(mesh):
      raise ValueError(f"config.evals.{name}.batch_size={eval_config.batch_size} is not divisible "
                       f"by the mesh's batch axes ({sharding.batch_axis_size(mesh)})")
    chunk = int(eval_config.prompt_chunk)
    self._replicated = NamedSharding(mesh, P())

    # Prompts are arguments, not constants baked into the compiled programs (ImageNet with 80
    # templates has 80k of them).
    def text_only(params, prompts_PxT):
      return scoring.text_only_logprobs(model, params, prompts_PxT, chunk)

    def correct_counts(params, prompts_PxT, logp_txt_P, images, labels, valid):
      visual = model.apply({"params": params}, images, method="encode")
      logp_img_BxP = scoring.image_logprobs(model, params, visual, prompts_PxT, chunk)
      scores_AxBxC = scoring.class_scores(logp_img_BxP, logp_txt_P, len(self.class_names),
                                          self.alphas)
      hits_AxB = (jnp.argmax(scores_AxBxC, axis=-1) == labels[None]) & valid[None]
      return hits_AxB.sum(axis=-1), valid.sum()

    self._text_only = jax.jit(text_only, out_shardings=self._replicated)
    self._correct_counts = jax.jit(correct_counts, out_shardings=self._replicated)

  def run(self, params) -> Iterator[tuple[str, float]]:
    with sharding.activate(self._mesh):
      prompts_PxT = jax.device_put(self._prompts_PxT, self._replicated)
      # log P(t): once per checkpoint, reused for every image batch.
      logp_txt_P = self._text_only(params, prompts_PxT)
      correct_A = np.zeros(len(self.alphas), np.int64)
      total = 0
      for local in pipeline.labeled_batches(self._data_config, self._cfg.split, self._image_size,
                                            self._cfg.batch_size, self._cfg.label_key):
        batch = sharding.global_batch_from_local(local, self._mesh)
        hits_A, count = jax.device_get(self._correct_counts(
            params, prompts_PxT, logp_txt_P, batch["image"], batch["label"], batch["valid"]))
        correct_A += np.asarray(hits_A)
        total += int(count)
    for alpha, correct in zip(self.alphas, correct_A):
      yield metric_name(self.name, alpha), float(correct) / total
