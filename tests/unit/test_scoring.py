"""IG zero-shot scores (the captioner's predict functions and the zero-shot evaluator's class
scores) against an independent per-pair numpy computation; CLIP's prompt ensemble."""

import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import token_ids
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import likelihood
from tests import helpers
from tests.unit.test_objective import numpy_sequence_logprob


def _model_and_params(family: str):
  """A tiny model of the family and its params (for CapPa: after one CapPa update)."""
  config = helpers.tiny_family_config(family)
  built = helpers.jitted(models.build(config))
  params = helpers.random_params(built)
  if family == "cappa":
    rng = np.random.default_rng(5)
    tokens = helpers.random_tokens(rng, 4, 8, 32)
    batch = {"image": rng.normal(size=(4, 16, 16, 3)).astype(np.float32), "tokens": tokens,
             "target_mask": token_ids.scored_targets(tokens)}
    loss_fn = objectives.make_loss(ml_collections.ConfigDict(dict(model=config, objective=dict(
        name="cappa", parallel_fraction=0.5, text_only_weight=1.0))), built.predict_fns)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0]))(params)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  return built, params


@pytest.mark.parametrize("family,chunk", [("captioner", 1), ("captioner", 4), ("captioner", 64),
                                          ("coca", 4), ("cappa", 4)])
def test_ig_scores_match_per_pair_numpy(family, chunk):
  built, params = _model_and_params(family)
  model, predict = built.module, built.predict_fns
  rng = np.random.default_rng(0)
  num_classes, num_templates, num_images = 3, 2, 5
  prompts = helpers.random_tokens(rng, num_classes * num_templates, 8, 32)  # Class-major.
  images = rng.normal(size=(num_images, 16, 16, 3)).astype(np.float32)
  alphas = (0.0, 0.5, 1.0, 2.0)

  visual = predict["encode_images"](params, images)
  logp_txt = likelihood.text_logprobs(predict, params, prompts, chunk)
  logp_img = likelihood.image_text_logprobs(predict, params, visual, prompts, chunk)
  scores = np.asarray(class_scores.ig_class_scores(logp_img, logp_txt, num_classes, alphas))

  # Reference: one decoder call per (image, prompt) pair, numpy log-softmax, numpy template mean.
  ref_txt = np.array([numpy_sequence_logprob(
      np.asarray(model.apply({"params": params}, p[None, :-1], None, method="decode")),
      p[None, 1:])[0] for p in prompts])
  ref_img = np.array([[numpy_sequence_logprob(
      np.asarray(model.apply({"params": params}, p[None, :-1], visual[i:i + 1], method="decode")),
      p[None, 1:])[0] for p in prompts] for i in range(num_images)])
  np.testing.assert_allclose(logp_txt, ref_txt, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logp_img, ref_img, rtol=1e-5, atol=1e-5)
  for a, alpha in enumerate(alphas):
    ref = np.stack([
        (ref_img[:, c * num_templates:(c + 1) * num_templates]
         - alpha * ref_txt[c * num_templates:(c + 1) * num_templates]).mean(-1)
        for c in range(num_classes)], axis=-1)
    np.testing.assert_allclose(scores[a], ref, rtol=1e-5, atol=1e-4)


def test_ig_score_removes_a_class_prior():
  # Analytic case: log P(t|I) = log P(I|t) + log P(t) - log P(I). With alpha=1 the prior cancels.
  log_prior = np.log(np.array([0.7, 0.2, 0.1]))
  log_lik = np.log(np.array([[0.2, 0.5, 0.3]]))  # log P(I|c) for one image (true class 1).
  logp_img = log_lik + log_prior - np.log(np.exp(log_lik + log_prior).sum())
  scores = np.asarray(class_scores.ig_class_scores(logp_img, log_prior, 3, (0.0, 1.0)))
  assert scores[0].argmax() == 0  # The captioner picks the frequent class...
  assert scores[1].argmax() == 1  # ...IG picks the class the image supports.
  np.testing.assert_allclose(scores[1] - scores[1].max(), log_lik - log_lik.max(), rtol=1e-6)


def test_clip_prompt_ensemble_is_the_normalised_mean_of_normalised_templates():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3 * 4, 5))
  z /= np.linalg.norm(z, axis=1, keepdims=True)  # 3 classes x 4 templates, class-major.
  classes = np.asarray(class_scores.class_embeddings(z.astype(np.float32), 3))
  for c in range(3):
    mean = z[4 * c:4 * (c + 1)].mean(0)
    np.testing.assert_allclose(classes[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
