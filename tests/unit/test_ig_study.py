"""The IG study's pieces: the separate text-only batch of the pipeline, the caption diagnostics
evaluator (against independent computations), the data prepared per run, the study report's
choices (alpha on validation only) and figures, and the study end to end on two tiny runs."""

import os

import ml_collections
import numpy as np
import pytest

from ig_captioner import config_lib
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner.tools import study_report
from ig_captioner.tools import sweep
from ig_captioner.tools import sweep_tables
from ig_captioner.data import digits_captions
from ig_captioner.data import image_ops
from ig_captioner.data import sources
from ig_captioner.data import train_mixture
from ig_captioner.evaluators import caption_diagnostics
from ig_captioner.scoring import likelihood
from tests import helpers
from tests.conftest import REPO, load_config_module


def _study_config(data_dir, arg="runlocal"):
  config = load_config_module("ig_study").get_config(arg)
  config.data.data_dir = data_dir
  return config


# ------------------------------------------------------------------------ Text-only batch ---
def test_text_only_split_adds_a_batch_of_other_texts_that_resumes(data_dir):
  config = _study_config(data_dir)
  config.data.text_only_split = "train"
  tokenizer = sources.tokenizer(config.data)
  loader = train_mixture.train_loader(config, tokenizer)
  it = iter(loader)
  first = [next(it) for _ in range(3)]
  b = first[0]
  assert b["text_only_tokens"].shape == b["tokens"].shape
  np.testing.assert_array_equal(b["text_only_target_mask"],
                                b["text_only_tokens"][:, 1:] != 0)
  assert not np.array_equal(b["text_only_tokens"], b["tokens"])  # Texts of other records.
  split = sources.open_split(config.data, "train")
  captions = {split[i]["caption"].decode() for i in range(len(split))}
  assert {tokenizer.decode(t) for t in b["text_only_tokens"]} <= captions
  # The iterator state covers the text-only stream: a restored iterator continues it exactly.
  it2 = iter(loader)
  next(it2)
  state = it2.get_state()
  it3 = iter(loader)
  it3.set_state(state)
  for expected in first[1:]:
    got = next(it3)
    np.testing.assert_array_equal(got["text_only_tokens"], expected["text_only_tokens"])
  # Without the field, no such keys (the paper's objective reads nothing more).
  config.data.text_only_split = None
  assert "text_only_tokens" not in next(iter(train_mixture.train_loader(config, tokenizer)))


# ----------------------------------------------------------------------------- Diagnostics ---
def test_empirical_prior_counts_texts_per_class():
  texts = [b"a handwritten one", "one", "the digit two written by hand", "a cat", "ONE "]
  prior, coverage = caption_diagnostics.empirical_prior(
      texts, ["one", "two"], ("a handwritten {}", "{}", "the digit {} written by hand"))
  np.testing.assert_allclose(prior, [3 / 4, 1 / 4])
  assert coverage == pytest.approx(4 / 5)
  with pytest.raises(sources.DataError, match="prior_templates"):
    caption_diagnostics.empirical_prior(["a cat"], ["one"], ("{}",))


def test_model_prior_and_kl_match_closed_forms():
  logp = np.log(np.array([0.1, 0.3, 0.05, 0.05, 0.2, 0.3]))  # 3 classes x 2 templates.
  q = caption_diagnostics.model_prior(logp - 50.0, 3)  # Shifts cancel in the normalisation.
  np.testing.assert_allclose(q, [0.4, 0.1, 0.5], rtol=1e-9)
  p = np.array([0.5, 0.5, 0.0])
  assert caption_diagnostics.kl_divergence(p, q) == pytest.approx(
      0.5 * np.log(0.5 / 0.4) + 0.5 * np.log(0.5 / 0.1))


