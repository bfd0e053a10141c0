"""Weight-decay mask and learning-rate schedule against analytic values."""

import flax
import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import optimizer as optimizer_lib
from ig_captioner.models import captioner
from tests import helpers


def _opt_config(**overrides):
  cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1,
                                       weight_decay=0.5, b1=0.9, b2=0.98, clip_norm=1.0))
  cfg.update(overrides)
  return cfg


def test_weight_decay_only_on_kernels():
  model = captioner.build(helpers.tiny_model_config())
  params = helpers.random_params(model)
  mask = flax.traverse_util.flatten_dict(optimizer_lib.weight_decay_mask(params))
  decayed = {"/".join(k) for k, v in mask.items() if v}
  kept = {"/".join(k) for k, v in mask.items() if not v}
  assert decayed and all(k.endswith("/kernel") for k in decayed)
  assert "decoder/token_embedding" in kept and "decoder/pos_embedding" in kept
  assert "encoder/pos_embedding" in kept
  assert any(k.endswith("/bias") for k in kept) and any(k.endswith("/scale") for k in kept)

  # And the optimizer applies it so: with zero gradients only kernels shrink.
  tx = optimizer_lib.build(_opt_config(warmup_steps=0), total_steps=10)
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  flat_updates = flax.traverse_util.flatten_dict(updates)
  for key, update in flat_updates.items():
    assert np.any(update != 0) == mask[key], key


def test_schedule_warmup_then_cosine():
  schedule = optimizer_lib.learning_rate_schedule(_opt_config(), total_steps=110)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 0.5e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-6)
  # Half-way through the cosine: end + (peak - end) / 2.
  np.testing.assert_allclose(schedule(60), 1e-4 + 0.5 * (1e-3 - 1e-4), rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 1e-4, rtol=1e-5)


@pytest.mark.parametrize("field,value", [("learning_rate", -1.0), ("weight_decay", -0.1),
                                         ("clip_norm", 0.0)])
def test_bad_values_are_named(field, value):
  with pytest.raises(ValueError, match=f"config.optimizer.{field}"):
    optimizer_lib.build(_opt_config(**{field: value}), total_steps=10)


def test_frozen_params_stay_bit_identical_and_the_rest_train_as_without_them():
  rng = np.random.default_rng(0)
  params = {"encoder": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)},
            "decoder": {"kernel": rng.normal(size=(3, 5)).astype(np.float32),
                        "bias": rng.normal(size=(5,)).astype(np.float32)}}
  frozen_tx = optimizer_lib.build(_opt_config(warmup_steps=1), 10, frozen="^encoder/")
  plain_tx = optimizer_lib.build(_opt_config(warmup_steps=1), 10)  # The decoder alone.
  state, plain_state = frozen_tx.init(params), plain_tx.init({"decoder": params["decoder"]})
  frozen_params, plain_params = params, {"decoder": params["decoder"]}
  for _ in range(3):
    grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 5, params)
    updates, state = frozen_tx.update(grads, state, frozen_params)
    frozen_params = jax.tree.map(lambda p, u: p + u, frozen_params, updates)
    plain_updates, plain_state = plain_tx.update({"decoder": grads["decoder"]}, plain_state,
                                                 plain_params)
    plain_params = jax.tree.map(lambda p, u: p + u, plain_params, plain_updates)
  np.testing.assert_array_equal(frozen_params["encoder"]["kernel"], params["encoder"]["kernel"])
  # The clipped norm is the decoder's alone (the grads, x5, are clipped at 1 here).
  jax.tree.map(np.testing.assert_array_equal, frozen_params["decoder"], plain_params["decoder"])
  assert np.abs(frozen_params["decoder"]["kernel"] - params["decoder"]["kernel"]).max() > 1e-4


def test_frozen_regex_errors_name_the_fix():
  params = {"encoder": {"kernel": np.zeros((2, 2))}}
  assert optimizer_lib.check_frozen(params, "^encoder/") == 4
  with pytest.raises(Exception, match=r"config.frozen='\^encdr/' matches no param path .*"
                                      r"top-level names: \['encoder'\]"):
    optimizer_lib.check_frozen(params, "^encdr/")
  with pytest.raises(Exception, match="is not a regular expression"):
    optimizer_lib.check_frozen(params, "encoder/(")
