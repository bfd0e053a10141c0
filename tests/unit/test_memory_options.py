"""The memory options of the captioner family: the chunked cross-entropy
(`config.objective.logits_chunk`) and block rematerialisation (`config.model.remat`) give the
loss and the gradients of the plain path; a bad value is refused by name."""

import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import token_ids
from tests import helpers


def _config(family: str, chunk: int = 0, remat: str = "none") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = helpers.tiny_model_config(remat=remat, max_text_len=12)
  if family == "cappa":
    config.objective = ml_collections.ConfigDict(dict(
        name="cappa", parallel_fraction=0.5, text_only_weight=1.0, logits_chunk=chunk))
  else:
    config.objective = ml_collections.ConfigDict(dict(
        name="captioning", text_only_weight=1.0, text_only_fraction=0.5,
        logits_chunk=chunk))
  return config


def _batch():
  rng = np.random.default_rng(3)
  tokens = helpers.random_tokens(rng, 6, 12, 32)
  return {"image": rng.normal(size=(6, 16, 16, 3)).astype(np.float32), "tokens": tokens,
          "target_mask": token_ids.scored_targets(tokens)}


def _loss_and_grads(config, params, batch):
  model = helpers.jitted(models.build(config.model))
  loss_fn = objectives.make_loss(config, model.predict_fns)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: loss_fn(p, batch, jax.random.key(0), 0), has_aux=True))(params)
  return loss, metrics, grads


@pytest.mark.parametrize("family,chunk,remat", [
    ("captioning", 4, "none"),  # 11 positions: 3 chunks, the last one padded.
    ("captioning", 0, "block"),
    ("cappa", 64, "block")])  # One chunk longer than the sequence.
def test_memory_options_keep_loss_and_gradients(family, chunk, remat):
  params = helpers.random_params(
      helpers.jitted(models.build(helpers.tiny_model_config(max_text_len=12))))
  batch = _batch()
  loss, metrics, grads = _loss_and_grads(_config(family), params, batch)
  loss_o, metrics_o, grads_o = _loss_and_grads(_config(family, chunk, remat), params, batch)
  np.testing.assert_allclose(loss_o, loss, rtol=1e-5)
  for name in metrics:
    np.testing.assert_allclose(metrics_o[name], metrics[name], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads_o, grads)


def test_bad_memory_options_are_refused_by_name():
  with pytest.raises(errors.ConfigError, match=r"config.objective.logits_chunk=-1 is invalid"):
    objectives.validate(_config("captioning", chunk=-1))
  with pytest.raises(errors.ConfigError, match=r"config.model.remat='all' is not one of"):
    helpers.jitted(models.build(helpers.tiny_model_config(remat="all")))
  config = _config("captioning", chunk=4)
  config.objective.name = "contrastive_captioning"
  config.objective.update(contrastive_weight=1.0, caption_weight=2.0, max_temperature=100.0)
  with pytest.raises(errors.ConfigError,
                     match=r"logits_chunk is not supported by 'contrastive_captioning'"):
    objectives.validate(config)