def test_diagnostics_evaluator_matches_an_independent_computation(data_dir):
  config = _study_config(data_dir)
  model = helpers.jitted(models.build(config.model))
  params = helpers.random_params(model, scale=0.2)
  tokenizer = sources.tokenizer(config.data)
  mesh = sharding.make_mesh(config.eval_mesh)
  evaluator = caption_diagnostics.Evaluator("diag", config.evals.diagnostics, config,
                                            model.predict_fns, mesh, tokenizer)
  metrics = evaluator.run(params)

  # Reference: every validation record's first K captions, scored in one call with and without
  # its image through the model's own functions; the prior counted from the train texts.
  k = config.evals.diagnostics.max_captions
  split = sources.open_split(config.data, "validation")
  predict = model.predict_fns
  texts, images = [], []
  for i in range(len(split)):
    record = split[i]
    for text in [t.decode() for t in record["captions"]][:k]:
      texts.append(text)
      images.append(image_ops.resize_image(record["image"], config.model.image_size))
  tokens = tokenizer.encode_batch(texts, config.model.max_text_len)
  inputs, targets = likelihood.inputs_and_targets(tokens)
  visual = predict["encode_images"](params, image_ops.normalize_images(np.stack(images)))
  nll_img = -float(np.sum(likelihood.sequence_logprob(
      predict["decode"](params, inputs, visual), targets)))
  nll_txt = -float(np.sum(likelihood.sequence_logprob(
      predict["decode"](params, inputs, None), targets)))
  count = float((targets != 0).sum())
  name = "diagnostics/diag/"
  np.testing.assert_allclose(metrics[name + "ce_with_image"], nll_img / count, rtol=1e-4)
  np.testing.assert_allclose(metrics[name + "ce_text_only"], nll_txt / count, rtol=1e-4)
  np.testing.assert_allclose(metrics[name + "info_gain_per_token"],
                             (nll_txt - nll_img) / count, rtol=1e-3, atol=1e-6)

  names = digits_captions.CLASS_NAMES
  train = sources.open_split(config.data, "train")
  train_texts = [train[i]["caption"].decode() for i in range(len(train))]
  counts = np.array([sum(n in t.split() for t in train_texts) for n in names])
  pi = counts / counts.sum()
  prompts = [t.format(c) for c in names for t in digits_captions.CAPTION_TEMPLATES]
  logp = np.asarray(likelihood.text_logprobs(
      predict, params, tokenizer.encode_batch(prompts, config.model.max_text_len), 8),
                    np.float64)
  mass = np.exp(logp).reshape(len(names), -1).sum(-1)
  q = mass / mass.sum()
  keep = pi > 0
  np.testing.assert_allclose(metrics[name + "prior_kl"],
                             np.sum(pi[keep] * np.log(pi[keep] / q[keep])), rtol=1e-4)
  c = int(np.argmax(pi))
  np.testing.assert_allclose(metrics[name + f"prior_log_ratio/{names[c]}"],
                             np.log(q[c] / pi[c]), rtol=1e-4, atol=1e-6)
  assert metrics[name + "prior_coverage"] == 1.0


def test_diagnostics_need_prior_templates_and_a_captioner():
  with pytest.raises(Exception, match="prior_templates"):
    caption_diagnostics.validate("d", caption_diagnostics.default_config())
  model = helpers.jitted(models.build(helpers.tiny_two_towers_config()))
  with pytest.raises(Exception, match="caption_diagnostics"):
    caption_diagnostics.Evaluator("d", caption_diagnostics.default_config(
        prior_templates=("{}",)), ml_collections.ConfigDict(dict(
            model=helpers.tiny_two_towers_config())), model.predict_fns, None, None)


# ------------------------------------------------------------------------ Sweep and report ---
def test_data_is_prepared_once_per_distinct_data_config():
  module, _ = config_lib.load_file(os.path.join(REPO, "configs/ig_study.py"))
  runs = sweep.sweep_runs(module)
  commands = sweep.prepare_commands(os.path.join(REPO, "configs/ig_study.py"), runs, [])
  regimes = [c[0].split("regime=")[1].split(",")[0] for c in commands]
  assert sorted(regimes) == sorted(module.REGIMES)  # Seeds and lambdas share a data set.


def _spread(mean, std=0.01):
  return sweep_tables.Spread(mean, std, 3)


def test_alpha_is_chosen_on_validation_only():
  val, test = "val/top1", "test/top1"
  metrics = {f"{val}_alpha0.0": _spread(0.5), f"{val}_alpha0.5": _spread(0.7),
             f"{val}_alpha1.0": _spread(0.6),
             f"{test}_alpha0.0": _spread(0.9), f"{test}_alpha0.5": _spread(0.4),
             f"{test}_alpha1.0": _spread(0.8)}
  assert study_report.select_alpha(metrics, val, (0.0, 0.5, 1.0)) == 0.5
  table = study_report.selection_table([("noisy, mu, paper, lambda=1 (n=3)", metrics)],
                                       alphas=(0.0, 0.5, 1.0), val_metric=val,
                                       test_metric=test, diagnostics="d")
  row = table.splitlines()[2].split(" | ")
  assert row[1:5] == ["1", "0.5", "70.0 ± 1.0", "40.0 ± 1.0"]  # Not test's best (90.0).
  assert study_report.parse_label("steep, nano, head only, lambda=0.3 seed=1") is None
  assert study_report.parse_label("a, b, lambda=0.1") == ("a, b", 0.1)
