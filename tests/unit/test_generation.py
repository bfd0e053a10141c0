"""KV-cache generation against full recomputation and against exhaustive search."""

import functools
import itertools

import jax
import numpy as np
import pytest

from ig_captioner import models
from ig_captioner.token_ids import BOS_ID, EOS_ID, NUM_SPECIAL_IDS, PAD_ID
from ig_captioner.scoring import generation
from tests import helpers
from tests.unit.test_objective import numpy_sequence_logprob

TEXT_LEN = 8


def _setup(family="captioner", num_images=3):
  built = helpers.jitted(models.build(helpers.tiny_family_config(family)))
  params = helpers.random_params(built, scale=1.0)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(num_images, 16, 16, 3)).astype(np.float32)
  return built, params, built.predict_fns["encode_images"](params, images)


def _generate(fns, params, visual, **config):
  cfg = generation.DecodeConfig(**config)
  return jax.jit(functools.partial(generation.generate, fns, config=cfg,
                                   text_len=TEXT_LEN))(params, visual)


@pytest.mark.parametrize("family,beam,alpha", [("captioner", 1, 0.0), ("captioner", 3, 1.0),
                                               ("coca", 2, 0.5)])
def test_cached_decoding_equals_full_recomputation(family, beam, alpha):
  built, params, visual = _setup(family)
  fns = built.predict_fns
  config = dict(max_tokens=TEXT_LEN - 1, beam_size=beam, ig_alpha=alpha, length_penalty=0.6)
  cached = _generate(fns, params, visual, **config)
  full = _generate(fns, params, visual, full_recompute=True, **config)
  np.testing.assert_array_equal(cached[0], full[0])
  for a, b in zip(jax.tree.leaves(cached[1:]), jax.tree.leaves(full[1:])):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
  tokens = np.asarray(cached[0])
  assert (tokens[:, 0] == BOS_ID).all()
  if family == "captioner":  # Not a degenerate case: the images get different captions.
    assert len(set(map(tuple, tokens))) > 1
  # The reported log P(t|I) is the sequence's log-likelihood under a plain full decode.
  logits = fns["decode"](params, tokens[:, :-1], visual)
  np.testing.assert_allclose(cached[1][0], numpy_sequence_logprob(np.asarray(logits),
                                                                  tokens[:, 1:]), atol=1e-4)


@pytest.mark.parametrize("alpha,penalty", [(0.0, 0.0), (1.0, 0.6)])
def test_wide_beam_finds_the_exhaustive_optimum(alpha, penalty):
  built, params, visual = _setup(num_images=2)
  fns = built.predict_fns
  words = [t for t in range(NUM_SPECIAL_IDS, 32)]
  max_tokens = 2
  # Every hypothesis of at most 2 tokens: EOS, (w, EOS), (w, w').
  hyps = [[EOS_ID]] + [[w, EOS_ID] for w in words] + [list(p) for p in
                                                         itertools.product(words, repeat=2)]
  tokens = np.full((len(hyps), TEXT_LEN), PAD_ID, np.int32)
  tokens[:, 0] = BOS_ID
  for i, h in enumerate(hyps):
    tokens[i, 1:1 + len(h)] = h
  lengths = np.array([len(h) for h in hyps])
  txt = numpy_sequence_logprob(np.asarray(fns["decode"](params, tokens[:, :-1], None)),
                               tokens[:, 1:])
  # A beam at least as wide as the alive hypotheses after step 1 makes the search exact.
  result = _generate(fns, params, visual, max_tokens=max_tokens, beam_size=len(words) + 1,
                     ig_alpha=alpha, length_penalty=penalty)
  for i in range(visual.shape[0]):
    img = numpy_sequence_logprob(np.asarray(fns["decode"](
        params, tokens[:, :-1], np.repeat(np.asarray(visual[i:i + 1]), len(hyps), 0))),
        tokens[:, 1:])
    score = (img - alpha * txt) / ((5 + lengths) / 6) ** penalty
    best = int(np.argmax(score))
    np.testing.assert_array_equal(np.asarray(result[0][i]), tokens[best])
    np.testing.assert_allclose(float(result[2][i]), score[best], rtol=1e-5, atol=1e-4)


def test_too_long_a_request_is_a_clear_error():
  built, params, visual = _setup(num_images=1)
  with pytest.raises(ValueError, match="exceed the model's text length"):
    _generate(built.predict_fns, params, visual, max_tokens=TEXT_LEN)
