"""The objectives against numpy references: the IG captioning loss (and its lambda=0 fast path),
CLIP's softmax and SigLIP's sigmoid contrastive losses, and the contrastive losses over a
sharded global batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ig_captioner import experiment
from ig_captioner import errors
from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner import train_state
from ig_captioner import tree_paths
from ig_captioner.token_ids import PAD_ID
from ig_captioner.objectives import base
from ig_captioner.objectives import captioning
from ig_captioner.scoring import likelihood
from ig_captioner.objectives import sigmoid_contrastive
from tests import helpers


def numpy_sequence_logprob(logits_BxLxV, targets_BxL):
  """Reference: log-softmax by hand, sum over targets up to and including EOS, never PAD."""
  logits = logits_BxLxV.astype(np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  out = np.zeros(logits.shape[0])
  for b in range(logits.shape[0]):
    for i, t in enumerate(targets_BxL[b]):
      if t == PAD_ID:
        break
      out[b] += logp[b, i, t]
  return out


def test_sequence_logprob_matches_numpy():
  rng = np.random.default_rng(0)
  tokens = helpers.random_tokens(rng, 5, 9, 20)
  logits = rng.normal(size=(5, 8, 20)).astype(np.float32) * 3
  inputs, targets = likelihood.inputs_and_targets(tokens)
  np.testing.assert_array_equal(inputs, tokens[:, :-1])
  np.testing.assert_allclose(likelihood.sequence_logprob(logits, targets),
                             numpy_sequence_logprob(logits, targets), rtol=1e-5)


def test_counts_eos_but_not_bos_or_pad():
  # Uniform logits over V: log P(t) = -(number of counted tokens) * log V.
  tokens = np.array([[1, 7, 8, 2, 0, 0]], np.int32)  # BOS, two pieces, EOS, PAD, PAD.
  _, targets = likelihood.inputs_and_targets(tokens)
  logp = likelihood.sequence_logprob(np.zeros((1, 5, 10), np.float32), targets)
  np.testing.assert_allclose(logp, [-3 * np.log(10)], rtol=1e-6)


@pytest.fixture
def captioner_model():
  return helpers.jitted(models.build(helpers.tiny_model_config()))


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_caption_loss_matches_numpy(captioner_model, weight):
  predict = captioner_model.predict_fns
  params = helpers.random_params(captioner_model)
  rng = np.random.default_rng(1)
  images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 4, 8, 32)
  loss, metrics = jax.jit(lambda p: base.caption_loss(
      predict, p, images, tokens, token_ids.scored_targets(tokens), weight))(params)

  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  visual = predict["encode_images"](params, images)
  logp_img = numpy_sequence_logprob(np.asarray(predict["decode"](params, inputs, visual)),
                                    targets)
  logp_txt = numpy_sequence_logprob(np.asarray(predict["decode"](params, inputs, None)), targets)
  num_tokens = (targets != 0).sum()
  ce_img, ce_txt = -logp_img.sum() / num_tokens, -logp_txt.sum() / num_tokens
  np.testing.assert_allclose(loss, ce_img + weight * ce_txt, rtol=1e-5)
  np.testing.assert_allclose(metrics["ce_with_image"], ce_img, rtol=1e-5)
  if weight:
    np.testing.assert_allclose(metrics["ce_text_only"], ce_txt, rtol=1e-5)
    np.testing.assert_allclose(metrics["info_gain_per_token"],
                               (logp_img.sum() - logp_txt.sum()) / num_tokens, rtol=1e-4,
                               atol=1e-6)
  else:
    assert "ce_text_only" not in metrics and "info_gain_per_token" not in metrics


@pytest.mark.parametrize("fraction, k", [(0.5, 2), (0.3, 2), (1.0, 4)])
def test_text_only_pass_on_a_fraction_of_the_batch_matches_numpy(captioner_model, fraction, k):
  predict = captioner_model.predict_fns
  params = helpers.random_params(captioner_model)
  rng = np.random.default_rng(3)
  images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 4, 8, 32)
  objective_config = ml_collections.ConfigDict(
      dict(name="captioning", text_only_weight=0.7, text_only_fraction=fraction))
  captioning.validate(objective_config)
  loss_fn = captioning.make_loss(objective_config, predict)
  batch = dict(image=images, tokens=tokens, target_mask=token_ids.scored_targets(tokens))
  loss, metrics = jax.jit(loss_fn)(params, batch, None)

  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  visual = predict["encode_images"](params, images)
  logp_img = numpy_sequence_logprob(np.asarray(predict["decode"](params, inputs, visual)),
                                    targets)
  logp_txt = numpy_sequence_logprob(
      np.asarray(predict["decode"](params, inputs[:k], None)), targets[:k])
  ce_img = -logp_img.sum() / (targets != 0).sum()
  ce_txt = -logp_txt.sum() / (targets[:k] != 0).sum()  # Its own examples' tokens only.
  np.testing.assert_allclose(metrics["ce_text_only"], ce_txt, rtol=1e-5)
  np.testing.assert_allclose(loss, ce_img + 0.7 * ce_txt, rtol=1e-5)
  assert ("info_gain_per_token" in metrics) == (k == 4)


def test_lambda_warmup_ramps_the_text_only_weight_with_the_train_step(captioner_model):
  predict = captioner_model.predict_fns
  params = helpers.random_params(captioner_model)
  rng = np.random.default_rng(4)
  images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 4, 8, 32)
  batch = dict(image=images, tokens=tokens, target_mask=token_ids.scored_targets(tokens))
  objective_config = ml_collections.ConfigDict(
      dict(name="captioning", text_only_weight=0.8, text_only_warmup_steps=10))
  captioning.validate(objective_config)
  loss_fn = captioning.make_loss(objective_config, predict)
  _, full = jax.jit(lambda p: base.caption_loss(predict, p, images, tokens,
                                                 batch["target_mask"], 1.0))(params)
  jitted_loss = jax.jit(loss_fn)
  for step, ramp in ((0, 0.0), (5, 0.5), (10, 1.0), (30, 1.0)):
    loss, metrics = jitted_loss(params, batch, None, step)
    np.testing.assert_allclose(
        loss, full["ce_with_image"] + 0.8 * ramp * full["ce_text_only"], rtol=1e-5)
    np.testing.assert_allclose(metrics["text_only_weight"], 0.8 * ramp, rtol=1e-6)
  with pytest.raises(ValueError, match="needs the train step"):
    loss_fn(params, batch, None)

  # The train step hands the loss its step.
  tx = optax.sgd(0.0)
  state = train_state.TrainState(jnp.asarray(5, jnp.int32), params, tx.init(params))
  step_fn = experiment.make_train_step(loss_fn, tx, optax.constant_schedule(0.0), seed=0)
  _, metrics = jax.jit(step_fn)(state, batch)
  np.testing.assert_allclose(metrics["text_only_weight"], 0.4, rtol=1e-6)


@pytest.mark.parametrize("warmup", [-1, 2.5])
def test_a_bad_text_only_warmup_is_refused(warmup):
  with pytest.raises(errors.ConfigError, match="text_only_warmup_steps"):
    captioning.validate(ml_collections.ConfigDict(
        dict(name="captioning", text_only_weight=1.0, text_only_warmup_steps=warmup)))


@pytest.mark.parametrize("fraction", [0.0, 1.5, "half"])
def test_a_bad_text_only_fraction_is_refused(fraction):
  with pytest.raises(errors.ConfigError, match="text_only_fraction"):
    captioning.validate(ml_collections.ConfigDict(
        dict(name="captioning", text_only_weight=1.0, text_only_fraction=fraction)))


def test_lambda_zero_never_runs_the_text_only_pass(captioner_model):
  params = helpers.random_params(captioner_model)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, 2, 8, 32)

  def spying(calls):
    """The predict functions, recording which decoder paths run."""
    decode = captioner_model.predict_fns["decode"]

    def spy(params, tokens_BxL, visual=None):
      calls.append("text_only" if visual is None else "with_image")
      return decode(params, tokens_BxL, visual)
    return dict(captioner_model.predict_fns, decode=spy)

  def grad_fn(weight, calls):
    predict = spying(calls)
    mask = token_ids.scored_targets(tokens)
    return jax.grad(lambda p: base.caption_loss(predict, p, images, tokens, mask,
                                                      weight)[0])

  calls0, calls1 = [], []
  cost0 = jax.jit(grad_fn(0.0, calls0)).lower(params).compile().cost_analysis()["flops"]
  cost1 = jax.jit(grad_fn(1.0, calls1)).lower(params).compile().cost_analysis()["flops"]
  assert calls0 == ["with_image"]
  assert calls1 == ["with_image", "text_only"]
  # The compiled gradient is smaller by the text-only forward and backward passes.
  assert cost0 < 0.9 * cost1


def _batch(rng, b=4):
  images = rng.normal(size=(b, 16, 16, 3)).astype(np.float32)
  tokens = helpers.random_tokens(rng, b, 8, 32)
  return dict(image=images, tokens=tokens, target_mask=token_ids.scored_targets(tokens))


def test_a_separate_text_only_batch_is_what_the_text_only_pass_scores(captioner_model):
  predict = captioner_model.predict_fns
  params = helpers.random_params(captioner_model)
  rng = np.random.default_rng(5)
  batch = _batch(rng)
  texts = helpers.random_tokens(rng, 4, 8, 32)
  batch.update(text_only_tokens=texts, text_only_target_mask=token_ids.scored_targets(texts))
  objective_config = ml_collections.ConfigDict(
      dict(name="captioning", text_only_weight=0.6, text_only_batch="separate"))
  captioning.validate(objective_config)
  loss, metrics = captioning.make_loss(objective_config, predict)(params, batch, None)

  inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
  visual = predict["encode_images"](params, batch["image"])
  logp_img = numpy_sequence_logprob(np.asarray(predict["decode"](params, inputs, visual)),
                                    targets)
  logp_txt = numpy_sequence_logprob(np.asarray(predict["decode"](params, texts[:, :-1], None)),
                                    texts[:, 1:])
  ce_img = -logp_img.sum() / (targets != 0).sum()
  ce_txt = -logp_txt.sum() / (texts[:, 1:] != 0).sum()  # The separate texts' tokens.
  np.testing.assert_allclose(metrics["ce_text_only"], ce_txt, rtol=1e-5)
  np.testing.assert_allclose(loss, ce_img + 0.6 * ce_txt, rtol=1e-5)
  assert "info_gain_per_token" not in metrics  # Different texts: no per-token gain.

  del batch["text_only_tokens"], batch["text_only_target_mask"]
  with pytest.raises(errors.ConfigError, match="config.data.text_only_split"):
    captioning.make_loss(objective_config, predict)(params, batch, None)


def test_text_only_trainable_stops_the_text_only_gradient_elsewhere(captioner_model):
  predict = captioner_model.predict_fns
  params = helpers.random_params(captioner_model)
  batch = _batch(np.random.default_rng(6))

  def grads(**fields):
    objective_config = ml_collections.ConfigDict(dict(name="captioning", **fields))
    captioning.validate(objective_config)
    loss_fn = captioning.make_loss(objective_config, predict)
    return jax.jit(jax.grad(lambda p: loss_fn(p, batch, None)[0]))(params)

  standard = grads(text_only_weight=0.0)
  full = grads(text_only_weight=1.0)
  head_only = grads(text_only_weight=1.0, text_only_trainable="decoder/(ln_final|head)")
  paths = tree_paths.leaf_names(params)
  flat = {name: (jax.tree.leaves(standard)[i], jax.tree.leaves(full)[i],
                 jax.tree.leaves(head_only)[i]) for i, name in enumerate(paths)}
  touched = [n for n in paths if n.startswith(("decoder/ln_final", "decoder/head"))]
  assert touched and len(touched) < len(paths)
  for name, (g_std, g_full, g_head) in flat.items():
    if name in touched:  # The text-only loss's gradient arrives here as with no restriction.
      np.testing.assert_allclose(g_head, g_full, rtol=1e-5, atol=1e-7)
    else:  # Only the captioning loss's gradient arrives here.
      np.testing.assert_allclose(g_head, g_std, rtol=1e-5, atol=1e-7)
  # Shared params the text-only loss changes without the restriction (so the check can fail).
  changed = [n for n, (g_std, g_full, _) in flat.items()
             if n not in touched and not np.allclose(g_std, g_full, rtol=1e-4)]
  assert any("block0/self_attn" in n for n in changed), changed

  with pytest.raises(errors.ConfigError, match="matches no param"):
    grads(text_only_weight=1.0, text_only_trainable="decoder/no_such_layer")


@pytest.mark.parametrize("field, value", [("text_only_batch", "web"),
                                          ("text_only_trainable", "decoder/(head")])
def test_bad_text_only_variant_fields_are_refused(field, value):
  with pytest.raises(errors.ConfigError, match=field):
    captioning.validate(ml_collections.ConfigDict(
        dict(name="captioning", text_only_weight=1.0, **{field: value})))


# ------------------------------------------------------------------------------ Contrastive ---
def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _unit_rows(rng, n, dim):
  z = rng.normal(size=(n, dim))
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_softmax_contrastive_loss_matches_numpy():
  rng = np.random.default_rng(3)
  z_img, z_txt, scale = _unit_rows(rng, 6, 5), _unit_rows(rng, 6, 5), 7.5
  sims = z_img @ z_txt.T
  loss, _ = base.softmax_contrastive_loss(sims.astype(np.float32), scale)
  logits = scale * sims
  expected = -(np.mean(np.diag(_log_softmax(logits, 1))) +
               np.mean(np.diag(_log_softmax(logits, 0)))) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_sigmoid_contrastive_loss_matches_numpy():
  rng = np.random.default_rng(4)
  z_img, z_txt, scale, bias = _unit_rows(rng, 6, 5), _unit_rows(rng, 6, 5), 10.0, -10.0
  sims = z_img @ z_txt.T
  loss, _ = sigmoid_contrastive.sigmoid_contrastive_loss(sims.astype(np.float32), scale, bias)
  expected = 0.0
  for i in range(6):
    for j in range(6):
      label = 1.0 if i == j else -1.0
      expected -= np.log(1 / (1 + np.exp(-label * (scale * sims[i, j] + bias))))
  np.testing.assert_allclose(loss, expected / 6, rtol=1e-5)


def test_clip_clips_the_temperature_at_its_maximum():
  model = models.build(helpers.tiny_two_towers_config(temperature_init=1000.0, bias_init=None))
  params = helpers.random_params(model)
  params["log_temperature"] = np.float32(np.log(1000.0))
  loss_fn = objectives.make_loss(ml_collections.ConfigDict(dict(
      model=helpers.tiny_two_towers_config(),
      objective=dict(name="softmax_contrastive", max_temperature=100.0))), model.predict_fns)
  rng = np.random.default_rng(5)
  batch = {"image": rng.normal(size=(4, 16, 16, 3)).astype(np.float32),
           "tokens": helpers.random_tokens(rng, 4, 8, 32)}
  _, metrics = jax.jit(loss_fn)(params, batch, jax.random.key(0))
  np.testing.assert_allclose(metrics["temperature"], 100.0, rtol=1e-6)


@pytest.mark.parametrize("objective", [
    dict(name="softmax_contrastive", max_temperature=100.0), dict(name="sigmoid_contrastive")])
def test_contrastive_losses_use_the_whole_global_batch_on_a_mesh(objective):
  """Loss and gradients on a (data=2, fsdp=4) mesh equal those on one device, so every image
  met every text of the global batch although each device holds a slice of it."""
  model = models.build(helpers.tiny_two_towers_config())
  config = ml_collections.ConfigDict(dict(model=helpers.tiny_two_towers_config(),
                                          objective=objective))
  loss_fn = objectives.make_loss(config, model.predict_fns)
  params = helpers.random_params(model)
  rng = np.random.default_rng(6)
  batch = {"image": rng.normal(size=(16, 16, 16, 3)).astype(np.float32),
           "tokens": helpers.random_tokens(rng, 16, 8, 32)}

  def loss_and_grads(mesh):
    with sharding.activate(mesh):
      global_batch = sharding.global_batch_from_local(batch, mesh)
      fn = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b, jax.random.key(0))[0]))
      return jax.device_get(fn(params, global_batch))

  single = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1)), devices=jax.devices()[:1])
  loss1, grads1 = loss_and_grads(single)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=4)))
  loss8, grads8 = loss_and_grads(mesh)
  assert len(sharding.global_batch_from_local(batch, mesh)["image"].sharding.device_set) == 8
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads8,
               grads1)
  # The loss is not a per-shard one: the mean of the 8 shards' losses differs.
  shard_loss = jax.jit(loss_fn)
  shard_losses = [float(shard_loss(params, {k: v[i::8] for k, v in batch.items()},
                                   jax.random.key(0))[0]) for i in range(8)]
  assert abs(np.mean(shard_losses) - float(loss1)) > 1e-3


def test_objective_and_model_must_fit():
  captioner = models.build(helpers.tiny_model_config())
  config = ml_collections.ConfigDict(dict(model=helpers.tiny_model_config(),
                                          objective=dict(name="sigmoid_contrastive")))
  with pytest.raises(errors.ConfigError, match=r"config.objective.name='sigmoid_contrastive' "
                                               r"needs a model supplying embed_images"):
    objectives.make_loss(config, captioner.predict_fns)
  config.objective = ml_collections.ConfigDict(dict(name="captioning", text_only_weight=-1.0))
  with pytest.raises(errors.ConfigError, match="text_only_weight=-1.0 is invalid"):
    objectives.make_loss(config, captioner.predict_fns)
