"""Checkpoint digests: the on-device fingerprint against a numpy reference, sharding invariance,
and sensitivity to one flipped bit."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import checkpoint_integrity as integrity
from ig_captioner import sharding

_M32 = 0xFFFFFFFF


def _mix32_np(h):
  h = h ^ (h >> 16)
  h = (h * 0x85EBCA6B) & _M32
  h = h ^ (h >> 13)
  h = (h * 0xC2B2AE35) & _M32
  return h ^ (h >> 16)


def _fingerprint_np(x: np.ndarray) -> str:
  """The fingerprint's definition, in Python integers on the host (no JAX)."""
  words = {1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
  bits = x.reshape(-1).view(words).astype(np.uint64)
  index = np.arange(bits.size, dtype=np.uint64)
  position = _mix32_np((index * 0x9E3779B9 + 0x7F4A7C15) & _M32)
  low = _mix32_np(bits ^ position)
  high = _mix32_np((bits + _mix32_np(position ^ 0x7F4A7C15)) & _M32)
  return f"{int(low.sum()) & _M32:08x}{int(high.sum()) & _M32:08x}"


@pytest.fixture
def tree():
  rng = np.random.default_rng(0)
  return {"kernel": rng.normal(size=(16, 24)).astype(np.float32),
          "bias": rng.normal(size=(24,)).astype(jax.numpy.bfloat16),
          "count": np.int32(7),
          "stack": rng.normal(size=(4, 8, 6)).astype(np.float32),
          "empty": np.zeros((0, 3), np.float32)}


def test_fingerprint_matches_a_numpy_reference(tree):
  fingerprints = integrity.tree_fingerprints(tree)
  assert fingerprints == {name: _fingerprint_np(np.asarray(x)) for name, x in tree.items()}
  assert fingerprints["empty"] == "0" * 16


def test_fingerprint_is_the_same_on_any_mesh(tree):
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=4, tensor=1)))
  specs = {"kernel": P("data", "fsdp"), "bias": P("fsdp"), "count": P(),
           "stack": P(None, "fsdp", None), "empty": P()}
  sharded = {k: jax.device_put(x, NamedSharding(mesh, specs[k])) for k, x in tree.items()}
  assert len(sharded["kernel"].sharding.device_set) == 8
  assert integrity.tree_fingerprints(sharded) == integrity.tree_fingerprints(tree)


def test_one_flipped_bit_or_two_swapped_values_change_the_fingerprint(tree):
  saved = integrity.tree_fingerprints(tree)
  flipped = tree["kernel"].copy()
  flipped.view(np.uint32)[5, 7] ^= 1 << 3  # A low mantissa bit: a tiny change in value.
  assert integrity.differing_leaves(saved, integrity.tree_fingerprints(
      dict(tree, kernel=flipped))) == ["kernel"]
  swapped = tree["stack"].copy()
  swapped[0, 0, 0], swapped[3, 7, 5] = swapped[3, 7, 5], swapped[0, 0, 0]
  assert integrity.differing_leaves(saved, integrity.tree_fingerprints(
      dict(tree, stack=swapped))) == ["stack"]
  assert integrity.differing_leaves(saved, {**saved, "extra": "0"}) == ["extra"]
