"""Model shapes, causality, and the shared decoder's text-only path."""

import flax
import jax
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner.models import captioner
from ig_captioner.models import mixed_precision
from ig_captioner.models import vit
from tests import helpers


def _apply(model, params, *args, method=None):
  """`model.apply` jitted (as `helpers.jitted`: no compile per primitive)."""
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))(params, *args)


@pytest.fixture
def model():
  return captioner.build(helpers.tiny_model_config())


def test_shapes(model):
  params = helpers.random_params(model)
  images = np.zeros((3, 16, 16, 3), np.float32)
  tokens = np.ones((3, 7), np.int32)
  visual = _apply(model, params, images, method="encode")
  assert visual.shape == (3, 4, 32)  # (16/8)^2 patches, nano width 32.
  assert _apply(model, params, tokens, visual, method="decode").shape == (3, 7, 32)
  assert _apply(model, params, tokens, None, method="decode").shape == (3, 7, 32)


def test_text_only_path_uses_the_same_params(model):
  params = helpers.random_params(model)
  tokens = helpers.random_tokens(np.random.default_rng(0), 2, 7, 32)
  images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)

  # The text-only decoder's params are exactly the full model's minus encoder and cross-attention.
  text_only_vars = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, None,
                                                     method="decode"))
  text_only_paths = set(flax.traverse_util.flatten_dict(text_only_vars["params"]))
  full_paths = set(flax.traverse_util.flatten_dict(params))
  assert text_only_paths < full_paths
  assert {p for p in full_paths - text_only_paths if p[0] == "decoder"} == {
      p for p in full_paths if p[0] == "decoder" and ("cross_attn" in p or "ln_cross" in p)}

  def logits(p, with_image):
    visual = _apply(model, p, images, method="encode") if with_image else None
    return np.asarray(_apply(model, p, tokens, visual, method="decode"))

  def perturbed(module_name):
    flat = flax.traverse_util.flatten_dict(params)
    flat = {k: (v + 1.0 if module_name in k else v) for k, v in flat.items()}
    return flax.traverse_util.unflatten_dict(flat)

  # Cross-attention and encoder params only matter when there are visual tokens...
  for name in ("cross_attn", "encoder"):
    np.testing.assert_array_equal(logits(perturbed(name), False), logits(params, False))
    assert not np.allclose(logits(perturbed(name), True), logits(params, True))
  # ...while the shared decoder params drive both paths.
  assert not np.allclose(logits(perturbed("self_attn"), False), logits(params, False))
  assert not np.allclose(logits(perturbed("self_attn"), True), logits(params, True))


def test_decoder_is_causal(model):
  params = helpers.random_params(model)
  tokens = helpers.random_tokens(np.random.default_rng(0), 1, 7, 32)
  changed = tokens.copy()
  changed[0, 4] = (changed[0, 4] + 1) % 32
  a = np.asarray(_apply(model, params, tokens, None, method="decode"))
  b = np.asarray(_apply(model, params, changed, None, method="decode"))
  np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-6, atol=1e-6)
  assert not np.allclose(a[:, 4:], b[:, 4:])


def test_bfloat16_compute_keeps_float32_params():
  model = captioner.build(helpers.tiny_model_config(dtype="bfloat16"))
  params = jax.eval_shape(lambda: captioner.init_params(model, jax.random.key(0)))
  assert {x.dtype for x in jax.tree.leaves(flax.linen.meta.unbox(params))} == {np.dtype(np.float32)}
  out = _apply(model, helpers.random_params(model), np.zeros((1, 16, 16, 3)),
               np.ones((1, 7), np.int32))
  assert out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("spec,shape_a,shape_b", [
    ("ai,io->ao", (6, 5), (5, 3)),
    ("bqhk,bshk->bhqs", (2, 5, 3, 4), (2, 6, 3, 4)),
    ("bhqs,bshk->bqhk", (2, 3, 5, 6), (2, 6, 3, 4)),
    ("bchqk,bcshk->bchqs", (2, 3, 2, 5, 4), (2, 3, 6, 2, 4))])
