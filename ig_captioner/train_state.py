"""The train state, its abstract (shape-only) form, its shardings, and its sharded init.

Abstract state first: `jax.eval_shape` gives shapes and logical axis names without allocating,
the shardings follow from the one rules table, and the jitted init writes each shard straight to
its device, so no full copy of the params ever lives on one device.
"""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import optax

from ig_captioner import sharding
from ig_captioner.models import captioner


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _boxed_state(model: captioner.Captioner, tx: optax.GradientTransformation, rng: jax.Array):
  params = captioner.init_params(model, rng)
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    opt_state=tx.init(params))


def _abstract_and_shardings(boxed_fn, mesh):
  with sharding.activate(mesh):
    boxed = jax.eval_shape(boxed_fn)
    shardings = sharding.logical_to_shardings(boxed, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def abstract_state_and_shardings(model, tx, mesh):
  """(abstract unboxed TrainState whose leaves carry their NamedSharding, the shardings)."""
  return _abstract_and_shardings(lambda: _boxed_state(model, tx, jax.random.key(0)), mesh)


def abstract_params_and_shardings(model, mesh):
  """Like `abstract_state_and_shardings`, for the params alone (what the evaluator needs)."""
  return _abstract_and_shardings(lambda: captioner.init_params(model, jax.random.key(0)), mesh)


def init(model, tx, mesh, shardings, rng: jax.Array) -> TrainState:
  """A freshly initialized state, sharded as `shardings` from the start."""
  with sharding.activate(mesh):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_state(model, tx, r)),
                   out_shardings=shardings)(rng)
