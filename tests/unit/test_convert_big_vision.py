"""big_vision checkpoints converted and compared with big_vision's own outputs: the fixtures were
written by big_vision's code (tests/fixtures/big_vision/make_fixtures.py; versions.json says
which) from random weights moved off their initial values, and its `tokenize` op."""

import json
import os

import flax
import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.convert import __main__ as convert_cli
from ig_captioner.convert import big_vision
from ig_captioner.convert import weights_files
from ig_captioner.data import sticky_eos
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.models import layers
from tests import helpers

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "big_vision")
SPM = os.path.join(FIXTURES, "tiny_spm.model")
# What the image half alone takes from the base config (and ignores).
FALLBACK = ml_collections.ConfigDict(dict(vocab_size=100, max_text_len=8))


def _state(name: str) -> dict[str, np.ndarray]:
  return big_vision.checkpoint_params(weights_files.read(os.path.join(FIXTURES, f"{name}.npz")))


def _converted(name: str, arch: dict | None = None, state=None):
  """(config.model, params tree) of fixture `name` (its weights, and its JSON unless `arch`)."""
  arch = arch or big_vision.load_architecture(os.path.join(FIXTURES, f"{name}.json"))
  state = _state(name) if state is None else state
  towers = big_vision.architecture(arch, state)
  image_size, text_len = big_vision.input_sizes(towers, state, arch.get("_image_size"))
  config = big_vision.model_config(towers, image_size, text_len, FALLBACK)
  params = big_vision.convert_params(state, towers, image_size, text_len,
                                     convert_cli.param_shapes(config))
  return config, flax.traverse_util.unflatten_dict(params, sep="/")


def _encoded(model: models.Model, params, images):
  """The image tower's tokens (what a captioner's encoder gives) of the pixels it reads."""
  size = model.module.tower_image_size
  return np.asarray(jax.jit(lambda p, x: model.module.apply(
      {"params": p}, x, method=lambda m, y: m.image_tower(y)))(params, images[:, :size, :size]))


@pytest.mark.parametrize("name", ("siglip_scanned", "siglip_unscanned"))
def test_two_towers_equal_big_visions(name):
  config, params = _converted(name)
  model = helpers.jitted(models.build(config))
  io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
  image_features = np.asarray(model.predict_fns["embed_images"](params, io["images"]))
  text_features = np.asarray(model.predict_fns["embed_texts"](params, io["tokens"]))
  np.testing.assert_allclose(image_features, io["image_features"], rtol=0, atol=2e-4)
  np.testing.assert_allclose(text_features, io["text_features"], rtol=0, atol=2e-4)
  np.testing.assert_allclose(_encoded(model, params, io["images"]), io["encoded"], rtol=0,
                             atol=2e-4)
  scale, bias = model.predict_fns["logit_scale_and_bias"](params)
  logits = image_features @ text_features.T * float(scale) + (0.0 if bias is None else bias)
  np.testing.assert_allclose(logits, io["logits"], rtol=0, atol=2e-3)
  # The unscanned fixture has no bias, and 26 px images (24 read, as by big_vision's convolution).
  assert (bias is None) == (name == "siglip_unscanned") == config.get("drop_partial_patches")
  # Not merely close to anything: the features differ between images and between texts.
  assert np.abs(image_features[0] - image_features[1]).max() > 1e-2
  assert np.abs(text_features[0] - text_features[1]).max() > 1e-2


@pytest.mark.parametrize("name", ("vit_map_head", "vit_tok"))
def test_plain_vit_becomes_the_image_half(name):
  config, params = _converted(name)
  assert config.text_encoder is None and config.class_token == (name == "vit_tok")
  model = helpers.jitted(models.build(config))
  assert set(model.predict_fns) == {"embed_images"}
  io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
  features = np.asarray(model.predict_fns["embed_images"](params, io["images"]))
  np.testing.assert_allclose(features, io["image_features"], rtol=0, atol=2e-4)
  np.testing.assert_allclose(_encoded(model, params, io["images"]), io["encoded"], rtol=0,
                             atol=2e-4)
  assert np.abs(features[0] - features[1]).max() > 1e-2
  # The head's width came from the weights (the JSON gives none).
  assert ("image_projection" in params) == (name == "vit_map_head")


