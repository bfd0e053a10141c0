"""The matmul floor of a jitted function: its own dot_generals (operand shapes and dtypes,
dimension numbers, accumulation type, read from its jaxpr; a loop body's once per trip) run
alone on random operands in one jitted program, every other operation left out. Its time is what
the function would take if everything but its matmuls were free on this machine, and the model
FLOPs over that time bound the fraction of the matmul peak the function can reach here."""

from typing import Callable

import jax
import jax.numpy as jnp

from ig_captioner import step_flops


def dot_specs(fn: Callable, *args) -> list[tuple]:
  """[(lhs ShapeDtypeStruct, rhs ShapeDtypeStruct, dimension_numbers, preferred_element_type)]
  of every dot_general one call of `fn(*args)` executes (`step_flops.dot_equations`)."""
  specs = []
  for eqn, trips in step_flops.dot_equations(jax.make_jaxpr(fn)(*args).jaxpr):
    lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
    specs += trips * [(lhs, rhs, eqn.params["dimension_numbers"],
                       eqn.params.get("preferred_element_type"))]
  return specs


def floor_call(fn: Callable, *args, seed: int = 0) -> tuple:
  """(jitted program, operands): `fn`'s dot_generals one after another, each on operands of its
  own (so that XLA can merge none of them), all outputs returned (so that none is dropped). An
  optimization barrier makes each wait for the one before, as a step's layers do: run all at
  once, XLA's CPU runtime would run independent matmuls side by side, which is slower here."""
  specs = dot_specs(fn, *args)
  keys = jax.random.split(jax.random.key(seed), 2 * len(specs))
  operands = [jax.random.normal(k, s.shape, jnp.float32).astype(s.dtype)
              for k, s in zip(keys, (s for lhs, rhs, _, _ in specs for s in (lhs, rhs)))]

  def program(operands):
    outs = []
    for i, (_, _, dims, out) in enumerate(specs):
      lhs, rhs = operands[2 * i], operands[2 * i + 1]
      if outs:
        lhs, rhs, _ = jax.lax.optimization_barrier((lhs, rhs, outs[-1]))
      outs.append(jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=out))
    return outs
  return jax.jit(program), operands
