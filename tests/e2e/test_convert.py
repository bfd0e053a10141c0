"""`python -m ig_captioner.convert` end to end: an open_clip checkpoint becomes a run that the
evaluator (`--workdir` alone) and the inference API take; bad input leaves the workdir alone."""

import os

import flax
import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import evaluate
from ig_captioner import experiment
from ig_captioner import inference
from ig_captioner import init_from
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import train
from ig_captioner.convert import __main__ as convert_cli
from ig_captioner.convert import open_clip
from ig_captioner.convert import weights_files
from tests import helpers
from tests.conftest import REPO, load_config_module
from tests.fixtures.open_clip import clip_vocab

FIXTURES = os.path.join(REPO, "tests", "fixtures", "open_clip")


@pytest.fixture(scope="module")
def clip_vocab_checkpoint(tmp_path_factory):
  """The small QuickGELU fixture with CLIP's full vocabulary (new random token embeddings), as
  (model-config path, weights path): real CLIP ids need all 49,408 rows."""
  return clip_vocab.widen("clip_quickgelu", str(tmp_path_factory.mktemp("open_clip")))


@pytest.fixture(scope="module")
def converted_clip(clip_vocab_checkpoint, data_dir, tmp_path_factory):
  """(workdir, printed output) of the command-line converter on that checkpoint."""
  arch_path, weights = clip_vocab_checkpoint
  workdir = tmp_path_factory.mktemp("converted") / "clip"
  made = helpers.run_module("ig_captioner.convert", "--source=open_clip", f"--model={arch_path}",
              f"--weights={weights}", f"--workdir={workdir}",
              "--config=configs/converted.py:runlocal", f"--config.data.data_dir={data_dir}")
  assert made.returncode == 0, made.stderr[-3000:]
  return workdir, made.stdout


def test_converted_clip_is_evaluated_and_loaded_as_a_run(clip_vocab_checkpoint, converted_clip):
  arch_path, weights = clip_vocab_checkpoint
  workdir, printed = converted_clip
  assert f"python -m ig_captioner.evaluate --workdir={workdir} --once" in printed
  helpers.evaluated_once(workdir)

  # The inference API's features equal the model's on the weights as converted, and CLIP's
  # tokenizer came with the run.
  run = inference.load_run(str(workdir))
  assert run.step == 0 and run.tokenizer.vocab_size == 49408
  config = experiment.read_config(str(workdir))
  assert config.converted_from.source == "open_clip" and config.model.activation == "quick_gelu"
  arch = open_clip.load_architecture(arch_path)
  params = open_clip.convert_params(weights_files.read(weights), arch,
                                    convert_cli.param_shapes(config.model))
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  want = models.build(config.model).predict_fns["embed_images"](
      flax.traverse_util.unflatten_dict(params, sep="/"), images)
  np.testing.assert_allclose(np.asarray(run.embed_images(images)), np.asarray(want), atol=1e-6)
  texts = run.embed_texts(["a photo of the number 3", "a handwritten 7!"])
  assert np.isfinite(np.asarray(texts)).all()


@pytest.fixture(scope="module")
def converted_coca(data_dir, tmp_path_factory):
  """(workdir, model-config path, weights path) of the small CoCa fixture with CLIP's full
  vocabulary and a longer context (new random token, position and output rows), converted by
  the command line."""
  out = tmp_path_factory.mktemp("open_clip_coca")
  arch_path, weights = clip_vocab.widen("coca_tiny", str(out), context_length=20)
  workdir = out / "coca"
  made = helpers.run_module("ig_captioner.convert", "--source=open_clip", f"--model={arch_path}",
              f"--weights={weights}", f"--workdir={workdir}",
              "--config=configs/converted.py:runlocal", f"--config.data.data_dir={data_dir}")
  assert made.returncode == 0, made.stderr[-3000:]
  return workdir, arch_path, weights


def test_converted_coca_is_ig_scored_with_both_priors(converted_coca):
  workdir = converted_coca[0]
  row = helpers.evaluated_once(workdir)
  assert {f"zeroshot/digits/acc1_alpha{a}" for a in (0.0, 0.5, 1.0)} < set(row)
  assert {"zeroshot/digits/acc1", "retrieval/digits_retrieval/i2t_r1_alpha1.0"} < set(row)

  # likelihoods(images, texts) is sum log P over the tokens after the start token through the
  # end token, as the training forward (an independent path: one pass, no cache) gives it;
  # '&' and "'" inside punctuation runs (CLIP ids 5 and 6, this codebase's prefix ids) count.
  run = inference.load_run(str(workdir))
  texts = ["a &. b", "a ''' quote", "a diagram"]
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  tokens = run.encode_texts(texts)
  assert {5, 6} < set(tokens.ravel().tolist())
  fns = run.model.predict_fns

  def forward_logprobs(images_BxHxWxC):
    logp = []
    for image in images_BxHxWxC:
      logits, _, _ = fns["caption_and_embed"](run.params, np.repeat(image[None], len(texts), 0),
                                              tokens)
      targets = tokens[:, 1:]
      token_logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                      targets[..., None], -1)[..., 0]
      logp.append((token_logp * (targets != 0)).sum(-1))
    return np.stack(logp)

  np.testing.assert_allclose(run.likelihoods(images, texts), forward_logprobs(images), rtol=1e-4)
  null_image = np.zeros((1, 32, 32, 3), np.float32)
  np.testing.assert_allclose(run.prior(texts, source="null_image"),
                             forward_logprobs(null_image)[0], rtol=1e-4)
  assert np.abs(run.prior(texts) - run.prior(texts, source="null_image")).max() > 1e-3
  out = run.classify(images, ["dog", "cat"], ["a photo of a {}"], alphas=(0.0, 1.0),
                     prior="null_image")
  logp_BxC = run.likelihoods(images, ["a photo of a dog", "a photo of a cat"])
  null_C = run.prior(["a photo of a dog", "a photo of a cat"], source="null_image")
  np.testing.assert_allclose(out["ig"][1.0]["scores_BxC"], logp_BxC - null_C, rtol=1e-4)
  with pytest.raises(errors.ConfigError, match="prior='blank' is not one of"):
    run.prior(texts, source="blank")


