"""open_clip checkpoints converted and compared with open_clip's own outputs: the fixtures were
written by open_clip's code (tests/fixtures/open_clip/make_fixtures.py; versions.json says which)
from random weights moved off their initial values."""

import json
import os

import flax
import jax
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.convert import __main__ as convert_cli
from ig_captioner.convert import open_clip
from ig_captioner.convert import safetensors_io
from ig_captioner.convert import weights_files
from ig_captioner.data import clip_bpe
from ig_captioner.scoring import prompt_scoring

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "open_clip")
SMALL = ("clip_quickgelu", "clip_gelu_custom")
COCA = ("coca_tiny", "coca_quickgelu_custom")


def _converted(name: str):
  arch = open_clip.load_architecture(os.path.join(FIXTURES, f"{name}.json"))
  config = open_clip.model_config(arch)
  state = weights_files.read(os.path.join(FIXTURES, f"{name}.safetensors"))
  params = open_clip.convert_params(state, arch, convert_cli.param_shapes(config))
  return config, state, flax.traverse_util.unflatten_dict(params, sep="/")


def _our_images(io) -> np.ndarray:
  """open_clip's inputs are normalised by CLIP's statistics, ours are in [-1, 1] (channels
  last)."""
  images = io["images_NCHW"].transpose(0, 2, 3, 1) * open_clip.CLIP_STD + open_clip.CLIP_MEAN
  return (2 * images - 1).astype(np.float32)


@pytest.mark.parametrize("name", SMALL + COCA)
def test_features_equal_open_clips(name):
  config, state, params = _converted(name)
  fns = models.build(config).predict_fns
  io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
  images = _our_images(io)
  image_features = np.asarray(jax.jit(fns["embed_images"])(params, images))
  text_features = np.asarray(jax.jit(fns["embed_texts"])(params, io["tokens"].astype(np.int32)))
  np.testing.assert_allclose(image_features, io["image_features"], rtol=0, atol=2e-4)
  np.testing.assert_allclose(text_features, io["text_features"], rtol=0, atol=2e-4)
  # Not merely close to anything: the features differ between images and between texts.
  assert np.abs(image_features[0] - image_features[1]).max() > 1e-2
  scale, bias = fns["logit_scale_and_bias"](params)
  np.testing.assert_allclose(float(scale), np.exp(2.5), rtol=1e-6)
  if "logit_bias" in state:
    np.testing.assert_allclose(float(bias), float(state["logit_bias"]), rtol=1e-6)
  else:
    assert bias is None


@pytest.mark.parametrize("name", COCA)
@pytest.mark.parametrize("method", prompt_scoring.METHODS)
def test_coca_likelihoods_and_priors_equal_open_clips(name, method):
  """sum log P(text | image) over the tokens after the start token through the end token (open
  _clip's labels text[:, 1:], pad excluded), by our scorers (cached and reference) and by the
  training forward; and the `null_image` prior: open_clip's CoCa given a mid-grey image."""
  config, _, params = _converted(name)
  fns = models.build(config).predict_fns
  io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
  images, tokens = _our_images(io), io["tokens"].astype(np.int32)
  # open_clip's CoCa also masks the attention to id 0 ('!', its pad) inside a text; our decoder
  # path does not (our pad never occurs inside a text): compare the texts without it.
  plain = ~np.any(tokens[:, 1:] == 0, axis=1) | (np.argmax(tokens[:, 1:] == 0, axis=1) >
                                                  np.argmax(tokens, axis=1) - 1)
  assert plain.sum() == len(tokens) - 1
  want = io["caption_logprobs"]
  logp = {}
  for prior in prompt_scoring.PRIORS:
    scorer = prompt_scoring.PromptScorer(fns, tokens, method=method, images_per_device=3,
                                         prior=prior, image_size=config.image_size,
                                         unscored_ids=clip_bpe.ClipBpeTokenizer.unscored_ids)
    visual = jax.jit(fns["encode_images"])(params, images)
    got = np.asarray(jax.jit(scorer.image_text_logprobs)(params, visual, scorer.inputs))
    np.testing.assert_allclose(got[:, plain], want[:, plain], rtol=1e-4)
    logp[prior] = np.asarray(jax.jit(scorer.text_logprobs)(params, scorer.inputs))
  np.testing.assert_allclose(logp["null_image"][plain], io["null_image_logprobs"][plain],
                             rtol=1e-4)
  assert np.abs(logp["no_image"] - logp["null_image"]).max() > 1e-2  # Two different priors.
  # The training forward masks as open_clip does, id 0 too: every text agrees.
  logits_BxLxV, _, _ = jax.jit(fns["caption_and_embed"])(
      params, np.repeat(images[:1], len(tokens), 0), tokens)
  targets = tokens[:, 1:]
  token_logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits_BxLxV)),
                                  targets[..., None], -1)[..., 0]
  np.testing.assert_allclose((token_logp * (targets != 0)).sum(-1), want[0], rtol=1e-4)


