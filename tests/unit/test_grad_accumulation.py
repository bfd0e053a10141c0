"""Gradient accumulation (`experiment.accumulated`): microbatches weighted by their share of
the scored tokens give the full batch's gradient and metrics, on a batch whose captions differ
in length (so an unweighted mean of microbatch means would not)."""

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import experiment
from ig_captioner import sharding
from ig_captioner.data import sources
from ig_captioner.data import train_mixture
from tests import helpers
from tests.conftest import load_config_module


def test_accumulated_gradient_is_the_full_batch_gradient(data_dir):
  config = load_config_module("demo").get_config("runlocal")
  config.data.data_dir = data_dir
  mesh = sharding.make_mesh(config.mesh)
  exp = experiment.build(config, mesh)
  params = jax.device_put(helpers.random_params(exp.model, scale=0.3))
  loader = train_mixture.train_loader(config, sources.tokenizer(config.data))
  batch = {k: jnp.asarray(v) for k, v in next(iter(loader)).items()}
  tokens = np.asarray(batch["target_mask"]).sum(1)
  assert tokens[0::2].sum() != tokens[1::2].sum()  # Microbatches score unequal token counts.
  rng = jax.random.key(0)
  with sharding.activate(mesh):
    (_, want_metrics), want = jax.jit(jax.value_and_grad(exp.loss_fn, has_aux=True))(
        params, batch, rng, 0)
    got, got_metrics = jax.jit(lambda p, b: experiment.accumulated(exp.loss_fn, p, b, rng, 0,
                                                                   2))(params, batch)
  for key in ("loss", "ce_with_image", "ce_text_only"):
    np.testing.assert_allclose(got_metrics[key], want_metrics[key], rtol=1e-6)
  for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
    w, g = np.asarray(w), np.asarray(g)
    scale = np.abs(w).max()
    if "['key']['bias']" in jax.tree_util.keystr(path):  # 0 in exact arithmetic: noise.
      assert scale < 1e-6 and np.abs(g).max() < 1e-6
    else:
      assert np.abs(g - w).max() <= 1e-5 * scale, jax.tree_util.keystr(path)
  # Unweighted microbatch means would be off: the weighting is what makes it exact.
  parts = experiment.microbatches(batch, 2)
  with sharding.activate(mesh):
    halves = [jax.jit(exp.loss_fn)(params, jax.tree.map(lambda x, k=k: x[k], parts), rng, 0)[0]
              for k in range(2)]
  assert abs(float(np.mean(halves)) - float(want_metrics["loss"])) > 1e-4
