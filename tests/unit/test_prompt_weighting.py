"""Prompt ensembles (`scoring/prompt_weighting.py`) against loops over classes, prompts and
images written from the definitions: weighted means, log-mean-exp, ZPE's template scores and
weights, and descriptions files (CLIP_benchmark's cupl_prompts.json layout)."""

import json
import math

import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner.scoring import prompt_weighting


def test_combine_equals_per_class_loops_with_uneven_prompt_counts():
  rng = np.random.default_rng(0)
  class_P = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
  s = rng.normal(size=(2, 5, 10)) * 5
  w = rng.uniform(0.1, 1.0, 10)
  mean = prompt_weighting.combine(s, class_P, 4)
  weighted = prompt_weighting.combine(s, class_P, 4, weights_P=w)
  lme = prompt_weighting.combine(s, class_P, 4, "logmeanexp")
  for x in range(2):
    for b in range(5):
      for c in range(4):
        prompts = [p for p in range(10) if class_P[p] == c]
        assert mean[x, b, c] == pytest.approx(np.mean([s[x, b, p] for p in prompts]))
        assert weighted[x, b, c] == pytest.approx(
            sum(w[p] * s[x, b, p] for p in prompts) / sum(w[p] for p in prompts))
        assert lme[x, b, c] == pytest.approx(
            math.log(sum(math.exp(s[x, b, p]) for p in prompts) / len(prompts)))
  # Log-mean-exp stays finite where exp underflows (log-likelihoods of long prompts).
  far = prompt_weighting.combine(np.array([[[-2000.0, -2001.0]]]), np.array([0, 0]), 1,
                                 "logmeanexp")
  assert far[0, 0, 0] == pytest.approx(-2000 + math.log((1 + math.exp(-1)) / 2))
  with pytest.raises(ValueError, match="class-major"):
    prompt_weighting.combine(s, np.array([0, 1, 0, 1, 2, 2, 3, 3, 3, 3]), 4)


def test_zpe_scores_and_weights_equal_the_definition():
  rng = np.random.default_rng(1)
  num_classes, templates, images = 4, 3, 6
  s = rng.normal(size=(1, images, num_classes * templates))  # Prompt c * K + k.
  mean = rng.normal(size=(1, num_classes * templates))
  z = prompt_weighting.zpe_template_scores(s, mean, num_classes)
  for k in range(templates):
    expected = sum(max(s[0, i, c * templates + k] - mean[0, c * templates + k]
                       for c in range(num_classes)) for i in range(images))
    assert z[0, k] == pytest.approx(expected)
  w = prompt_weighting.softmax(z / images)
  np.testing.assert_allclose(w, np.exp(z / images) / np.exp(z / images).sum(), rtol=1e-12)


def test_descriptions_files(tmp_path):
  table = {"digits": {"one": ["a one.", "one stroke."], "two": ["a two."]}, "other": {}}
  path = tmp_path / "cupl.json"
  path.write_text(json.dumps(table))
  prompts, class_P = prompt_weighting.read_descriptions(str(path), ["one", "two"], "digits")
  assert prompts == ["a one.", "one stroke.", "a two."] and class_P.tolist() == [0, 0, 1]
  with pytest.raises(errors.ConfigError, match="holds \\['digits', 'other'\\]: name one"):
    prompt_weighting.read_descriptions(str(path), ["one"])
  with pytest.raises(errors.ConfigError, match="no sentences for 1 classes \\(e.g. 'three'\\)"):
    prompt_weighting.read_descriptions(str(path), ["one", "three"], "digits")
  path.write_text("{not json")
  with pytest.raises(errors.ConfigError, match="is not JSON"):
    prompt_weighting.read_descriptions(str(path), ["one"])
  with pytest.raises(errors.ConfigError, match="does not exist"):
    prompt_weighting.read_descriptions(str(tmp_path / "none.json"), ["one"])
