"""CoCa and CapPa: what makes each what it is (CoCa's unimodal half never sees the image; CapPa's
parallel examples read only <mask> tokens without a causal mask, in the configured share, drawn
reproducibly). Every family trained and evaluated end to end: tests/e2e/test_families.py."""

import jax
import ml_collections
import numpy as np

from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import token_ids
from ig_captioner.objectives import cappa
from tests import helpers

def _coca():
  cfg = helpers.tiny_model_config(name="coca", unimodal_depth=1, multimodal_depth=1,
                                  embed_dim=16, temperature_init=1 / 0.07)
  del cfg["decoder_depth"]
  return helpers.jitted(models.build(cfg))


def test_coca_unimodal_half_never_sees_the_image():
  model = _coca()
  params = helpers.random_params(model)
  rng = np.random.default_rng(0)
  tokens = helpers.random_tokens(rng, 3, 8, 32)
  images = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
  forward = jax.jit(model.predict_fns["caption_and_embed"])
  logits, z_img, z_txt = forward(params, images, tokens)
  logits2, z_img2, z_txt2 = forward(params, images[::-1].copy(), tokens)
  np.testing.assert_array_equal(z_txt2, z_txt)  # The text embedding ignores the image...
  assert not np.allclose(logits2, logits) and not np.allclose(z_img2, z_img)  # ...the rest not.
  unimodal = {k for k in params if k.startswith("unimodal")}
  assert unimodal and all("cross_attn" not in params[k] for k in unimodal)
  assert all("cross_attn" in params[k] for k in params if k.startswith("multimodal"))
  # The joint forward is the separate predict functions, in one pass.
  predict = model.predict_fns
  separate = jax.jit(lambda p, i, t: (predict["embed_texts"](p, t), predict["decode"](
      p, t[:, :-1], predict["encode_images"](p, i))))
  z_txt_alone, logits_alone = separate(params, images, tokens)
  np.testing.assert_allclose(z_txt, z_txt_alone, atol=1e-6)
  np.testing.assert_allclose(logits, logits_alone, atol=1e-5)


def test_cappa_parallel_inputs_are_mask_tokens_and_keep_prefixes():
  inputs = np.array([[1, 5, 9, 10, 2], [1, 9, 10, 11, 2], [1, 6, 9, 2, 0]], np.int32)
  parallel = np.array([True, False, True])
  out = np.asarray(cappa.parallel_inputs(inputs, parallel))
  mask = token_ids.MASK_ID
  np.testing.assert_array_equal(out, [[mask, 5, mask, mask, mask], inputs[1],
                                      [mask, 6, mask, mask, mask]])


def test_parallel_decoding_has_no_causal_mask():
  model = helpers.jitted(models.build(helpers.tiny_model_config()))
  params = helpers.random_params(model)
  decode = model.predict_fns["decode_parallel"]
  tokens = np.full((2, 7), token_ids.MASK_ID, np.int32)
  changed = tokens.copy()
  changed[:, 5] = 9  # A later input.
  visual = model.predict_fns["encode_images"](params, np.zeros((2, 16, 16, 3), np.float32))
  parallel = np.array([True, False])
  a = np.asarray(decode(params, tokens, visual, parallel))
  b = np.asarray(decode(params, changed, visual, parallel))
  assert not np.allclose(a[0, :5], b[0, :5])  # Parallel: earlier outputs see the later input.
  np.testing.assert_allclose(a[1, :5], b[1, :5], atol=1e-6)  # Autoregressive: they do not.


def test_cappa_draws_the_configured_share_reproducibly():
  model = helpers.jitted(models.build(helpers.tiny_model_config()))
  calls = []
  predict = dict(model.predict_fns)
  inner = predict["decode_parallel"]
  predict["decode_parallel"] = lambda p, t, v, par: (calls.append((np.asarray(t),
                                                                   np.asarray(par))),
                                                     inner(p, t, v, par))[1]
  config = ml_collections.ConfigDict(dict(model=helpers.tiny_model_config(), objective=dict(
      name="cappa", parallel_fraction=0.75, text_only_weight=0.0)))
  loss_fn = objectives.make_loss(config, predict)
  params = helpers.random_params(model)
  rng = np.random.default_rng(0)
  tokens = helpers.random_tokens(rng, 16, 8, 32)
  batch = {"image": rng.normal(size=(16, 16, 16, 3)).astype(np.float32), "tokens": tokens,
           "target_mask": token_ids.scored_targets(tokens)}
  key = jax.random.key(0)
  for step in range(40):  # As the train step derives it: seed and step.
    loss_fn(params, batch, jax.random.fold_in(key, step))
  drawn = np.stack([par for _, par in calls])  # 40 x 16 draws.
  assert abs(drawn.mean() - 0.75) < 4.5 * np.sqrt(0.75 * 0.25 / drawn.size)
  assert 0 < drawn.mean() < 1 and len({tuple(d) for d in drawn}) > 30  # Varies with the step.
  for inputs, par in calls:
    assert (inputs[par] == token_ids.MASK_ID).all()
    np.testing.assert_array_equal(inputs[~par], tokens[~par, :-1])
  calls.clear()
  loss_fn(params, batch, jax.random.fold_in(key, 7))  # The same step draws the same examples.
  np.testing.assert_array_equal(calls[0][1], drawn[7])
