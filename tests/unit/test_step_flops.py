"""Model FLOPs (`step_flops.py`) against hand counts and XLA's cost analysis of the compiled
train step; the accelerator table and the trainer's throughput figures."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import matmul_floor
from benchmarks import shapes as shapes_lib
from benchmarks import train_step as train_step_bench
from ig_captioner import accelerators
from ig_captioner import sharding
from ig_captioner import step_flops
from ig_captioner import train


def test_matmul_flops_count_dots_loops_and_gradients():
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  assert step_flops.matmul_flops(jnp.matmul, a, b) == 2 * 8 * 16 * 4
  batched = jnp.ones((3, 8, 16))
  assert step_flops.matmul_flops(lambda x: jnp.einsum("bij,jk->bik", x, b), batched) == (
      2 * 3 * 8 * 16 * 4)

  def looped(x):  # Five trips of the same matmul: XLA's cost analysis counts one.
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ jnp.ones((16, 16))), None), x, None,
                        length=5)[0]
  assert step_flops.matmul_flops(looped, a) == 5 * 2 * 8 * 16 * 16
  # Forward and backward: one matmul forward, two in the gradient with respect to both inputs.
  grad = jax.grad(lambda x, y: jnp.sum(x @ y), argnums=(0, 1))
  assert step_flops.matmul_flops(grad, a, b) == 3 * 2 * 8 * 16 * 4


def test_train_step_flops_agree_with_xla_cost_analysis():
  """Where XLA counts right (no loop in the step), within 5%: XLA adds the elementwise work.
  The IG step: both decoder passes."""
  text_only_weight = 1.0
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                            devices=jax.devices()[:1])
  step, state, batch, model_flops = train_step_bench.step_and_inputs(
      shapes_lib.SHAPES["small"], "float32", text_only_weight, 8, mesh)
  with sharding.activate(mesh):
    cost = step.lower(state, batch).compile().cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert 0.95 < model_flops / xla_flops <= 1.0, (model_flops, xla_flops)


def test_accelerator_table_and_peaks():
  assert accelerators.chip("TPU v5 lite").name == "TPU v5e"
  assert accelerators.chip("TPU v5p").peak_bf16_flops == 459e12
  assert accelerators.chip("NVIDIA H100 80GB HBM3").name == "NVIDIA H100 SXM"
  assert accelerators.chip("NVIDIA H100 PCIe").name == "NVIDIA H100 PCIe"
  assert accelerators.chip("NVIDIA A100-SXM4-80GB").peak_bf16_flops == 312e12
  assert accelerators.chip("cpu") is None
  assert accelerators.peak_flops("cpu", configured=5e11) == (5e11, "config.peak_flops_per_device")
  assert accelerators.peak_flops("TPU v4")[0] == 275e12
  measured, source = accelerators.peak_flops("cpu", "float32")
  assert measured > 1e8 and "measured" in source


def test_throughput_figures():
  out = train.throughput(steps_per_sec=2.0, batch_size=64, flops_per_step=8e12, num_devices=4,
                         peak_per_device=10e12)
  assert out == pytest.approx({"examples_per_sec": 128.0, "tflops_per_device": 4.0,
                               "mfu": 0.4})
  assert np.isfinite(list(out.values())).all()


def test_model_flops_do_not_count_recomputation():
  from tests.conftest import load_config_module  # pylint: disable=g-import-not-at-top
  from ig_captioner import experiment  # pylint: disable=g-import-not-at-top
  config = load_config_module("demo").get_config("runlocal")
  mesh = sharding.make_mesh(config.mesh)
  plain = experiment.build(config, mesh).model_flops()
  config.model.remat = "block"
  config.objective.logits_chunk = 4
  exp = experiment.build(config, mesh)
  assert exp.model_flops() == plain
  with sharding.activate(mesh):
    traced = step_flops.matmul_flops(exp.jit_train_step(), exp.abstract_state,
                                     exp.abstract_batch())
  assert traced > plain  # The recomputed forward passes are in the traced program.


def test_matmul_floor_runs_the_steps_own_matmuls():
  """The benchmark's matmul floor (`benchmarks/matmul_floor.py`): the dots of a function with a
  scan and a gradient, loop bodies times their trips, each output equal to the same dot_general
  of its operands computed here, and as many FLOPs as the model count."""
  w = jnp.ones((16, 16)) / 16

  def loss(x, y):
    looped = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=3)[0]
    return jnp.sum(jnp.einsum("bij,jk->bik", looped[None], y))
  grad = jax.grad(loss, argnums=(0, 1))
  x, y = jnp.ones((8, 16)), jnp.ones((16, 4))
  specs = matmul_floor.dot_specs(grad, x, y)
  floor_flops = sum(
      2 * int(np.prod(jax.eval_shape(lambda a, b, d=dims: jax.lax.dot_general(a, b, d), lhs,
                                     rhs).shape)) * int(np.prod([lhs.shape[i] for i in dims[0][0]]))
      for lhs, rhs, dims, _ in specs)
  assert floor_flops == step_flops.matmul_flops(grad, x, y)
  # Three trips of the loop's forward and input-gradient dots (w is a constant); the einsum's
  # forward and its two gradients.
  assert len(specs) == 3 * 2 + 3
  program, operands = matmul_floor.floor_call(grad, x, y)
  outs = program(operands)
  assert len(outs) == len(specs) and len(operands) == 2 * len(specs)
  for i, (lhs, rhs, dims, _) in enumerate(specs):
    a, b = np.asarray(operands[2 * i], np.float64), np.asarray(operands[2 * i + 1], np.float64)
    assert a.shape == lhs.shape and b.shape == rhs.shape
    (lc, rc), (lb, rb) = dims
    assert not lb and not rb  # No batch dimensions here: tensordot is the reference.
    np.testing.assert_allclose(outs[i], np.tensordot(a, b, (lc, rc)), rtol=1e-4, atol=1e-4)