def test_a_two_tower_configs_image_part_takes_a_plain_vits_weights():
  """The image tower of a SigLIP checkpoint saved alone (big_vision's `...npz:img`)."""
  arch = big_vision.load_architecture(os.path.join(FIXTURES, "siglip_scanned.json"))
  image_only = {k[len("img/"):]: v for k, v in _state("siglip_scanned").items()
                if k.startswith("img/")}
  config, params = _converted("siglip_scanned", arch, image_only)
  _, both = _converted("siglip_scanned")
  assert config.text_encoder is None and set(params) == {"image_tower", "image_map_head"}
  for path, value in flax.traverse_util.flatten_dict(params, sep="/").items():
    np.testing.assert_array_equal(value, flax.traverse_util.flatten_dict(both, sep="/")[path])


def test_sticky_eos_tokenizer_gives_big_visions_ids():
  with open(os.path.join(FIXTURES, "tokenizer_cases.json"), encoding="utf-8") as f:
    cases = json.load(f)
  tokenizer = tokenizer_lib.from_setting(f"sticky_eos:{SPM}")
  assert isinstance(tokenizer, sticky_eos.StickyEosTokenizer)
  for case in cases:
    ids = tokenizer.encode(case["text"], case["max_len"])
    assert ids.dtype == np.int32
    assert ids.tolist() == case["ids"], case["text"]
  # The cases hold cut texts, padded ones, and upper case letters beyond ASCII.
  assert any(c["ids"][-2:] == [1, 1] for c in cases)
  assert any(len(c["text"]) > 4 * c["max_len"] for c in cases)
  io = np.load(os.path.join(FIXTURES, "siglip_scanned_io.npz"))
  np.testing.assert_array_equal(tokenizer.encode_batch(list(io["texts"]), 16), io["tokens"])


def test_sticky_eos_tokenizer_edges(tmp_path):
  tokenizer = sticky_eos.StickyEosTokenizer.from_file(SPM)
  assert tokenizer.vocab_size == 99 and not tokenizer.has_reserved_ids
  with pytest.raises(errors.ConfigError, match="needs 5 tokens with its end token but "
                                               "max_text_len is 4"):
    tokenizer.encode("the digit three written", 4, strict=True)
  assert tokenizer.encode("the digit three written", 4)[-1] == tokenizer.eos_id
  with pytest.raises(errors.ConfigError, match="reserved ids"):
    tokenizer.encode("x", 8, prefix="caption")
  assert tokenizer.decode(tokenizer.encode("A Photo of the number seven", 16)) == (
      "a photo of the number seven")
  garbage = tmp_path / "bad.model"
  garbage.write_bytes(b"\x00not a model" * 10)
  for path, match in ((str(tmp_path / "absent.model"), "does not exist"),
                      (str(garbage), "not a readable SentencePiece model")):
    with pytest.raises(sticky_eos.StickyEosError, match=match) as raised:
      tokenizer_lib.from_setting(f"sticky_eos:{path}")
    assert "\n" not in str(raised.value)


def test_every_preset_maps_onto_big_visions_params():
  """Each preset's param names and shapes, as big_vision builds it (scanned), convert onto our
  model of the same size: every array used once, as many numbers, the image size and text
  length read from the position embeddings (0-stride arrays: no memory for the big ones)."""
  with open(os.path.join(FIXTURES, "presets.json"), encoding="utf-8") as f:
    all_shapes = json.load(f)
  assert set(all_shapes) == set(big_vision.presets())
  for name, shapes in all_shapes.items():
    preset = big_vision.presets()[name]
    state = big_vision.checkpoint_params({f"params/{k}": np.broadcast_to(np.zeros((), np.float32),
                                                                        s)
                                          for k, s in shapes.items()})
    config, params = _converted(name, preset, state)
    assert (config.image_size, config.max_text_len) == (preset["_image_size"],
                                                         preset["_text_len"]), name
    assert (config.vocab_size, config.image_projection, config.text_projection) == (
        32000, False, True)
    assert config.drop_partial_patches == (name == "siglip_so400m14_384")  # 384 = 27 * 14 + 6.
    leaves = jax.tree.leaves(params)
    assert sum(v.size for v in leaves) == sum(int(np.prod(s)) for s in shapes.values()), name


