"""The zero-shot evaluator's scoring modes on the embedded data: cached (default), reference,
streamed and two-stage (shortlist) scoring."""

import jax
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner.data import sources
from ig_captioner.evaluators import zeroshot
from tests import helpers


def _run(config, params, built, **overrides):
  eval_config = zeroshot.default_config(batch_size=32, alphas=(0.0, 1.0), **overrides)
  zeroshot.validate("digits", eval_config)
  evaluator = zeroshot.Evaluator("digits", eval_config, config, built.predict_fns,
                                 sharding.make_mesh(config.eval_mesh),
                                 sources.tokenizer(config.data))
  return evaluator.run(params)


@pytest.fixture(scope="module")
def model_and_params(data_dir):
  from tests.conftest import load_config_module  # pylint: disable=g-import-not-at-top
  config = load_config_module("demo").get_config("runlocal")
  config.data.data_dir = data_dir
  built = helpers.jitted(models.build(config.model))
  return config, built, jax.device_put(helpers.random_params(built, scale=1.0))


@pytest.fixture(scope="module")
def exact(model_and_params):
  config, built, params = model_and_params
  return _run(config, params, built)


def test_streamed_and_reference_scoring_give_the_cached_metrics(model_and_params, exact):
  config, built, params = model_and_params
  cached = exact
  assert set(cached) == {f"zeroshot/digits/{m}_alpha{a}" for a in (0.0, 1.0)
                         for m in ("acc1", "acc5", "mean_per_class_recall")}
  assert _run(config, params, built, stream_blocks=2) == cached
  assert _run(config, params, built, scoring="reference") == cached
  # Streaming runs the cached path even where `scoring` names the reference.
  assert _run(config, params, built, stream_blocks=2, scoring="reference") == cached


def test_shortlist_of_every_class_is_exact_and_of_one_class_is_stage_one(model_and_params,
                                                                         exact):
  config, built, params = model_and_params
  num_classes = 10
  every = _run(config, params, built, shortlist=num_classes, shortlist_templates=1)
  assert every["zeroshot/digits/shortlist10/recall"] == 1.0
  for a in (0.0, 1.0):
    for m in ("acc1", "mean_per_class_recall"):  # A shortlist reports no acc5.
      assert every[f"zeroshot/digits/shortlist10/{m}_alpha{a}"] == exact[
          f"zeroshot/digits/{m}_alpha{a}"]
  assert "zeroshot/digits/shortlist10/acc5_alpha1.0" not in every
  # A shortlist of one with every template and stage-1 alpha a: exact top-1 at alpha a.
  one = _run(config, params, built, shortlist=1, shortlist_templates=3, shortlist_alpha=1.0)
  for a in (0.0, 1.0):
    assert one[f"zeroshot/digits/shortlist1/acc1_alpha{a}"] == exact[
        "zeroshot/digits/acc1_alpha1.0"]
  assert one["zeroshot/digits/shortlist1/recall"] == exact["zeroshot/digits/acc1_alpha1.0"]


@pytest.mark.parametrize("field,value,match", [
    ("stream_blocks", -1, "stream_blocks=-1"), ("shortlist", -2, "shortlist=-2"),
    ("shortlist_templates", 4, "exceeds the 3 templates")])
def test_bad_mode_settings_are_named(field, value, match):
  with pytest.raises(errors.ConfigError, match=match):
    zeroshot.validate("digits", zeroshot.default_config(**{field: value}))


def test_progress_reports_images_rate_and_eta():
  from ig_captioner.scoring import prompt_streaming  # pylint: disable=g-import-not-at-top
  progress = prompt_streaming.Progress("zeroshot/x", total_images=100, prompts=10, every_s=0)
  line = progress.update(25)
  assert line.startswith("zeroshot/x: 25/100 images (25%)") and "pairs/s, ETA 0h00m" in line
  assert np.isclose(progress.done, 25)
