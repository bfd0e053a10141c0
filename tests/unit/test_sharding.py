"""Mesh construction and the logical-axis table (a sharded train step against a single-device
one: tests/e2e/test_sharded_step.py)."""

import jax
import ml_collections
import pytest

from ig_captioner import models
from ig_captioner import optimizer as optimizer_lib
from ig_captioner import sharding
from ig_captioner import train_state
from tests import helpers


def mesh_config(**sizes):
  return ml_collections.ConfigDict(sizes)


@pytest.mark.parametrize("sizes,expected", [
    (dict(data=-1), (8, 1, 1)),
    (dict(data=2, fsdp=-1), (2, 4, 1)),
    (dict(data=-1, fsdp=2, tensor=2), (2, 2, 2)),
    (dict(data=1, fsdp=8, tensor=1), (1, 8, 1)),
])
def test_mesh_shape_resolves_minus_one(sizes, expected):
  assert sharding.mesh_shape(mesh_config(**sizes), 8) == expected


@pytest.mark.parametrize("sizes,match", [
    (dict(data=-1, fsdp=-1), "more than one -1"),
    (dict(data=3), "needs 3 devices"),
    (dict(data=-1, tensor=3), "not divisible"),
    (dict(data=0, fsdp=-1), "positive or -1"),
    (dict(batch=8), "unknown axes"),
])
def test_bad_mesh_configs_are_named(sizes, match):
  with pytest.raises(ValueError, match=match):
    sharding.mesh_shape(mesh_config(**sizes), 8)


def _model_and_tx(total_steps=10):
  # Widths divisible by 4 so that every sharded axis splits evenly.
  model = models.build(helpers.tiny_model_config(encoder="mu/8", decoder="mu", vocab_size=64))
  opt_config = ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=1, final_lr_fraction=0.1, weight_decay=1e-2, b1=0.9,
      b2=0.98, clip_norm=1.0))
  schedule = optimizer_lib.learning_rate_schedule(opt_config, total_steps)
  return model, optimizer_lib.build(opt_config, total_steps), schedule


def test_large_params_are_split_across_devices():
  model, tx, _ = _model_and_tx()
  mesh = sharding.make_mesh(mesh_config(data=1, fsdp=4, tensor=2))
  abstract, shardings = train_state.abstract_state_and_shardings(model.init_params, tx, mesh)
  state = train_state.init(model.init_params, tx, mesh, shardings, jax.random.key(0))
  fc1 = state.params["decoder"]["block0"]["mlp"]["fc1"]["kernel"]  # (embed, mlp) = (64, 128)
  assert fc1.shape == (64, 128)
  assert fc1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert {s.data.shape for s in fc1.addressable_shards} == {(16, 64)}
  embedding = state.params["decoder"]["token_embedding"]  # (vocab, embed)
  assert {s.data.shape for s in embedding.addressable_shards} == {(32, 16)}
  # Adam's moments follow their params' shardings.
  mu = state.opt_state[1][0].mu["decoder"]["block0"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding.spec == fc1.sharding.spec
  # Norm scales are small: replicated.
  ln = state.params["decoder"]["ln_final"]["scale"]
  assert ln.sharding.is_fully_replicated
  # Per device, the state holds well under the replicated size.
  total = sum(x.size for x in jax.tree.leaves(state.params))
  on_device0 = sum(s.data.size for x in jax.tree.leaves(state.params)
                   for s in x.addressable_shards if s.device == jax.devices()[0])
  assert on_device0 < 0.4 * total
