"""Mixed precision: matmuls of low-precision (bfloat16) operands accumulated in float32, forward
and backward, which XLA's CPU backend runs fast only in one canonical form; and the dtype that
`config.model.dtype` names (params stay float32).
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from ig_captioner import errors

Dtype = Any

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
  """The activations' dtype named by `config.model.dtype` (params stay float32)."""
  if name not in DTYPES:
    raise errors.ConfigError(f"config.model.dtype={name!r} is not one of {sorted(DTYPES)}")
  return DTYPES[name]


def batched_matmul(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """A two-operand einsum as one canonical batched matmul (batch, rows, contracted) x (batch,
  contracted, columns), accumulated in float32. XLA's CPU backend runs bfloat16 x bfloat16 ->
  float32 products only in that canonical form (others fail with 'Unsupported element type for
  DotThunk'), so operands and result are transposed around it."""
  (spec_a, spec_b), spec_out = spec.split("->")[0].split(","), spec.split("->")[1]
  batch = [c for c in spec_out if c in spec_a and c in spec_b]
  contract = [c for c in spec_a if c in spec_b and c not in spec_out]
  rows = [c for c in spec_a if c not in spec_b]
  cols = [c for c in spec_b if c not in spec_a]
  size = {**dict(zip(spec_a, a.shape)), **dict(zip(spec_b, b.shape))}

  def grouped(x, spec_x, groups):
    x = x.transpose([spec_x.index(c) for g in groups for c in g])
    return x.reshape([math.prod(size[c] for c in g) for g in groups])

  out = jax.lax.dot_general(grouped(a, spec_a, (batch, rows, contract)),
                            grouped(b, spec_b, (batch, contract, cols)),
                            (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
  order = batch + rows + cols
  return out.reshape([size[c] for c in order]).transpose([order.index(c) for c in spec_out])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_f32_accumulate(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """einsum of two low-precision operands, accumulated and returned in float32; its gradients
  are low-precision products accumulated in float32 too (JAX's own transpose would multiply the
  float32 cotangent by a bfloat16 operand: a float32 matmul, the slow path on CPUs)."""
  return batched_matmul(spec, a, b)


def _einsum_fwd(spec, a, b):
  return einsum_f32_accumulate(spec, a, b), (a, b)


def _einsum_bwd(spec, residuals, g):
  a, b = residuals
  (spec_a, spec_b), spec_out = spec.split("->")[0].split(","), spec.split("->")[1]
  g = g.astype(a.dtype)
  da = batched_matmul(f"{spec_out},{spec_b}->{spec_a}", g, b)
  db = batched_matmul(f"{spec_a},{spec_out}->{spec_b}", a, g)
  return da.astype(a.dtype), db.astype(b.dtype)


einsum_f32_accumulate.defvjp(_einsum_fwd, _einsum_bwd)


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Dtype) -> jax.Array:
  """einsum of `a` and `b` cast to `dtype`, accumulated in float32. Every index of an operand
  must appear in the other operand or the output (true of matmuls and attention)."""
  if dtype == jnp.float32:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
  return einsum_f32_accumulate(spec, a.astype(dtype), b.astype(dtype))


def dense_dot_f32_accumulate(lhs, rhs, dimension_numbers, precision=None,
                             preferred_element_type=None):
  """nn.Dense's dot_general (inputs x 2-D kernel) with float32 accumulation and gradients."""
  del precision, preferred_element_type
  ((lhs_contract, rhs_contract), batch) = dimension_numbers
  if lhs_contract != (lhs.ndim - 1,) or rhs_contract != (0,) or batch != ((), ()):
    raise ValueError(f"unexpected dense dimension numbers {dimension_numbers}")
  lead = "abcdefgh"[:lhs.ndim - 1]
  return einsum_f32_accumulate(f"{lead}i,io->{lead}o", lhs, rhs)
