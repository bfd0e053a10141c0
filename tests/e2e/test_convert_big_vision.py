"""`python -m ig_captioner.convert --source=big_vision` end to end: a SigLIP checkpoint becomes a
run, its tokenizer inside it, that the evaluator (`--workdir` alone) and the inference API take
and that gives big_vision's features; a plain ViT starts a captioner's encoder through
`config.init_from`; bad input is a one-line error that leaves the workdir alone."""

import os
import shutil

import flax
import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import inference
from ig_captioner import init_from
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner.convert import __main__ as convert_cli
from ig_captioner.convert import weights_files
from ig_captioner.data import sticky_eos
from ig_captioner.data import tokenizer as tokenizer_lib
from tests import helpers
from tests.conftest import REPO, load_config_module

FIXTURES = os.path.join(REPO, "tests", "fixtures", "big_vision")
SIGLIP_JSON = os.path.join(FIXTURES, "siglip_scanned.json")
SIGLIP_NPZ = os.path.join(FIXTURES, "siglip_scanned.npz")
SPM = os.path.join(FIXTURES, "tiny_spm.model")


@pytest.fixture(scope="module")
def converted_siglip(data_dir, tmp_path_factory):
  """(workdir, printed output) of the command-line converter on the scanned SigLIP fixture,
  its tokenizer given from a copy that is deleted afterwards (the run keeps its own)."""
  out = tmp_path_factory.mktemp("converted")
  spm = out / "given.model"
  shutil.copy(SPM, spm)
  workdir = out / "siglip"
  made = helpers.run_module("ig_captioner.convert", "--source=big_vision", f"--model={SIGLIP_JSON}",
              f"--weights={SIGLIP_NPZ}", f"--tokenizer={spm}", f"--workdir={workdir}",
              "--config=configs/converted.py:runlocal", f"--config.data.data_dir={data_dir}")
  assert made.returncode == 0, made.stderr[-3000:]
  spm.unlink()
  return workdir, made.stdout


def test_converted_siglip_is_evaluated_and_gives_big_visions_features(converted_siglip):
  workdir, printed = converted_siglip
  assert f"python -m ig_captioner.evaluate --workdir={workdir} --once" in printed
  helpers.evaluated_once(workdir)

  config = experiment.read_config(str(workdir))
  assert config.converted_from.source == "big_vision"
  assert config.data.tokenizer == f"sticky_eos:{workdir}/{convert_cli.TOKENIZER_FILE}"
  assert config.model.text_attention == "bidirectional" and config.model.image_pooling == "map"
  # Texts through the run's own tokenizer and model give big_vision's features for the texts its
  # tokenize op read (the one too long for the inference API's strict encoding left out).
  run = inference.load_run(str(workdir))
  assert isinstance(run.tokenizer, sticky_eos.StickyEosTokenizer)
  io = np.load(os.path.join(FIXTURES, "siglip_scanned_io.npz"))
  keep = [i for i, text in enumerate(io["texts"]) if len(text) < 100]
  assert len(keep) == len(io["texts"]) - 1
  np.testing.assert_allclose(np.asarray(run.embed_texts([str(t) for t in io["texts"][keep]])),
                             io["text_features"][keep], rtol=0, atol=2e-4)
  np.testing.assert_allclose(np.asarray(run.embed_images(io["images"])), io["image_features"],
                             rtol=0, atol=2e-4)


