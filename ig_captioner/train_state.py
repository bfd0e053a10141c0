"""The train state, its abstract (shape-only) form, its shardings, and its sharded init.

Abstract state first: `jax.eval_shape` gives shapes and logical axis names without allocating,
the shardings follow from the one rules table, and the jitted init writes each shard straight to
its device, so no full copy of the params ever lives on one device.
"""

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import optax

from ig_captioner import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _boxed_state(init_params: Callable, tx: optax.GradientTransformation, rng: jax.Array):
  params = init_params(rng)
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    opt_state=tx.init(params))


def _abstract_and_shardings(boxed_fn, mesh):
  with sharding.activate(mesh):
    boxed = jax.eval_shape(boxed_fn)
    shardings = sharding.logical_to_shardings(boxed, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def abstract_state_and_shardings(init_params: Callable, tx, mesh):
  """(abstract unboxed TrainState whose leaves carry their NamedSharding, the shardings), for a
  model whose `init_params(rng)` gives boxed params (`models.Model.init_params`)."""
  return _abstract_and_shardings(lambda: _boxed_state(init_params, tx, jax.random.key(0)), mesh)


def abstract_params_and_shardings(init_params: Callable, mesh):
  """Like `abstract_state_and_shardings`, for the params alone (what the evaluator needs)."""
  return _abstract_and_shardings(lambda: init_params(jax.random.key(0)), mesh)


def init(init_params: Callable, tx, mesh, shardings, rng: jax.Array) -> TrainState:
  """A freshly initialized state, sharded as `shardings` from the start."""
  with sharding.activate(mesh):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_state(init_params, tx, r)),
                   out_shardings=shardings)(rng)
