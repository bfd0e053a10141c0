"""The notebook API on real checkpoints: loading, zero-shot as the evaluator computes it, the prior,
two towers, captions, and the errors."""

import numpy as np
import pytest

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import evaluate
from ig_captioner import inference
from ig_captioner import token_ids
from ig_captioner import train
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.scoring import generation
from ig_captioner.scoring import likelihood
from tests.conftest import load_config_module


def demo_config(data_dir: str, arg: str = "runlocal"):
  config = load_config_module("demo").get_config(arg)
  config.data.data_dir = data_dir
  return config


@pytest.fixture
def workdir(trained_runlocal) -> str:
  """The demo's runlocal captioner, trained for its 6 steps (checkpoints 3 and 6)."""
  return trained_runlocal


@pytest.fixture(scope="module")
def clip_workdir(data_dir, tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("clip_run"))
  train.train(demo_config(data_dir, "runlocal,family=clip"), path)
  return path


def zeroshot_split(config, num_images: int | None = None):
  """(images_BxSxSx3 normalised, labels_B) of the zero-shot split, in record order."""
  images, labels = [], []
  for batch in pipeline.labeled_batches(config.data, "zeroshot", config.model.image_size, 128):
    images.append(batch["image"][batch["valid"]])
    labels.append(batch["label"][batch["valid"]])
  return np.concatenate(images)[:num_images], np.concatenate(labels)[:num_images]


def test_loads_latest_and_given_step(workdir):
  run = inference.load_run(workdir)
  assert run.step == 6 and run.family == "captioner"
  assert inference.load_run(workdir, step=3).step == 3


def test_classify_equals_the_zeroshot_evaluator(workdir, data_dir, tmp_path):
  config = demo_config(data_dir)
  for name in list(config.evals):
    if name != "digits":
      del config.evals[name]
  config.evals.digits.prefixes = (None, "caption")
  metrics = evaluate.evaluate(config, workdir, step=3, output_dir=str(tmp_path))[3]

  run = inference.load_run(workdir, step=3)
  images, labels = zeroshot_split(run.config)
  out = run.classify(images, sources.readable_class_names(run.config.data),
                     config.evals.digits.templates, alphas=(0.0, 0.5, 1.0))
  assert "embedding" not in out
  for alpha in (0.0, 0.5, 1.0):
    top1 = np.mean(out["ig"][alpha]["topk_BxK"][:, 0] == labels)
    assert top1 == pytest.approx(metrics[f"zeroshot/digits/acc1_alpha{alpha}"], abs=1e-9)
    assert out["ig"][alpha]["scores_BxC"].shape == (len(labels), 10)
  # With the caption prefix before every prompt, as the evaluator's `prefixes` test it.
  out = run.classify(images, sources.readable_class_names(run.config.data),
                     config.evals.digits.templates, alphas=(0.0, 1.0), prefix="caption")
  for alpha in (0.0, 1.0):
    top1 = np.mean(out["ig"][alpha]["topk_BxK"][:, 0] == labels)
    assert top1 == pytest.approx(
        metrics[f"zeroshot/digits/caption_prefix/acc1_alpha{alpha}"], abs=1e-9)


def test_tasks_read_the_evaluators_data_and_prompts(workdir):
  run = inference.load_run(workdir)
  task = run.task("digits")
  assert task.kind == "zeroshot" and task.split == "zeroshot"
  assert task.class_names == sources.readable_class_names(run.config.data)
  assert task.templates == tuple(run.config.evals.digits.templates)
  assert task.alphas == tuple(run.config.evals.digits.alphas)
  assert run.task() == task  # The first zero-shot evaluator.
  images, labels = zeroshot_split(run.config, 20)
  examples = task.examples(num=20)
  np.testing.assert_array_equal(examples.labels_B, labels)
  assert examples.images_BxHxWx3.dtype == np.uint8 and examples.texts_B is None
  np.testing.assert_allclose(run.images(examples.images_BxHxWx3), images, atol=1e-6)

  retrieval = run.task(kind="retrieval")
  assert (retrieval.name, retrieval.class_names) == ("digits_retrieval", None)
  records = retrieval.examples(num=3)
  assert records.labels_B is None and len(records.texts_B) == 3
  assert all(len(texts) == 6 for texts in records.texts_B)  # Every phrasing of its class.
  with pytest.raises(errors.ConfigError, match="has no evaluator 'nope'"):
    run.task("nope")
  with pytest.raises(errors.ConfigError, match="no caption_generation evaluator"):
    run.task(kind="caption_generation")  # The runlocal config has none.