def test_plain_vit_starts_a_captioners_encoder(tmp_path):
  workdir = tmp_path / "vit"
  made = helpers.run_module("ig_captioner.convert", "--source=big_vision",
              f"--model={os.path.join(FIXTURES, 'vit_map_head.json')}",
              f"--weights={os.path.join(FIXTURES, 'vit_map_head.npz')}", f"--workdir={workdir}")
  assert made.returncode == 0, made.stderr[-3000:]
  assert ("An image tower alone (nothing to evaluate): start a captioner's encoder from it with "
          "config.model.encoder='24:2:3:48/8', image_size=32 and config.init_from=dict(workdir="
          f"'{workdir}', rename={{'encoder': 'image_tower'}})") in made.stdout
  assert not experiment.read_config(str(workdir)).evals

  # What the message says to do: the captioner's encoder gives big_vision's encoded tokens.
  model_config = helpers.tiny_model_config(encoder="24:2:3:48/8", image_size=32)
  model = models.build(model_config)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  params = flax.linen.meta.unbox(model.init_params(jax.random.key(0)))
  params, loaded, fresh = init_from.load_into(
      params, dict(workdir=str(workdir), rename={"encoder": "image_tower"}), mesh)
  assert {p.split("/")[0] for p in loaded} == {"encoder"}
  assert not any(p.startswith("encoder/") for p in fresh)
  io = np.load(os.path.join(FIXTURES, "vit_map_head_io.npz"))
  encoded = jax.jit(model.predict_fns["encode_images"])(params, io["images"])
  np.testing.assert_allclose(np.asarray(encoded), io["encoded"], rtol=0, atol=2e-4)


def _bigger_tokenizer(path) -> None:
  """A SentencePiece model of more pieces than the fixture's text tower has rows."""
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefghij"), size=3)) for _ in range(400)]
  texts = [" ".join(rng.choice(words, size=8)) for _ in range(2000)]
  path.write_bytes(tokenizer_lib.train(texts, vocab_size=300))


def test_bad_input_is_one_line_and_leaves_the_workdir_alone(tmp_path):
  base = load_config_module("converted").get_config("runlocal")
  target = tmp_path / "run"
  truncated = tmp_path / "cut.npz"
  truncated.write_bytes(open(SIGLIP_NPZ, "rb").read()[:5000])
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"\x07" * 100)
  bigger = tmp_path / "bigger.model"
  _bigger_tokenizer(bigger)
  absent = str(tmp_path / "absent.model")
  for source, model, weights, tokenizer, error, match in (
      ("big_vision", "siglip_x", SIGLIP_NPZ, SPM, errors.ConfigError, "known: siglip_b16_224"),
      ("big_vision", SIGLIP_JSON, str(truncated), SPM, weights_files.WeightsError,
       "not a readable .npz file"),
      ("big_vision", "siglip_b16_224", SIGLIP_NPZ, SPM, weights_files.WeightsError,
       "do not fit this architecture"),
      ("big_vision", SIGLIP_JSON, SIGLIP_NPZ, absent, sticky_eos.StickyEosError,
       "does not exist"),
      ("big_vision", SIGLIP_JSON, SIGLIP_NPZ, str(garbage), sticky_eos.StickyEosError,
       "not a readable SentencePiece model"),
      ("big_vision", SIGLIP_JSON, SIGLIP_NPZ, None, errors.ConfigError,
       "--tokenizer is required"),
      ("big_vision", SIGLIP_JSON, SIGLIP_NPZ, str(bigger), errors.ConfigError,
       "pieces but config.model.vocab_size=99"),
      ("open_clip", "ViT-B-32", SIGLIP_NPZ, SPM, errors.ConfigError,
       "--tokenizer is for --source=big_vision")):
    with pytest.raises(error, match=match) as raised:
      convert_cli.convert(source, model, weights, str(target), base, tokenizer)
    assert "\n" not in str(raised.value)
    assert not target.exists(), (model, tokenizer)
    assert not list(tmp_path.glob("run.converting-*"))

  for args, line in (
      (("--model=siglip_x", f"--tokenizer={SPM}"),
       "error: --model='siglip_x' is not a known big_vision model; known: siglip_b16_224, "),
      ((f"--model={SIGLIP_JSON}", f"--tokenizer={absent}"),
       f"error: SentencePiece model {absent} does not exist")):
    failed = helpers.run_module("ig_captioner.convert", "--source=big_vision", *args,
                  f"--weights={SIGLIP_NPZ}", f"--workdir={tmp_path / 'cli'}")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith(line), failed.stderr[-2000:]
    assert not (tmp_path / "cli").exists()
