"""IG zero-shot scores against an independent per-pair numpy computation."""

import numpy as np
import pytest

from ig_captioner import scoring
from ig_captioner.models import captioner
from tests import helpers
from tests.test_objective import numpy_sequence_logprob


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_ig_scores_match_per_pair_numpy(chunk):
  model = captioner.build(helpers.tiny_model_config())
  params = helpers.random_params(model)
  rng = np.random.default_rng(0)
  num_classes, num_templates, num_images = 3, 2, 5
  prompts = helpers.random_tokens(rng, num_classes * num_templates, 8, 32)  # Class-major.
  images = rng.normal(size=(num_images, 16, 16, 3)).astype(np.float32)
  alphas = (0.0, 0.5, 1.0, 2.0)

  visual = model.apply({"params": params}, images, method="encode")
  logp_txt = scoring.text_only_logprobs(model, params, prompts, chunk)
  logp_img = scoring.image_logprobs(model, params, visual, prompts, chunk)
  scores = np.asarray(scoring.class_scores(logp_img, logp_txt, num_classes, alphas))

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
  scores = np.asarray(scoring.class_scores(logp_img, log_prior, 3, (0.0, 1.0)))
  assert scores[0].argmax() == 0  # The captioner picks the frequent class...
  assert scores[1].argmax() == 1  # ...IG picks the class the image supports.
  np.testing.assert_allclose(scores[1] - scores[1].max(), log_lik - log_lik.max(), rtol=1e-6)
