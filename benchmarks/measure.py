"""What every benchmark measures the same way: wall time (median of repeats after a warm-up
call), this machine's matmul peak (in the same process, so that ratios share its noise), and the
matmul FLOPs a function executes (from its jaxpr, loop bodies times their trip counts: XLA's
`cost_analysis` counts a `lax.map`/`scan` body once)."""

import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def seconds(fn: Callable, *args, repeats: int = 3) -> float:
  """Median wall time of `fn(*args)` (outputs waited for), after one untimed call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak(dtype=jnp.float32, size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of one size^3 matmul; bfloat16 inputs accumulate in float32."""
  a = jnp.ones((size, size), dtype)
  b = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  return 2 * size ** 3 / seconds(matmul, a, b, repeats=repeats)


def _dot_flops(eqn) -> int:
  (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  del rhs
  contract = math.prod(lhs[i] for i in lhs_contract)
  return 2 * math.prod(out) * contract if lhs_batch is not None else 0


def _jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      total += _dot_flops(eqn)
    trips = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          total += trips * _jaxpr_flops(inner)
  return total


def matmul_flops(fn: Callable, *args) -> int:
  """Matmul (dot_general) FLOPs of one call of `fn(*args)`, every loop body times its trips."""
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
