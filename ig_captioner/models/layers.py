"""Transformer building blocks shared by every tower: named sizes, attention, MLP, and the one
pre-LN block that the image encoder, the text encoder and the text decoder all stack.

Shape letters: B batch, Q query length, S key/value length, L sequence length, N visual tokens,
D model width, E width of cross-attended tokens, H heads, K head width, F MLP width.

Every parameter carries logical axis names (`ig_captioner.sharding`'s constants; its one table
maps them onto the mesh). Kernels are 2-D on purpose: multi-dimensional `DenseGeneral` kernels
with logical partitioning break under `jax.set_mesh` in flax 0.12, so heads are split by reshape.
Products run in the activations' dtype, accumulated in float32 (`mixed_precision`).
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.models import mixed_precision

Dtype = Any
_einsum = mixed_precision.mixed_einsum  # Products in the activations' dtype, f32 sums.


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


def named_size(name: str, field: str, depth: int | None = None) -> TransformerSize:
  """SIZES[name], or an explicit 'WIDTH:DEPTH:HEADS:MLP_DIM' (e.g. '512:12:8:2048', as converted
  checkpoints of other sizes name theirs), optionally with another depth; ConfigError naming
  `field` otherwise."""
  if name in SIZES:
    size = SIZES[name]
  else:
    numbers = name.split(":")
    if len(numbers) != 4 or not all(n.isdigit() and int(n) > 0 for n in numbers):
      raise errors.ConfigError(f"config.{field}={name!r} is not one of {sorted(SIZES)} nor "
                               "WIDTH:DEPTH:HEADS:MLP_DIM (e.g. '512:12:8:2048')")
    width, layers_, heads, mlp_dim = map(int, numbers)
    if width % heads:
      raise errors.ConfigError(f"config.{field}={name!r}: width {width} is not divisible by "
                               f"{heads} heads")
    size = TransformerSize(width=width, depth=layers_, mlp_dim=mlp_dim, num_heads=heads)
  return dataclasses.replace(size, depth=depth) if depth else size


def size_name(size: TransformerSize) -> str:
  """The name `named_size` reads back: a SIZES name if one matches, else the explicit form."""
  for name, named in SIZES.items():
    if named == size:
      return name
  return f"{size.width}:{size.depth}:{size.num_heads}:{size.mlp_dim}"


def _quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


# MLP activations: tanh-approximated GELU (this codebase's and big_vision's default), exact GELU
# (open_clip's models), QuickGELU (OpenAI's CLIP, open_clip's `-quickgelu` models).
ACTIVATIONS = {"gelu_tanh": lambda x: nn.gelu(x, approximate=True),
               "gelu": lambda x: nn.gelu(x, approximate=False),
               "quick_gelu": _quick_gelu}


@dataclasses.dataclass(frozen=True)
class BlockStyle:
  """How a tower's blocks compute where checkpoints from other codebases differ; the defaults are
  this codebase's own (flax's layer-norm epsilon; torch's is 1e-5)."""
  activation: str = "gelu_tanh"
  ln_eps: float = 1e-6


def block_style(model_config) -> BlockStyle:
  """The BlockStyle of `config.model` (fields `activation`, `ln_eps`; absent: the defaults)."""
  activation = model_config.get("activation", BlockStyle.activation)
  if activation not in ACTIVATIONS:
    raise errors.ConfigError(f"config.model.activation={activation!r} is not one of "
                             f"{sorted(ACTIVATIONS)}")
  ln_eps = float(model_config.get("ln_eps", BlockStyle.ln_eps))
  if not 0 < ln_eps < 1:
    raise errors.ConfigError(f"config.model.ln_eps={ln_eps} must be in (0, 1), e.g. 1e-5")
  return BlockStyle(activation, ln_eps)