def test_every_preset_maps_onto_open_clips_state_dict():
  """Each preset's state-dict names and shapes, as open_clip builds the model, convert onto our
  model of that config (0-stride arrays: no memory is spent on the big ones)."""
  with open(os.path.join(FIXTURES, "presets.json"), encoding="utf-8") as f:
    state_shapes = json.load(f)
  assert set(state_shapes) == set(open_clip.presets())
  for name, shapes in state_shapes.items():
    arch = open_clip.load_architecture(name)
    config = open_clip.model_config(arch)
    assert config.name == ("coca" if name.startswith("coca") else "two_towers")
    assert config.activation == ("quick_gelu" if name.endswith("-quickgelu") else "gelu")
    state = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}
    ours = convert_cli.param_shapes(config)
    params = open_clip.convert_params(state, arch, ours)
    n_theirs = sum(int(np.prod(s)) for k, s in shapes.items() if k != "attn_mask")
    assert sum(int(np.prod(v.shape)) for v in params.values()) == n_theirs, name


def test_weights_of_another_architecture_are_named():
  arch = open_clip.load_architecture(os.path.join(FIXTURES, "clip_gelu_custom.json"))
  state = weights_files.read(os.path.join(FIXTURES, "clip_quickgelu.safetensors"))
  with pytest.raises(weights_files.WeightsError) as raised:
    open_clip.convert_params(state, arch, convert_cli.param_shapes(open_clip.model_config(arch)))
  message = str(raised.value)
  assert "\n" not in message
  # The weights have 2 text blocks (not 3), 2 image blocks (not 1), ln_pre, no logit bias, and
  # other widths.
  assert "missing logit_bias, transformer.resblocks.2.attn.in_proj_bias," in message
  assert "; unexpected visual.ln_pre.bias, visual.ln_pre.weight, " in message
  assert "visual.transformer.resblocks.1.attn.in_proj_bias" in message
  assert "; mis-shaped ln_final.bias (32,) (gives (32,) for text_tower/ln_final/bias, expected " \
         "(40,))" in message
  assert message.endswith("pass the --model they were trained as")


def test_unknown_architectures_and_unsupported_fields_are_named(tmp_path):
  with pytest.raises(errors.ConfigError, match="known: ViT-B-16, ViT-B-16-quickgelu, ViT-B-32"):
    open_clip.load_architecture("ViT-X-99")
  coca = json.loads(json.dumps(open_clip.load_architecture("coca_ViT-B-32")))
  coca["vision_cfg"]["attentional_pool"] = "parallel"
  coca["multimodal_cfg"]["heads"] = 4
  with pytest.raises(errors.ConfigError, match=r"attentional_pool='parallel' \(CoCa's pooler is "
                                               r"`true`\); the multimodal decoder's heads 4 "
                                               r"differs from text_cfg.heads=8"):
    open_clip.model_config(coca)
  arch = json.load(open(os.path.join(FIXTURES, "clip_quickgelu.json"), encoding="utf-8"))
  arch["vision_cfg"]["ls_init_value"] = 0.1
  arch["text_cfg"]["pool_type"] = "last"
  with pytest.raises(errors.ConfigError, match=r"ls_init_value=0\.1; text_cfg\.pool_type='last'"):
    open_clip.model_config(arch)
  not_a_model = tmp_path / "x.json"
  not_a_model.write_text("[1, 2]")
  with pytest.raises(errors.ConfigError, match="not an open_clip model config"):
    open_clip.load_architecture(str(not_a_model))