def test_bad_input_is_one_line_and_leaves_the_workdir_alone(clip_vocab_checkpoint, data_dir,
                                                            tmp_path):
  arch_path, weights = clip_vocab_checkpoint
  base = load_config_module("converted").get_config("runlocal")
  base.data.data_dir = data_dir
  target = tmp_path / "run"
  truncated = tmp_path / "cut.safetensors"
  truncated.write_bytes(open(weights, "rb").read()[:5000])
  small_vocab = os.path.join(FIXTURES, "clip_quickgelu.json")
  for model, weights_path, error, match in (
      ("ViT-X-1", weights, errors.ConfigError, "known: ViT-B-16"),
      (arch_path, str(truncated), weights_files.WeightsError, "truncated"),
      ("ViT-B-32", weights, weights_files.WeightsError, "do not fit this architecture"),
      (small_vocab, os.path.join(FIXTURES, "clip_quickgelu.safetensors"), errors.ConfigError,
       "has 49408 pieces but config.model.vocab_size=100")):
    with pytest.raises(error, match=match):
      convert_cli.convert("open_clip", model, weights_path, str(target), base)
    assert not target.exists(), model
    assert not list(tmp_path.glob("run.converting-*"))

  target.mkdir()
  (target / "notes.txt").write_text("mine")
  with pytest.raises(errors.ConfigError, match="exists and is not empty"):
    convert_cli.convert("open_clip", arch_path, weights, str(target), base)
  assert [p.name for p in target.iterdir()] == ["notes.txt"]

  unknown = helpers.run_module("ig_captioner.convert", "--source=open_clip", "--model=ViT-X-1",
                 f"--weights={weights}", f"--workdir={tmp_path / 'cli'}")
  assert unknown.returncode == 1
  assert unknown.stderr.strip().splitlines()[-1].startswith(
      "error: --model='ViT-X-1' is not a known open_clip architecture; known: ViT-B-16")
  assert not (tmp_path / "cli").exists()


def test_lit_captioner_trains_a_decoder_on_the_frozen_converted_tower(converted_clip, data_dir,
                                                                      tmp_path):
  clip_dir = str(converted_clip[0])
  config = load_config_module("lit_captioner").get_config(f"runlocal,init_from={clip_dir}")
  config.data.data_dir = data_dir
  assert config.model.encoder == "64:2:4:256/8" and config.model.activation == "quick_gelu"

  run_dir = str(tmp_path / "lit")
  state = train.train(config, run_dir)
  tower = flax.traverse_util.flatten_dict(
      inference.load_run(clip_dir).params["image_tower"], sep="/")
  final = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
  encoder = {k[len("encoder/"):]: v for k, v in final.items() if k.startswith("encoder/")}
  assert encoder.keys() == tower.keys()
  for name, value in tower.items():  # Loaded, then not moved by a bit.
    np.testing.assert_array_equal(encoder[name], np.asarray(value), err_msg=name)
  fresh = models.build(config.model).init_params(jax.random.key(config.seed))
  head = flax.linen.meta.unbox(fresh)["decoder"]["block0"]["mlp"]["fc1"]["kernel"]
  assert np.abs(final["decoder/block0/mlp/fc1/kernel"] - np.asarray(head)).max() > 1e-4

  metrics = evaluate.evaluate(config, run_dir, step=config.total_steps)[config.total_steps]
  assert {"zeroshot/digits/acc1_alpha0.0", "zeroshot/digits/acc1_alpha1.0"} <= set(metrics)

  # Another tower size than the source's: named.
  other = models.build(ml_collections.ConfigDict(
      {**config.model.to_dict(), "encoder": "32:2:4:256/8"}))
  params = flax.linen.meta.unbox(other.init_params(jax.random.key(0)))
  with pytest.raises(errors.ConfigError, match=r"params of other shapes: encoder/.* vs "):
    init_from.load_into(params, config.init_from, sharding.make_mesh(config.mesh))
