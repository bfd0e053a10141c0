"""The zero-shot evaluator's prompt ensembles (`weightings`, `descriptions`) against the same
ensembles computed here from the inference API's per-prompt scores, in loops written from the
definitions (ZPE: Allingham et al. 2023), for a captioner and a two-tower model."""

import math

import jax
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import inference
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import tasks
from ig_captioner.data import digits_captions
from ig_captioner.data import sources
from ig_captioner.evaluators import zeroshot
from ig_captioner.scoring import class_scores
from tests import helpers
from tests.unit.test_protocol_metrics import reference_classification

ALPHAS = (0.0, 1.0)
ZPE_IMAGES = 40


@pytest.fixture(scope="module", params=["captioner", "clip"])
def family_run(request, data_dir):
  from tests.conftest import load_config_module  # pylint: disable=g-import-not-at-top
  config = load_config_module("demo").get_config(f"runlocal,family={request.param}")
  config.data.data_dir = data_dir
  built = helpers.jitted(models.build(config.model))
  params = jax.device_put(helpers.random_params(built, scale=1.0))
  mesh = sharding.make_mesh(config.eval_mesh)
  run = inference.Run("unused", 0, config, built, params, sources.tokenizer(config.data), mesh)
  return request.param, config, built, params, run


def _evaluate(config, built, params, **overrides):
  eval_config = zeroshot.default_config(batch_size=32, alphas=ALPHAS, zpe_images=ZPE_IMAGES,
                                        **overrides)
  zeroshot.validate("digits", eval_config)
  evaluator = zeroshot.Evaluator("digits", eval_config, config, built.predict_fns,
                                 sharding.make_mesh(config.eval_mesh),
                                 sources.tokenizer(config.data))
  return evaluator.run(params)


def _per_prompt(run, family, images, prompts):
  """{scoring: per-prompt scores X x B x P} as the definitions have them."""
  if family == "captioner":
    logp_BxP, prior_P = run.likelihoods(images, prompts), run.prior(prompts)
    return {a: logp_BxP - a * prior_P[None] for a in ALPHAS}
  img = run.embed_images(images)
  txt = run.embed_texts(prompts)
  img = img / np.linalg.norm(img, axis=-1, keepdims=True)
  txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
  return {None: 100 * img @ txt.T}


def _class_major(s_BxP, num_classes, weights_K=None, how="mean"):
  templates = s_BxP.shape[1] // num_classes
  w = np.ones(templates) if weights_K is None else np.asarray(weights_K)
  out = np.zeros((s_BxP.shape[0], num_classes))
  for b in range(s_BxP.shape[0]):
    for c in range(num_classes):
      values = [s_BxP[b, c * templates + k] for k in range(templates)]
      if how == "mean":
        out[b, c] = sum(wk * v for wk, v in zip(w, values)) / sum(w)
      else:
        top = max(values)
        out[b, c] = top + math.log(sum(math.exp(v - top) for v in values) / len(values))
  return out


def _name(stem, metric, alpha):
  return f"zeroshot/digits{stem}/{metric}" + ("" if alpha is None else f"_alpha{alpha}")


def test_weightings_equal_the_definitions(family_run):
  family, config, built, params, run = family_run
  metrics = _evaluate(config, built, params, weightings=("equal", "logmeanexp", "zpe"))
  task_config = config.copy_and_resolve_references()
  task_config.evals.digits = zeroshot.default_config()
  task = tasks.task(task_config, "digits")
  names, templates = task.class_names, zeroshot.default_config().templates
  prompts = class_scores.class_prompts(names, templates)
  test = task.examples()
  train = tasks.read_examples(config.data, config.data.train_split, ZPE_IMAGES, None)
  on_test = _per_prompt(run, family, test.images_BxHxWx3, prompts)
  on_train = _per_prompt(run, family, train.images_BxHxWx3, prompts)
  num_classes, num_templates = len(names), len(templates)
  for alpha, s_BxP in on_test.items():
    m_P = (s_BxP.mean(0) + on_train[alpha].mean(0)) / 2
    z_K = np.array([np.mean([max(s_BxP[i, c * num_templates + k] - m_P[c * num_templates + k]
                                 for c in range(num_classes)) for i in range(len(s_BxP))])
                    for k in range(num_templates)])
    w_K = np.exp(z_K - z_K.max()) / np.exp(z_K - z_K.max()).sum()
    for stem, scores in (("/logmeanexp", _class_major(s_BxP, num_classes, how="lme")),
                         ("/zpe", _class_major(s_BxP, num_classes, w_K))):
      expected = reference_classification(scores, test.labels_B)
      got = {m: metrics[_name(stem, m, alpha)] for m in expected}
      assert got == pytest.approx(expected, abs=1e-12), (family, stem, alpha)
    # The weights are not uniform: ZPE can differ from the equal average.
    assert np.ptp(w_K) > 1e-3
  # 'equal' keeps the template path's names and numbers.
  plain = _evaluate(config, built, params)
  assert set(plain) < set(metrics) and all(metrics[k] == v for k, v in plain.items())


def test_descriptions_equal_the_definitions(family_run):
  family, config, built, params, run = family_run
  metrics = _evaluate(config, built, params, descriptions="digits_descriptions.json",
                      weightings=("equal", "logmeanexp"))
  names = list(digits_captions.CLASS_NAMES)
  prompts = [t.format(n) for n in names for t in digits_captions.CAPTION_TEMPLATES]
  task_config = config.copy_and_resolve_references()
  task_config.evals.digits = zeroshot.default_config()
  test = tasks.task(task_config, "digits").examples()
  for alpha, s_BxP in _per_prompt(run, family, test.images_BxHxWx3, prompts).items():
    if family == "clip":  # CLIP's ensemble: the normalised mean embedding of a class's prompts.
      txt = run.embed_texts(prompts)
      txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
      mean = txt.reshape(len(names), -1, txt.shape[-1]).mean(1)
      img = run.embed_images(test.images_BxHxWx3)
      img = img / np.linalg.norm(img, axis=-1, keepdims=True)
      equal = img @ (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).T
    else:
      equal = _class_major(s_BxP, len(names))
    for stem, scores in (("/descriptions", equal),
                         ("/descriptions/logmeanexp",
                          _class_major(s_BxP, len(names), how="lme"))):
      expected = reference_classification(scores, test.labels_B)
      assert {m: metrics[_name(stem, m, alpha)] for m in expected} == pytest.approx(
          expected, abs=1e-12), (family, stem, alpha)
  assert not any(k.startswith("zeroshot/digits/acc1") for k in metrics)  # No template metrics.


@pytest.mark.parametrize("overrides,match", [
    (dict(weightings=("mean",)), "weightings=\\('mean',\\) is invalid"),
    (dict(descriptions="x.json", weightings=("zpe",)), "ZPE weights templates"),
    (dict(weightings=("zpe",), shortlist=2), "shortlist does not combine"),
    (dict(weightings=("zpe",), prefixes=(None, "caption")), "prefixes does not combine")])
def test_bad_ensemble_settings_are_named(overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    zeroshot.validate("digits", zeroshot.default_config(**overrides))
