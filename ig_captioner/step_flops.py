"""Model FLOPs of a step: the matmul (dot_general) FLOPs of a traced function, read from its
jaxpr, every loop body counted times its trips (XLA's `cost_analysis` counts a `scan` body
once). For a train step this is the forward and backward matmuls of the model, attention's
included, at the shapes traced: the "model FLOPs" of MFU (Chowdhery et al., PaLM, app. B),
counted from the program rather than from a formula per family. Elementwise work (norms,
softmax, the optimizer's update) is not counted."""

import math
from typing import Callable

import jax


def _dot_flops(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  out = eqn.outvars[0].aval.shape
  return 2 * math.prod(out) * math.prod(lhs[i] for i in lhs_contract)


def dot_equations(jaxpr, trips: int = 1):
  """Yields (dot_general equation, times it runs) of a jaxpr, sub-jaxprs (jit, remat,
  custom_vjp, scan bodies) included, a scan body's times its trips."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn, trips
    inner_trips = trips * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from dot_equations(inner, inner_trips)


def jaxpr_flops(jaxpr) -> int:
  """Matmul FLOPs of a jaxpr, sub-jaxprs (jit, remat, custom_vjp, scan bodies) included."""
  return sum(trips * _dot_flops(eqn) for eqn, trips in dot_equations(jaxpr))


def matmul_flops(fn: Callable, *args) -> int:
  """Matmul FLOPs of one call of `fn(*args)` (arrays or ShapeDtypeStructs): nothing runs."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