def dense(features: int, axes: tuple[str, str], dtype: Dtype, name: str | None,
          use_bias: bool = True, kernel_init=nn.initializers.xavier_uniform()) -> nn.Dense:
  """A Dense layer whose 2-D kernel and bias carry logical axis names.

  With a bfloat16 `dtype` the inputs and kernel are bfloat16 and the products accumulate (and
  come out) in float32, gradients too: asking XLA for bfloat16 outputs makes CPUs run float32
  matmuls, while bfloat16 inputs with float32 accumulation are fast everywhere.
  """
  return nn.Dense(
      features,
      dtype=dtype,
      param_dtype=jnp.float32,
      use_bias=use_bias,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
      dot_general=None if dtype == jnp.float32 else mixed_precision.dense_dot_f32_accumulate,
      name=name)


def layer_norm(dtype: Dtype, name: str | None, eps: float = BlockStyle.ln_eps) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=eps,
      dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (sharding.NORM,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (sharding.NORM,)),
      name=name)


# Key/value segments for cached attention (`MultiHeadAttention.attend_segments`): a tuple
# (keys, values, allowed), head-major, either per image, k_BxHxSxK (shared by all C rows of that
# image: cross-attention's visual tokens, a prompt prefix decoded once), or per row,
# k_BxCxHxSxK (a row's own tokens, a generation cache); `allowed` is None or a bool mask
# broadcastable to Q x S.
Segment = tuple[jax.Array, jax.Array, jax.Array | None]


def causal_mask(q_len: int, s_len: int) -> jax.Array:
  """allowed_QxS: query i sees keys 0..i (queries and keys start at the same position)."""
  return jnp.tril(jnp.ones((q_len, s_len), dtype=bool))