def test_converted_params_carry_logical_axis_names():
  config, _ = _converted("siglip_scanned")
  model = models.build(config)
  boxed = flax.traverse_util.flatten_dict(jax.eval_shape(model.init_params, jax.random.key(0)),
                                          sep="/")
  assert "image_map_head/probe" in boxed and "text_projection/bias" in boxed
  for path, value in boxed.items():
    assert isinstance(value, flax.linen.Partitioned), path
    assert len(value.names) == len(value.value.shape), path


def test_weights_of_another_architecture_are_named():
  arch = big_vision.load_architecture(os.path.join(FIXTURES, "siglip_scanned.json"))
  arch["image"] = {**arch["image"], "depth": 3}
  arch["text"] = {**arch["text"], "num_heads": 4}
  del arch["bias_init"]
  with pytest.raises(weights_files.WeightsError) as raised:
    _converted("siglip_scanned", arch)
  message = str(raised.value)
  assert "\n" not in message and message.endswith("pass the --model they were trained as")
  assert "unexpected b; mis-shaped " in message
  assert "img/Transformer/encoderblock/LayerNorm_0/bias (2, 32) (expected (3, 32))" in message

  arch = big_vision.load_architecture(os.path.join(FIXTURES, "siglip_unscanned.json"))
  arch["image"] = {**arch["image"], "depth": 4}
  with pytest.raises(weights_files.WeightsError, match=(
      r"\(missing img/Transformer/encoderblock_3/LayerNorm_0/bias, .* and 8 more\): ")):
    _converted("siglip_unscanned", arch)
  arch["image"] = {**arch["image"], "depth": 3, "pool_type": "map"}
  with pytest.raises(weights_files.WeightsError, match=r"\(missing img/MAPHead_0/LayerNorm_0/"):
    _converted("siglip_unscanned", arch)

  # A two-tower checkpoint given a ViT config, and a ViT given a wrong width.
  with pytest.raises(errors.ConfigError, match="the weights hold two towers"):
    _converted("siglip_scanned", {"width": 32})
  with pytest.raises(weights_files.WeightsError, match=r"\(mis-shaped MAPHead_0/LayerNorm_0/"
                                                       r"bias \(24,\) \(expected \(32,\)\)"):
    _converted("vit_map_head", {"width": 32, "num_heads": 4, "patch_size": 8, "pool_type": "map"})


@pytest.mark.parametrize("change, match", [
    (lambda a: a["image"].update(pool_type="0"), r"pool_type='0' \(supported: \['gap', 'map'"),
    (lambda a: a["image"].update(posemb="sincos2d"), "posemb='sincos2d'"),
    (lambda a: a["text"].update(pool_type="map"), "text.pool_type='map' is not supported"),
    (lambda a: a["image"].update(colour=1), r"fields big_vision's model does not take: \['colour"),
    (lambda a: a.update(image_model="proj.image_text.naflex_vit"), "image_model="),
    (lambda a: a["image"].update(variant="Q/16"), "variant='Q/16' is not a big_vision variant"),
    (lambda a: a.update(out_dim=[16, 24]), "image embeddings of width 16 and text embeddings "
                                           "of width 24"),
])
def test_unsupported_configs_are_named(change, match):
  arch = big_vision.load_architecture(os.path.join(FIXTURES, "siglip_scanned.json"))
  arch = json.loads(json.dumps(arch))
  change(arch)
  with pytest.raises(errors.ConfigError, match=match):
    big_vision.architecture(arch, _state("siglip_scanned"))