def test_prior_and_retrieval_equal_the_reference_decode(workdir):
  run = inference.load_run(workdir)
  texts = ["a handwritten 7", "3", "the digit 5 written by hand"]
  reference = likelihood.text_logprobs(run.model.predict_fns, run.params,
                                       run.encode_texts(texts), 8)
  np.testing.assert_allclose(run.prior(texts), np.asarray(reference), atol=1e-4)
  with_prefix = likelihood.text_logprobs(
      run.model.predict_fns, run.params, run.encode_texts(texts, prefix="caption"), 8)
  np.testing.assert_allclose(run.prior(texts, prefix="caption"), np.asarray(with_prefix),
                             atol=1e-4)
  assert np.abs(np.asarray(with_prefix) - np.asarray(reference)).max() > 1e-3

  images, _ = zeroshot_split(run.config, 3)
  visual = run.model.predict_fns["encode_images"](run.params, images)
  logp_img = np.asarray(likelihood.image_text_logprobs(
      run.model.predict_fns, run.params, visual, run.encode_texts(texts), 8))
  np.testing.assert_allclose(run.retrieval_scores(images, texts, alpha=1.0),
                             logp_img - np.asarray(reference)[None], atol=1e-4)


def test_uint8_images_of_any_size_and_captions(workdir):
  run = inference.load_run(workdir)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40, 30, 3), np.uint8), rng.integers(0, 256, (16, 16),
                                                                      np.uint8)]
  out = run.classify(images, ["1", "2", "3"], ["{}"], alphas=(0.0,), top_k=2)
  assert out["ig"][0.0]["topk_BxK"].shape == (2, 2)
  captions = run.caption(images, max_len=6)
  assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
  assert len(run.caption(images[:1], beam_size=2, alpha=1.0, max_len=4)) == 1

  # After the caption prefix: decoding starts from [BOS, <caption>], as the captioning
  # evaluator's `prefixes` do.
  fns, batch = run.model.predict_fns, run.images(images)
  start = (token_ids.BOS_ID, token_ids.PREFIX_IDS["caption"])
  tokens_BxT = generation.generate(fns, run.params, fns["encode_images"](run.params, batch),
                                   generation.DecodeConfig(max_tokens=5),
                                   run.config.model.max_text_len, start)[0]
  assert run.caption(images, max_len=5, prefix="caption") == [
      run.tokenizer.decode(t) for t in np.asarray(tokens_BxT)]
  with pytest.raises(errors.ConfigError, match="max_len=11 must be in"):
    run.caption(images, max_len=11, prefix="caption")


def test_two_towers_classify_with_embeddings(clip_workdir):
  run = inference.load_run(clip_workdir)
  images, labels = zeroshot_split(run.config, 20)
  out = run.classify(images, sources.readable_class_names(run.config.data), ["a handwritten {}"])
  assert "ig" not in out and "alpha" in out["embedding"]["note"]
  assert out["embedding"]["scores_BxC"].shape == (20, 10)
  assert run.retrieval_scores(images, ["1", "2"]).shape == (20, 2)
  with pytest.raises(errors.ConfigError, match="'two_towers' has no decoder"):
    run.caption(images)
  with pytest.raises(errors.ConfigError, match="does not supply"):
    run.prior(["1"])


def test_errors(workdir, data_dir, tmp_path):
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoints in .*Training writes"):
    inference.load_run(str(tmp_path))
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "config.json").write_text(demo_config(data_dir).to_json_best_effort())
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoints in .*train first"):
    inference.load_run(str(tmp_path))
  with pytest.raises(checkpointing.CheckpointError, match=r"step 5 .*available: \[3, 6\]"):
    inference.load_run(workdir, step=5)
  other = demo_config(data_dir)
  other.model.max_text_len += 4
  with pytest.raises(checkpointing.CheckpointError, match="different model.*max_text_len"):
    inference.load_run(workdir, config=other)