def test_corrupt_and_truncated_files_are_one_line_errors(tmp_path):
  good = open(os.path.join(FIXTURES, "clip_quickgelu.safetensors"), "rb").read()
  for name, data, match in (
      ("truncated", good[:len(good) // 2], "truncated"),
      ("short", good[:5], "shorter than the header length"),
      ("garbage", b"\xff" * 4096, "header of"),
      ("badjson", (20).to_bytes(8, "little") + b"{not json}          ", "not JSON")):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(data)
    with pytest.raises(weights_files.WeightsError, match=match) as raised:
      weights_files.read(str(path))
    assert "\n" not in str(raised.value)
  with pytest.raises(weights_files.WeightsError, match="no such file"):
    weights_files.read(str(tmp_path / "absent.safetensors"))
  with pytest.raises(weights_files.WeightsError, match="unknown kind of file"):
    weights_files.read(__file__)


def test_torch_files_need_torch_and_are_never_unpickled(tmp_path, monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch":
      raise ImportError("no torch here")
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", no_torch)
  path = tmp_path / "open_clip_pytorch_model.bin"
  path.write_bytes(b"not read")
  with pytest.raises(weights_files.WeightsError, match="torch is not installed: use the model's "
                                                       ".safetensors file"):
    weights_files.read(str(path))


def test_npz_pickles_are_refused(tmp_path):
  path = tmp_path / "w.npz"
  np.savez(path, ok=np.ones(3), obj=np.array([{"a": 1}], dtype=object))
  with pytest.raises(weights_files.WeightsError, match="not a readable .npz"):
    weights_files.read(str(path))


def test_safetensors_round_trip_in_every_dtype(tmp_path):
  arrays = {f"a_{name}": (np.arange(6).reshape(2, 3) % 2).astype(dtype)
            for name, dtype in safetensors_io.DTYPES.items()}
  safetensors_io.write(str(tmp_path / "t.safetensors"), arrays, {"format": "np"})
  back = safetensors_io.read(str(tmp_path / "t.safetensors"))
  assert back.keys() == arrays.keys()
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k].astype(np.float64), v.astype(np.float64))


def test_live_open_clip_preset_when_installed():
  """With torch and open_clip importable (not in the default test environment): a preset built
  by open_clip itself, random weights, converted from its state dict and compared."""
  open_clip_lib = pytest.importorskip("open_clip")
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  name = "ViT-B-32-quickgelu"
  model = open_clip_lib.create_model(name, pretrained=None).eval()
  arch = open_clip.load_architecture(name)
  config = open_clip.model_config(arch)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  params = flax.traverse_util.unflatten_dict(
      open_clip.convert_params(state, arch, convert_cli.param_shapes(config)), sep="/")
  rng = np.random.default_rng(0)
  images01 = rng.uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
  normalised = (images01 - open_clip.CLIP_MEAN) / open_clip.CLIP_STD
  tokens = open_clip_lib.get_tokenizer(name)(["a photo of a dog!", "a diagram"])
  with torch.no_grad():
    want_images = model.encode_image(torch.from_numpy(
        normalised.transpose(0, 3, 1, 2).astype(np.float32)), normalize=True).numpy()
    want_texts = model.encode_text(tokens, normalize=True).numpy()
  fns = models.build(config).predict_fns
  got_images = np.asarray(fns["embed_images"](params, 2 * images01 - 1))
  got_texts = np.asarray(fns["embed_texts"](params, tokens.numpy().astype(np.int32)))
  np.testing.assert_allclose(got_images, want_images, rtol=0, atol=2e-4)
  np.testing.assert_allclose(got_texts, want_texts, rtol=0, atol=2e-4)
