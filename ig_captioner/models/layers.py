"""Transformer building blocks shared by the image encoder and the text decoder.

Shape letters: B batch, Q query length, S key/value length, D model width, H heads,
K head width, F MLP width.

Every parameter carries logical axis names (see `ig_captioner.sharding.LOGICAL_AXIS_RULES` for
how they map onto the mesh). Kernels are 2-D on purpose: multi-dimensional `DenseGeneral` kernels
with logical partitioning break under `jax.set_mesh` in flax 0.12, so heads are split by reshape.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# Activation layouts, named once.
BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")
BATCH_LENGTH_MLP = ("activation_batch", "activation_length", "activation_mlp")
BATCH_LENGTH_HEADS_KV = ("activation_batch", "activation_length", "activation_heads",
                         "activation_kv")


def dense(features: int, axes: tuple[str, str], dtype: Dtype, name: str, use_bias: bool = True,
          kernel_init=nn.initializers.xavier_uniform()) -> nn.Dense:
  """A Dense layer whose 2-D kernel and bias carry logical axis names."""
  return nn.Dense(
      features,
      dtype=dtype,
      param_dtype=jnp.float32,
      use_bias=use_bias,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
      name=name)


def layer_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
      name=name)


class MultiHeadAttention(nn.Module):
  """Dot-product attention from queries x_BxQxD to keys/values kv_BxSxE (self- or cross-)."""
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxQxD, kv_BxSxE, causal: bool = False):
    b, q_len, width = x_BxQxD.shape
    s_len = kv_BxSxE.shape[1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    h, k = self.num_heads, width // self.num_heads

    def project(x, name):
      return dense(width, ("embed", "heads"), self.dtype, name)(x)

    q_BxQxHxK = project(x_BxQxD, "query").reshape(b, q_len, h, k)
    k_BxSxHxK = project(kv_BxSxE, "key").reshape(b, s_len, h, k)
    v_BxSxHxK = project(kv_BxSxE, "value").reshape(b, s_len, h, k)
    q_BxQxHxK = nn.with_logical_constraint(q_BxQxHxK, BATCH_LENGTH_HEADS_KV)
    k_BxSxHxK = nn.with_logical_constraint(k_BxSxHxK, BATCH_LENGTH_HEADS_KV)
    v_BxSxHxK = nn.with_logical_constraint(v_BxSxHxK, BATCH_LENGTH_HEADS_KV)

    logits_BxHxQxS = jnp.einsum("bqhk,bshk->bhqs", q_BxQxHxK, k_BxSxHxK,
                                preferred_element_type=jnp.float32)
    logits_BxHxQxS = logits_BxHxQxS / jnp.sqrt(k).astype(jnp.float32)
    if causal:
      allowed_QxS = jnp.tril(jnp.ones((q_len, s_len), dtype=bool))
      logits_BxHxQxS = jnp.where(allowed_QxS, logits_BxHxQxS, jnp.finfo(jnp.float32).min)
    weights_BxHxQxS = nn.softmax(logits_BxHxQxS, axis=-1).astype(self.dtype)
    out_BxQxHxK = jnp.einsum("bhqs,bshk->bqhk", weights_BxHxQxS, v_BxSxHxK)
    out_BxQxHxK = nn.with_logical_constraint(out_BxQxHxK, BATCH_LENGTH_HEADS_KV)
    out_BxQxD = dense(width, ("heads", "embed"), self.dtype, "out")(
        out_BxQxHxK.reshape(b, q_len, width))
    return nn.with_logical_constraint(out_BxQxD, BATCH_LENGTH_EMBED)


class MlpBlock(nn.Module):
  """Position-wise MLP, width D -> F -> D with GELU."""
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD):
    width = x_BxLxD.shape[-1]
    h_BxLxF = dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "fc1")(x_BxLxD)
    h_BxLxF = nn.with_logical_constraint(nn.gelu(h_BxLxF), BATCH_LENGTH_MLP)
    out_BxLxD = dense(width, ("mlp", "embed"), self.dtype, "fc2")(h_BxLxF)
    return nn.with_logical_constraint(out_BxLxD, BATCH_LENGTH_EMBED)