def test_bfloat16_products_and_their_gradients_match_float32(spec, shape_a, shape_b):
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
  cotangent = rng.normal(size=np.einsum(spec, a, b).shape)

  mixed_einsum = mixed_precision.mixed_einsum

  def loss(a, b, dtype):
    return (mixed_einsum(spec, a, b, dtype) * cotangent).sum()

  for dtype, tol in ((np.float32, 1e-5), (jax.numpy.bfloat16, 3e-2)):
    out = mixed_einsum(spec, a.astype(np.float32), b.astype(np.float32), dtype)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.einsum(spec, a, b), rtol=tol, atol=tol * 3)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(
        a.astype(np.float32), b.astype(np.float32), dtype)
    expected = jax.grad(lambda a, b: (jax.numpy.einsum(spec, a, b) * cotangent).sum(),
                        argnums=(0, 1))(a, b)
    for got, want in zip(grads, expected):
      np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 3)


def test_named_sizes():
  size, patch = vit.parse_variant("B/16")
  assert (size.width, size.depth, size.mlp_dim, size.num_heads, patch) == (768, 12, 3072, 12, 16)


@pytest.mark.parametrize("field,value,match", [
    ("encoder", "B16", "SIZE/PATCH"),
    ("encoder", "X/16", "SIZE/PATCH"),
    ("decoder", "huge", "config.model.decoder"),
    ("dtype", "float16", "config.model.dtype"),
    ("max_text_len", 1, "max_text_len"),
])
def test_bad_model_config_values_are_named(field, value, match):
  with pytest.raises(ValueError, match=match):
    captioner.build(helpers.tiny_model_config(**{field: value}))


def test_unknown_family_names_the_known_ones():
  with pytest.raises(errors.ConfigError,
                     match=r"config.model.name='clip' is unknown; known: \['captioner', "
                           r"'coca', 'two_towers'\]"):
    helpers.jitted(models.build(helpers.tiny_model_config(name="clip")))


def test_two_towers_give_unit_embeddings_that_ignore_padding():
  model = helpers.jitted(models.build(helpers.tiny_two_towers_config()))
  params = helpers.random_params(model)
  embed_texts, embed_images = model.predict_fns["embed_texts"], model.predict_fns["embed_images"]
  tokens = np.array([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 2, 0, 0, 0, 0, 0]], np.int32)
  z_txt = np.asarray(embed_texts(params, tokens))
  np.testing.assert_allclose(np.linalg.norm(z_txt, axis=1), 1.0, rtol=1e-5)
  # Pooled at the last non-pad token behind a causal mask: the padding length changes nothing.
  np.testing.assert_allclose(np.asarray(embed_texts(params, tokens[:, :4])), z_txt, rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(z_txt[0], z_txt[1])
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  z_img = np.asarray(embed_images(params, images))
  assert z_img.shape == (2, 16) and not np.allclose(z_img[0], z_img[1])
  np.testing.assert_allclose(np.linalg.norm(z_img, axis=1), 1.0, rtol=1e-5)
  scale, bias = model.predict_fns["logit_scale_and_bias"](params)
  np.testing.assert_allclose(scale, np.exp(params["log_temperature"]), rtol=1e-6)
  assert bias == params["bias"]


def test_two_towers_params_carry_logical_axes_and_the_papers_initialisation():
  clip = helpers.jitted(models.build(helpers.tiny_two_towers_config(temperature_init=1 / 0.07,
                                                                    bias_init=None)))
  boxed = jax.eval_shape(lambda: clip.init_params(jax.random.key(0)))
  names = flax.linen.get_partition_spec(boxed)
  assert tuple(names["image_projection"]["kernel"]) == ("embed", "joint_embed")
  assert tuple(names["text_projection"]["kernel"]) == ("embed", "joint_embed")
  assert "bias" not in boxed  # CLIP has no logit bias...
  params = flax.linen.meta.unbox(jax.jit(clip.init_params)(jax.random.key(0)))
  np.testing.assert_allclose(np.exp(params["log_temperature"]), 1 / 0.07, rtol=1e-5)
  # ...SigLIP's starts at t=10, b=-10.
  siglip = helpers.jitted(models.build(helpers.tiny_two_towers_config()))
  params = flax.linen.meta.unbox(jax.jit(siglip.init_params)(jax.random.key(0)))
  np.testing.assert_allclose([np.exp(params["log_temperature"]), params["bias"]], [10.0, -10.0],
                             rtol=1e-5)