class MultiHeadAttention(nn.Module):
  """Dot-product attention from queries x_BxQxD to keys/values kv_BxSxE (self- or cross-).

  `__call__` is the training and full-recomputation path. `project_kv` and `attend_segments`
  are the cached path: keys and values computed once (per image, per prompt prefix, per
  generated token) and attended to by later queries.
  """
  num_heads: int
  width: int
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    self.query, self.key, self.value = (
        dense(self.width, (sharding.EMBED, sharding.HEADS), self.dtype, None) for _ in range(3))
    self.out = dense(self.width, (sharding.HEADS, sharding.EMBED), self.dtype, None)

  def _split_heads(self, x_XxD):
    return x_XxD.reshape(*x_XxD.shape[:-1], self.num_heads, self.width // self.num_heads)

  def project_kv(self, kv_XxSxE) -> tuple[jax.Array, jax.Array]:
    """Keys and values k_XxSxHxK, v_XxSxHxK of tokens kv_XxSxE (any leading axes)."""
    return self._split_heads(self.key(kv_XxSxE)), self._split_heads(self.value(kv_XxSxE))

  def project_kv_heads(self, kv_XxSxE) -> tuple[jax.Array, jax.Array]:
    """`project_kv`, head-major (k_XxHxSxK): the layout cached segments keep."""
    return tuple(jnp.swapaxes(a, -2, -3) for a in self.project_kv(kv_XxSxE))

  def __call__(self, x_BxQxD, kv_BxSxE, causal: bool = False, bidirectional_B=None,
               allowed_BxQxS=None):
    """`causal` masks later positions; `bidirectional_B` (bool per example) lifts that mask for
    the examples where it is True (CapPa's parallel prediction); `allowed_BxQxS` (bool) masks
    whatever it marks False, on top of the rest."""
    b, q_len, _ = x_BxQxD.shape
    q_BxQxHxK = nn.with_logical_constraint(self._split_heads(self.query(x_BxQxD)),
                                           sharding.BATCH_LENGTH_HEADS_KV)
    k_BxSxHxK, v_BxSxHxK = (nn.with_logical_constraint(a, sharding.BATCH_LENGTH_HEADS_KV)
                            for a in self.project_kv(kv_BxSxE))
    logits_BxHxQxS = _einsum("bqhk,bshk->bhqs", q_BxQxHxK, k_BxSxHxK, self.dtype)
    logits_BxHxQxS = logits_BxHxQxS / jnp.sqrt(q_BxQxHxK.shape[-1]).astype(jnp.float32)
    if causal:
      allowed_Bx1xQxS = causal_mask(q_len, k_BxSxHxK.shape[1])[None, None]
      if bidirectional_B is not None:
        allowed_Bx1xQxS = allowed_Bx1xQxS | bidirectional_B[:, None, None, None]
      logits_BxHxQxS = jnp.where(allowed_Bx1xQxS, logits_BxHxQxS, jnp.finfo(jnp.float32).min)
    if allowed_BxQxS is not None:
      logits_BxHxQxS = jnp.where(allowed_BxQxS[:, None], logits_BxHxQxS,
                                 jnp.finfo(jnp.float32).min)
    weights_BxHxQxS = nn.softmax(logits_BxHxQxS, axis=-1)
    out_BxQxHxK = _einsum("bhqs,bshk->bqhk", weights_BxHxQxS, v_BxSxHxK, self.dtype)
    out_BxQxHxK = nn.with_logical_constraint(out_BxQxHxK, sharding.BATCH_LENGTH_HEADS_KV)
    out_BxQxD = self.out(out_BxQxHxK.reshape(b, q_len, self.width))
    return nn.with_logical_constraint(out_BxQxD, sharding.BATCH_LENGTH_EMBED)

  def attend_segments(self, x_BxCxQxD, segments: Sequence[Segment]) -> jax.Array:
    """Queries of C rows per image attend to the keys of every segment at once (one softmax).
    Per-image segments are never copied per row. Returns out_BxCxQxD.

    Heads lead every product (B, H, rows, K): XLA's CPU matmuls are several times slower on
    the interleaved (.., H, K) layout the projections give."""
    b, c, q_len, _ = x_BxCxQxD.shape
    q_BxCxQxHxK = self._split_heads(self.query(x_BxCxQxD))
    h, head_dim = q_BxCxQxHxK.shape[-2:]
    q_BxCxQxHxK = q_BxCxQxHxK / jnp.sqrt(head_dim).astype(q_BxCxQxHxK.dtype)
    q_BxHxCQxK = q_BxCxQxHxK.transpose(0, 3, 1, 2, 4).reshape(b, h, c * q_len, head_dim)
    q_BxCxHxQxK = q_BxCxQxHxK.transpose(0, 1, 3, 2, 4)
    logits = []
    for k, _, allowed in segments:
      if k.ndim == 4:  # Per image: k_BxHxSxK.
        logits_BxHxCxQxS = _einsum("bhqk,bhsk->bhqs", q_BxHxCQxK, k, self.dtype).reshape(
            b, h, c, q_len, -1)
      else:  # Per row: k_BxCxHxSxK.
        logits_BxHxCxQxS = _einsum("bchqk,bchsk->bchqs", q_BxCxHxQxK, k,
                                   self.dtype).transpose(0, 2, 1, 3, 4)
      if allowed is not None:
        logits_BxHxCxQxS = jnp.where(allowed, logits_BxHxCxQxS, jnp.finfo(jnp.float32).min)
      logits.append(logits_BxHxCxQxS)
    weights = nn.softmax(jnp.concatenate(logits, axis=-1), axis=-1)
    bounds = np.cumsum([k.shape[-2] for k, _, _ in segments])[:-1]
    out_BxHxCxQxK = 0.0
    for w_BxHxCxQxS, (_, v, _) in zip(jnp.split(weights, bounds, axis=-1), segments):
      if v.ndim == 4:
        out = _einsum("bhqs,bhsk->bhqk", w_BxHxCxQxS.reshape(b, h, c * q_len, -1), v,
                      self.dtype).reshape(b, h, c, q_len, head_dim)
      else:
        out = _einsum("bchqs,bchsk->bchqk", w_BxHxCxQxS.transpose(0, 2, 1, 3, 4), v,
                      self.dtype).transpose(0, 2, 1, 3, 4)
      out_BxHxCxQxK = out_BxHxCxQxK + out
    out_BxCxQxD = out_BxHxCxQxK.transpose(0, 2, 3, 1, 4).reshape(b, c, q_len, self.width)
    return self.out(out_BxCxQxD)


class MlpBlock(nn.Module):
  """Position-wise MLP, width D -> F -> D with an `ACTIVATIONS` nonlinearity."""
  mlp_dim: int
  dtype: Dtype = jnp.float32
  activation: str = BlockStyle.activation

  @nn.compact
  def __call__(self, x_BxLxD):
    width = x_BxLxD.shape[-1]
    h_BxLxF = dense(self.mlp_dim, (sharding.EMBED, sharding.MLP), self.dtype, "fc1")(x_BxLxD)
    if h_BxLxF.ndim == 3:
      h_BxLxF = nn.with_logical_constraint(h_BxLxF, sharding.BATCH_LENGTH_MLP)
    out_BxLxD = dense(width, (sharding.MLP, sharding.EMBED), self.dtype, "fc2")(
        ACTIVATIONS[self.activation](h_BxLxF))
    if out_BxLxD.ndim == 3:
      out_BxLxD = nn.with_logical_constraint(out_BxLxD, sharding.BATCH_LENGTH_EMBED)
    return out_BxLxD


class TransformerBlock(nn.Module):
  """Pre-LN block: self-attention (causal or not), optional cross-attention, MLP; residuals.

  With `cross_BxNxE=None` the cross-attention sublayer is skipped entirely (its params unused),
  which is how one text decoder serves both P(t|I) and the text-only P(t).
  """
  size: TransformerSize
  causal: bool = False
  dtype: Dtype = jnp.float32
  style: BlockStyle = BlockStyle()

  def setup(self):
    heads, width, eps = self.size.num_heads, self.size.width, self.style.ln_eps
    self.ln_self = layer_norm(self.dtype, None, eps)
    self.self_attn = MultiHeadAttention(heads, width, self.dtype)
    self.ln_cross = layer_norm(self.dtype, None, eps)
    self.cross_attn = MultiHeadAttention(heads, width, self.dtype)
    self.ln_mlp = layer_norm(self.dtype, None, eps)
    self.mlp = MlpBlock(self.size.mlp_dim, self.dtype, self.style.activation)

  def __call__(self, x_BxLxD, cross_BxNxE=None, bidirectional_B=None, allowed_BxLxL=None):
    y = self.ln_self(x_BxLxD)
    x_BxLxD = x_BxLxD + self.self_attn(y, y, causal=self.causal, bidirectional_B=bidirectional_B,
                                       allowed_BxQxS=allowed_BxLxL)
    if cross_BxNxE is not None:
      y = self.ln_cross(x_BxLxD)
      x_BxLxD = x_BxLxD + self.cross_attn(y, cross_BxNxE)
    x_BxLxD = x_BxLxD + self.mlp(self.ln_mlp(x_BxLxD))
    return nn.with_logical_constraint(x_BxLxD, sharding.BATCH_LENGTH_EMBED)

  def cross_kv(self, cross_BxNxE) -> tuple[jax.Array, jax.Array]:
    """The cross-attention keys and values of the visual tokens, k_BxHxNxK and v_BxHxNxK."""
    return self.cross_attn.project_kv_heads(cross_BxNxE.astype(self.dtype))

  def extend(self, x_BxCxQxD, context: Sequence[Segment], cross_kv=None):
    """The cached path of a causal block: C rows per image of Q new tokens, which see the
    `context` segments (earlier tokens' keys/values) and each other causally; `cross_kv` from
    `cross_kv` (None: no cross-attention). Returns (x_BxCxQxD, (k, v) of the new tokens,
    k_BxCxHxQxK: what later tokens will attend to)."""
    q_len = x_BxCxQxD.shape[-2]
    y = self.ln_self(x_BxCxQxD)
    new_kv = self.self_attn.project_kv_heads(y)
    own = (*new_kv, causal_mask(q_len, q_len))
    x_BxCxQxD = x_BxCxQxD + self.self_attn.attend_segments(y, (*context, own))
    if cross_kv is not None:
      y = self.ln_cross(x_BxCxQxD)
      x_BxCxQxD = x_BxCxQxD + self.cross_attn.attend_segments(y, ((*cross_kv, None),))
    return x_BxCxQxD + self.mlp(self.ln_mlp(x_BxCxQxD)), new_kv


def embedding_tables(module: nn.Module, vocab_size: int, max_len: int, width: int):
  """The token table_VxD and position table pos_MxD (M = max_len) params of `module`."""
  table_VxD = module.param(
      "token_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02),
                                   (sharding.VOCAB, sharding.EMBED)),
      (vocab_size, width), jnp.float32)
  pos_MxD = module.param(
      "pos_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02),
                                   (sharding.POSITIONS, sharding.EMBED)),
      (max_len, width), jnp.float32)
  return table_VxD, pos_MxD


