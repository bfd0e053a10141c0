"""What every benchmark measures the same way: wall time (median of repeats after a warm-up
call), this machine's matmul peak (in the same process, so that ratios share its noise), and the
matmul FLOPs a function executes (from its jaxpr, loop bodies times their trip counts: XLA's
`cost_analysis` counts a `lax.map`/`scan` body once)."""

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import step_flops


def seconds(fn: Callable, *args, repeats: int = 3) -> float:
  """Median wall time of `fn(*args)` (outputs waited for), after one untimed call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def interleaved_seconds(calls: dict, rounds: int = 5, best_of: dict | None = None,
                        settle_s: float = 0.0) -> dict:
  """{name: [seconds per round]} of every `(fn, *args)` in `calls`, timed one after another in
  each round (after one untimed call each), so that the machine's drifts (other tenants, clock
  changes) hit every call alike and ratios within a round stay meaningful. `best_of[name]`
  calls in a row give that name's round time, their fastest (for short calls such as a peak)."""
  best_of = best_of or {}
  for fn, *args in calls.values():
    jax.block_until_ready(fn(*args))
  out = {name: [] for name in calls}
  for _ in range(rounds):
    for name, (fn, *args) in calls.items():
      times = []
      for _ in range(best_of.get(name, 1)):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
      out[name].append(min(times))
      time.sleep(settle_s)
  return out


PEAK_SIZE = 2048


def matmul_call(dtype=jnp.float32, size: int = PEAK_SIZE) -> tuple:
  """(fn, a, b): one size^3 matmul, bfloat16 inputs accumulated in float32; it does
  `matmul_call_flops(size)` FLOPs."""
  a = jnp.ones((size, size), dtype)
  b = jnp.ones((size, size), dtype)
  return jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)), a, b


def matmul_call_flops(size: int = PEAK_SIZE) -> int:
  return 2 * size ** 3


def matmul_peak(dtype=jnp.float32, size: int = PEAK_SIZE, repeats: int = 5) -> float:
  """FLOP/s of one size^3 matmul; bfloat16 inputs accumulate in float32."""
  return matmul_call_flops(size) / seconds(*matmul_call(dtype, size), repeats=repeats)


def matmul_flops(fn: Callable, *args) -> int:
  """Matmul (dot_general) FLOPs of one call of `fn(*args)`, every loop body times its trips
  (`ig_captioner/step_flops.py`, the trainer's MFU count)."""
  return step_flops.matmul_flops(fn, *args)