def test_unknown_presets_and_bad_model_files_are_named(tmp_path):
  with pytest.raises(errors.ConfigError, match="known: siglip_b16_224, siglip_b16_256, "):
    big_vision.load_architecture("siglip_x")
  bad = tmp_path / "x.json"
  for text, match in (("[1, 2]", "not a big_vision model config"), ("{", "is not JSON")):
    bad.write_text(text)
    with pytest.raises(errors.ConfigError, match=match):
      big_vision.load_architecture(str(bad))
  with pytest.raises(errors.ConfigError, match="no such file"):
    big_vision.load_architecture(str(tmp_path / "absent.json"))
  b16, l16, so400m = (big_vision.architecture(big_vision.presets()[f"siglip_{n}"], {"txt/x": 0})
                      for n in ("b16_224", "l16_256", "so400m14_384"))
  assert (b16.image.size, b16.image.patch, b16.image.head, b16.text.head) == (
      layers.SIZES["B"], 16, None, 768)
  assert l16.text.size == layers.SIZES["L"] and so400m.image.patch == 14
  assert so400m.text.size == so400m.image.size == layers.TransformerSize(
      width=1152, depth=27, mlp_dim=4304, num_heads=16)


def test_corrupt_truncated_and_pickled_npz_files_are_one_line_errors(tmp_path):
  good = open(os.path.join(FIXTURES, "vit_tok.npz"), "rb").read()
  (tmp_path / "cut.npz").write_bytes(good[:len(good) // 2])
  (tmp_path / "rot.npz").write_bytes(good)
  helpers.corrupt_middle_third(tmp_path / "rot.npz")
  np.savez(tmp_path / "pickled.npz", ok=np.ones(3), obj=np.array([{"a": 1}], dtype=object))
  for name in ("cut", "rot", "pickled"):
    with pytest.raises(weights_files.WeightsError, match="not a readable .npz file") as raised:
      weights_files.read(str(tmp_path / f"{name}.npz"))
    assert "\n" not in str(raised.value)
  state = _state("vit_tok")
  state["Transformer/encoder_norm/scale"] = state["Transformer/encoder_norm/scale"] * np.nan
  with pytest.raises(weights_files.WeightsError, match="NaN or infinite"):
    _converted("vit_tok", state=state)


def test_bfloat16_checkpoints_and_training_checkpoints_are_read():
  """numpy stores bfloat16 as 2-byte voids; a training checkpoint has optimizer state beside
  `params/`, which is left out."""
  state = _state("vit_tok")
  stored = {f"params/{k}": v.astype(ml_dtypes.bfloat16).view("V2")
            for k, v in state.items()}
  stored["opt/0/mu/embedding/bias"] = np.zeros(3, np.float32)
  read = big_vision.checkpoint_params(stored)
  assert set(read) == set(state) and read["embedding/bias"].dtype == ml_dtypes.bfloat16
  _, params = _converted("vit_tok", state=read)
  np.testing.assert_allclose(params["image_tower"]["patch_embed"]["bias"],
                             state["embedding/bias"], rtol=1e-2)


def test_new_two_tower_options_default_to_todays_model():
  """Existing configs build the same model: same params, no MAP head, no projection bias."""
  model = models.build(helpers.tiny_two_towers_config())
  assert model.module.options == models.get("two_towers").Options()
  shapes = convert_cli.param_shapes(helpers.tiny_two_towers_config())
  assert {k.split("/")[0] for k in shapes} == {
      "image_tower", "image_projection", "text_tower", "text_projection", "log_temperature",
      "bias"}
  assert "image_projection/bias" not in shapes and "text_projection/bias" not in shapes
  partial = models.build(helpers.tiny_two_towers_config(image_size=20, drop_partial_patches=True))
  params = helpers.random_params(partial)
  with pytest.raises(ValueError, match=r"expected \(B, 20, 20, C\)"):
    partial.predict_fns["embed_images"](params, np.zeros((1, 16, 16, 3), np.float32))
  with pytest.raises(errors.ConfigError, match="not a multiple of the patch size"):
    models.build(helpers.tiny_two_towers_config(image_size=20))
