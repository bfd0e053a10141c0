"""Transformer building blocks shared by every tower: named sizes, attention, MLP, and the one
pre-LN block that the image encoder, the text encoder and the text decoder all stack.

Shape letters: B batch, Q query length, S key/value length, L sequence length, N visual tokens,
D model width, E width of cross-attended tokens, H heads, K head width, F MLP width.

Every parameter carries logical axis names (see `ig_captioner.sharding.LOGICAL_AXIS_RULES` for
how they map onto the mesh). Kernels are 2-D on purpose: multi-dimensional `DenseGeneral` kernels
with logical partitioning break under `jax.set_mesh` in flax 0.12, so heads are split by reshape.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ig_captioner import errors

Dtype = Any


@dataclasses.dataclass(frozen=True)
class TransformerSize:
  width: int
  depth: int
  mlp_dim: int
  num_heads: int


# Named sizes (ViT paper and big_vision conventions); `mu` and `nano` are CPU-sized for tests.
SIZES = {
    "nano": TransformerSize(width=32, depth=1, mlp_dim=64, num_heads=2),
    "mu": TransformerSize(width=64, depth=2, mlp_dim=128, num_heads=4),
    "Ti": TransformerSize(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": TransformerSize(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": TransformerSize(width=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": TransformerSize(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": TransformerSize(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
  """The activations' dtype named by `config.model.dtype` (params stay float32)."""
  if name not in DTYPES:
    raise errors.ConfigError(f"config.model.dtype={name!r} is not one of {sorted(DTYPES)}")
  return DTYPES[name]


def named_size(name: str, field: str, depth: int | None = None) -> TransformerSize:
  """SIZES[name], optionally with another depth; ConfigError naming `field` if unknown."""
  if name not in SIZES:
    raise errors.ConfigError(f"config.{field}={name!r} is not one of {sorted(SIZES)}")
  size = SIZES[name]
  return dataclasses.replace(size, depth=depth) if depth else size

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
  def __call__(self, x_BxQxD, kv_BxSxE, causal: bool = False, bidirectional_B=None):
    """`causal` masks later positions; `bidirectional_B` (bool per example) lifts that mask for
    the examples where it is True (CapPa's parallel prediction)."""
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
      allowed_Bx1xQxS = jnp.tril(jnp.ones((q_len, s_len), dtype=bool))[None, None]
      if bidirectional_B is not None:
        allowed_Bx1xQxS = allowed_Bx1xQxS | bidirectional_B[:, None, None, None]
      logits_BxHxQxS = jnp.where(allowed_Bx1xQxS, logits_BxHxQxS, jnp.finfo(jnp.float32).min)
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


class TransformerBlock(nn.Module):
  """Pre-LN block: self-attention (causal or not), optional cross-attention, MLP; residuals.

  With `cross_BxNxE=None` the cross-attention sublayer is skipped entirely (its params unused),
  which is how one text decoder serves both P(t|I) and the text-only P(t).
  """
  size: TransformerSize
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD, cross_BxNxE=None, bidirectional_B=None):
    heads = self.size.num_heads
    y = layer_norm(self.dtype, "ln_self")(x_BxLxD)
    x_BxLxD = x_BxLxD + MultiHeadAttention(heads, self.dtype, name="self_attn")(
        y, y, causal=self.causal, bidirectional_B=bidirectional_B)
    if cross_BxNxE is not None:
      y = layer_norm(self.dtype, "ln_cross")(x_BxLxD)
      x_BxLxD = x_BxLxD + MultiHeadAttention(heads, self.dtype, name="cross_attn")(
          y, cross_BxNxE)
    y = layer_norm(self.dtype, "ln_mlp")(x_BxLxD)
    x_BxLxD = x_BxLxD + MlpBlock(self.size.mlp_dim, self.dtype, name="mlp")(y)
    return nn.with_logical_constraint(x_BxLxD, BATCH_LENGTH_EMBED)


def token_and_position_embedding(module: nn.Module, tokens_BxL, vocab_size: int, max_len: int,
                                 width: int, dtype: Dtype):
  """Embedded tokens_BxL plus learned positions, as x_BxLxD; creates the params in `module`."""
  length = tokens_BxL.shape[1]
  if length > max_len:
    raise ValueError(f"text length {length} exceeds the model's max_len {max_len}")
  table_VxD = module.param(
      "token_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
      (vocab_size, width), jnp.float32)
  # Gather from a replicated copy (as FSDP does for every weight just in time): a gather from a
  # vocab-sharded table would make XLA replicate the batch-sharded activations instead.
  table_VxD = nn.with_logical_constraint(table_VxD.astype(dtype), (None, None))
  pos_LxD = module.param(
      "pos_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("positions", "embed")),
      (max_len, width), jnp.float32)[:length]
  x_BxLxD = jnp.take(table_VxD, tokens_BxL, axis=0) + pos_LxD.astype(dtype)
  return nn.with_logical_constraint(x_BxLxD, BATCH_LENGTH_EMBED)


class TextEmbedding(nn.Module):
  """`token_and_position_embedding` as a module, for modules that define their parts in setup."""
  vocab_size: int
  max_len: int
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BxL):
    return token_and_position_embedding(self, tokens_BxL, self.vocab_size, self.max_len,
                                        self.width, self.dtype)
