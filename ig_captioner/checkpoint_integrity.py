"""Digests written with every checkpoint and checked on restore, so that bit rot is never silent.

tensorstore's OCDBT checksums cover its manifest and tree nodes but not the array chunks: a few
flipped bytes in a data file restore as wrong numbers without any error. So each saved item gets
a digest at save time:
- arrays (`params`, `train`): a 64-bit fingerprint per leaf, computed on device as a wrapping
  sum of a bit mix of (value bits, flat index). Integer sums are exact in any order, so the
  fingerprint does not depend on the sharding: a checkpoint written on one mesh verifies on any
  other, and only two uint32 per leaf leave the devices. Any single changed element changes the
  sum; several changes cancel with probability ~2^-64;
- JSON items (`meta`): SHA-256 of the canonical JSON;
- the data iterator: each process's state file gets a SHA-256 sidecar (`DataIterSave`).
"""

import dataclasses
import hashlib
import json
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from ig_captioner import tree_paths

_GOLDEN = np.uint32(0x9E3779B9)  # 2^32 / golden ratio: decorrelates neighbouring indices.
_SEED = np.uint32(0x7F4A7C15)


def _mix32(h):
  """murmur3's 32-bit finalizer: a bijection on uint32 that spreads every input bit."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _as_uint32(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as uint32 (narrow types widened, 64-bit types split in two words)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
  if x.dtype.itemsize == 8:
    return jax.lax.bitcast_convert_type(bits, jnp.uint32)  # Adds a trailing axis of 2.
  return bits.astype(jnp.uint32)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """uint32[2] that changes whenever any element of `x` (or its position) changes."""
  bits = _as_uint32(jnp.asarray(x))
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(bits.ndim)):  # Flat index, built from iotas that shard like `x`.
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * np.uint32(stride)
    stride = (stride * bits.shape[axis]) % 2**32
  position = _mix32(index * _GOLDEN + _SEED)
  low = _mix32(bits ^ position)
  high = _mix32(bits + _mix32(position ^ _SEED))
  return jnp.stack([jnp.sum(low, dtype=jnp.uint32), jnp.sum(high, dtype=jnp.uint32)])


_fingerprints = jax.jit(lambda tree: jax.tree.map(_leaf_fingerprint, tree))


def tree_fingerprints(tree: Any) -> dict[str, str]:
  """{leaf path: 16 hex digits} for a tree of (possibly sharded, multi-host) arrays."""
  fingerprints = _fingerprints(tree)
  # Replicated results: every process reads its own copy, no cross-host transfer.
  leaves = jax.tree_util.tree_flatten_with_path(fingerprints)[0]
  return {tree_paths.path_name(path):
          "".join(f"{int(w):08x}" for w in np.asarray(value.addressable_data(0)))
          for path, value in leaves}


def json_digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def differing_leaves(saved: dict[str, str], restored: dict[str, str]) -> list[str]:
  """Paths whose fingerprint differs, or that are present on one side only."""
  return sorted(k for k in saved.keys() | restored.keys() if saved.get(k) != restored.get(k))


class DigestMismatch(ValueError):
  """Restored bytes differ from those that were saved."""


# ------------------------------------------------------------- Data-iterator state, digested ---
class DataIterHandler(grain.checkpoint.CheckpointHandler):
  """grain's handler (`process_<i>-of-<n>.json`) plus a SHA-256 sidecar checked on restore."""

  def save(self, directory, item=None, args=None):
    super().save(directory, item=item, args=args)
    state_file = _own_state_file(directory)
    _sidecar(state_file).write_text(hashlib.sha256(state_file.read_bytes()).hexdigest())

  def restore(self, directory, item=None, args=None):
    state_file = _own_state_file(directory)
    sidecar = _sidecar(state_file)
    # Checkpoints written before digests existed have no sidecar: they restore unchecked.
    if sidecar.exists() and state_file.exists() and sidecar.read_text().strip() != (
        hashlib.sha256(state_file.read_bytes()).hexdigest()):
      raise DigestMismatch(f"{state_file.name} does not match the SHA-256 written with it")
    return super().restore(directory, item=item, args=args)


def _own_state_file(directory):
  """This process's state file, named as grain names it."""
  return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


def _sidecar(state_file):
  return state_file.with_suffix(".sha256")


@ocp.args.register_with_handler(DataIterHandler, for_save=True)
@dataclasses.dataclass
class DataIterSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIterHandler, for_restore=True)
@dataclasses.dataclass
class DataIterRestore(ocp.args.CheckpointArgs):
  item: Any
