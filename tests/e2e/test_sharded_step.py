"""A whole train step (model, objective, optimizer) on 8 devices, FSDP or tensor-parallel, gives
what it gives on one device."""

import jax
import ml_collections
import numpy as np

from ig_captioner import experiment
from ig_captioner import objectives
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner import train_state
from tests import helpers
from tests.unit.test_sharding import _model_and_tx, mesh_config


def test_sharded_train_step_matches_single_device():
  model, tx, schedule = _model_and_tx()
  rng = np.random.default_rng(0)
  tokens = helpers.random_tokens(rng, 8, 8, 64)
  batch = {"image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32), "tokens": tokens,
           "target_mask": token_ids.scored_targets(tokens)}
  config = ml_collections.ConfigDict(dict(
      model=helpers.tiny_model_config(), objective=dict(name="captioning", text_only_weight=1.0)))
  step_fn = experiment.make_train_step(objectives.make_loss(config, model.predict_fns), tx,
                                       schedule, seed=0)

  def run(mesh):
    _, shardings = train_state.abstract_state_and_shardings(model.init_params, tx, mesh)
    state = train_state.init(model.init_params, tx, mesh, shardings, jax.random.key(0))
    with sharding.activate(mesh):
      step = jax.jit(step_fn, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                     out_shardings=(shardings, None), donate_argnums=(0,))
      for _ in range(2):  # Warmup means step 0 has lr 0: take two steps.
        state, metrics = step(state, sharding.global_batch_from_local(batch, mesh))
    return jax.device_get(state.params), jax.device_get(metrics)

  single = sharding.make_mesh(mesh_config(data=1), devices=jax.devices()[:1])
  params1, metrics1 = run(single)
  params8, metrics8 = run(sharding.make_mesh(mesh_config(data=2, fsdp=4)))
  np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics8["grad_norm"], metrics1["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               params8, params1)
  params_tp, _ = run(sharding.make_mesh(mesh_config(data=2, tensor=4)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               params_tp, params1)
