"""The IG objective against a numpy reference, and the lambda=0 fast path."""

import jax
import numpy as np
import pytest

from ig_captioner import objective
from ig_captioner.models import captioner
from tests import helpers


def numpy_sequence_logprob(logits_BxLxV, targets_BxL):
  """Reference: log-softmax by hand, sum over targets up to and including EOS, never PAD."""
  logits = logits_BxLxV.astype(np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  out = np.zeros(logits.shape[0])
  for b in range(logits.shape[0]):
    for i, t in enumerate(targets_BxL[b]):
      if t == objective.PAD_ID:
        break
      out[b] += logp[b, i, t]
  return out


def test_sequence_logprob_matches_numpy():
  rng = np.random.default_rng(0)
  tokens = helpers.random_tokens(rng, 5, 9, 20)
  logits = rng.normal(size=(5, 8, 20)).astype(np.float32) * 3
  inputs, targets = objective.inputs_and_targets(tokens)
  np.testing.assert_array_equal(inputs, tokens[:, :-1])
  np.testing.assert_allclose(objective.sequence_logprob(logits, targets),
                             numpy_sequence_logprob(logits, targets), rtol=1e-5)


def test_counts_eos_but_not_bos_or_pad():
  # Uniform logits over V: log P(t) = -(number of counted tokens) * log V.
  tokens = np.array([[1, 7, 8, 2, 0, 0]], np.int32)  # BOS, two pieces, EOS, PAD, PAD.
  _, targets = objective.inputs_and_targets(tokens)
  logp = objective.sequence_logprob(np.zeros((1, 5, 10), np.float32), targets)
  np.testing.assert_allclose(logp, [-3 * np.log(10)], rtol=1e-6)


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_caption_loss_matches_numpy(weight):
  model = captioner.build(helpers.tiny_model_config())
  params = helpers.random_params(model)
  rng = np.random.default_rng(1)
  images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 4, 8, 32)
  loss, metrics = objective.caption_loss(model, params, images, tokens, weight)

  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  visual = model.apply({"params": params}, images, method="encode")
  logp_img = numpy_sequence_logprob(
      np.asarray(model.apply({"params": params}, inputs, visual, method="decode")), targets)
  logp_txt = numpy_sequence_logprob(
      np.asarray(model.apply({"params": params}, inputs, None, method="decode")), targets)
  num_tokens = (targets != 0).sum()
  ce_img, ce_txt = -logp_img.sum() / num_tokens, -logp_txt.sum() / num_tokens
  np.testing.assert_allclose(loss, ce_img + weight * ce_txt, rtol=1e-5)
  np.testing.assert_allclose(metrics["ce_with_image"], ce_img, rtol=1e-5)
  if weight:
    np.testing.assert_allclose(metrics["ce_text_only"], ce_txt, rtol=1e-5)
    np.testing.assert_allclose(metrics["info_gain_per_token"],
                               (logp_img.sum() - logp_txt.sum()) / num_tokens, rtol=1e-4, atol=1e-6)
  else:
    assert "ce_text_only" not in metrics and "info_gain_per_token" not in metrics


class SpyModel:
  """Records which decoder paths the objective runs."""

  def __init__(self, model):
    self._model = model
    self.decode_calls = []

  def apply(self, variables, *args, method):
    if method == "decode":
      self.decode_calls.append("text_only" if args[1] is None else "with_image")
    return self._model.apply(variables, *args, method=method)


def test_lambda_zero_never_runs_the_text_only_pass():
  model = captioner.build(helpers.tiny_model_config())
  params = helpers.random_params(model)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 2, 8, 32)

  def grad_fn(weight, spy):
    return jax.grad(lambda p: objective.caption_loss(spy, p, images, tokens, weight)[0])

  spy0, spy1 = SpyModel(model), SpyModel(model)
  cost0 = jax.jit(grad_fn(0.0, spy0)).lower(params).compile().cost_analysis()["flops"]
  cost1 = jax.jit(grad_fn(1.0, spy1)).lower(params).compile().cost_analysis()["flops"]
  assert spy0.decode_calls == ["with_image"]
  assert spy1.decode_calls == ["with_image", "text_only"]
  # The compiled gradient is smaller by the text-only forward and backward passes.
  assert cost0 < 0.9 * cost1