def embed_tokens(table_VxD, pos_MxD, tokens_XxL, dtype: Dtype, positions_L=None):
  """Embedded tokens plus learned positions (0..L-1, or `positions_L`), as x_XxLxD."""
  length = tokens_XxL.shape[-1]
  if length > pos_MxD.shape[0]:
    raise ValueError(f"text length {length} exceeds the model's max_len {pos_MxD.shape[0]}")
  # Gather from a replicated copy (as FSDP does for every weight just in time): a gather from a
  # vocab-sharded table would make XLA replicate the batch-sharded activations instead.
  table_VxD = nn.with_logical_constraint(table_VxD.astype(dtype), (None, None))
  pos_LxD = (pos_MxD[:length] if positions_L is None
             else jnp.take(pos_MxD, positions_L, axis=0, mode="clip"))
  x_XxLxD = jnp.take(table_VxD, tokens_XxL, axis=0) + pos_LxD.astype(dtype)
  if x_XxLxD.ndim == 3:
    x_XxLxD = nn.with_logical_constraint(x_XxLxD, sharding.BATCH_LENGTH_EMBED)
  return x_XxLxD


def token_and_position_embedding(module: nn.Module, tokens_BxL, vocab_size: int, max_len: int,
                                 width: int, dtype: Dtype):
  """Embedded tokens_BxL plus learned positions, as x_BxLxD; creates the params in `module`."""
  tables = embedding_tables(module, vocab_size, max_len, width)
  return embed_tokens(*tables, tokens_BxL, dtype)


class TextEmbedding(nn.Module):
  """Token and position embeddings as a module, for modules that define their parts in setup;
  `positions_L` (default 0..L-1) places tokens after a cached prefix; `appended_D`, a vector
  placed after the L tokens at position L (CoCa's class token), makes x_Xx(L+1)xD."""
  vocab_size: int
  max_len: int
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_XxL, positions_L=None, appended_D=None):
    table_VxD, pos_MxD = embedding_tables(self, self.vocab_size, self.max_len, self.width)
    x_XxLxD = embed_tokens(table_VxD, pos_MxD, tokens_XxL, self.dtype, positions_L)
    if appended_D is None:
      return x_XxLxD
    length = tokens_XxL.shape[-1]
    if length >= self.max_len:
      raise ValueError(f"no position left after {length} tokens for the appended vector "
                       f"(max_len {self.max_len})")
    extra_D = (appended_D + pos_MxD[length]).astype(self.dtype)
    extra_Xx1xD = jnp.broadcast_to(extra_D, (*x_XxLxD.shape[:-2], 1, self.width))
    return jnp.concatenate([x_XxLxD, extra_Xx1xD], axis=-2)
