"""The device mesh and the ONE table that maps logical axis names onto it.

Params and activations name logical axes only (`EMBED`, `MLP`, `ACTIVATION_BATCH`, ...: the
constants below, which every model module uses). This module is the single place where those
names meet the mesh axes `data`, `fsdp` and `tensor`:

- `data`: pure data parallelism (params replicated).
- `fsdp`: data parallelism with params and optimizer state split along `embed` (ZeRO-3 style).
- `tensor`: Megatron-style tensor parallelism over heads, MLP hidden units and the vocabulary.
"""

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from ig_captioner import errors

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis names, the only names model code gives axes (as these constants).
# Params:
EMBED = "embed"  # Model width.
MLP = "mlp"  # MLP hidden units.
HEADS = "heads"  # Attention heads x head width.
VOCAB = "vocab"
JOINT_EMBED = "joint_embed"  # Two towers' projection output.
PATCH = "patch"  # Pixels of an image patch.
POSITIONS = "positions"  # Learned position embeddings.
NORM = "norm"  # Layer-norm scales and offsets.
# Activations:
ACTIVATION_BATCH = "activation_batch"
ACTIVATION_LENGTH = "activation_length"
ACTIVATION_EMBED = "activation_embed"
ACTIVATION_MLP = "activation_mlp"
ACTIVATION_HEADS = "activation_heads"
ACTIVATION_KV = "activation_kv"
ACTIVATION_VOCAB = "activation_vocab"
# Activation layouts, named once.
BATCH_LENGTH_EMBED = (ACTIVATION_BATCH, ACTIVATION_LENGTH, ACTIVATION_EMBED)
BATCH_LENGTH_MLP = (ACTIVATION_BATCH, ACTIVATION_LENGTH, ACTIVATION_MLP)
BATCH_LENGTH_HEADS_KV = (ACTIVATION_BATCH, ACTIVATION_LENGTH, ACTIVATION_HEADS, ACTIVATION_KV)
BATCH_LENGTH_VOCAB = (ACTIVATION_BATCH, ACTIVATION_LENGTH, ACTIVATION_VOCAB)
BATCH_EMBED = (ACTIVATION_BATCH, ACTIVATION_EMBED)

LOGICAL_AXIS_RULES = (
    # Activations.
    (ACTIVATION_BATCH, ("data", "fsdp")),
    (ACTIVATION_LENGTH, None),
    (ACTIVATION_EMBED, None),
    (ACTIVATION_MLP, "tensor"),
    (ACTIVATION_HEADS, "tensor"),
    (ACTIVATION_KV, None),
    (ACTIVATION_VOCAB, "tensor"),
    # Params.
    (EMBED, "fsdp"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (VOCAB, "tensor"),
    (JOINT_EMBED, None),  # Small, replicated.
    (PATCH, None),
    (POSITIONS, None),
    (NORM, None),
)


def mesh_shape(mesh_config, num_devices: int, field: str = "config.mesh") -> tuple[int, ...]:
  """Resolves `field` (sizes for data/fsdp/tensor, at most one -1) for `num_devices`."""
  unknown = set(mesh_config.keys()) - set(MESH_AXES)
  if unknown:
    raise errors.ConfigError(
        f"{field} has unknown axes {sorted(unknown)}; allowed: {MESH_AXES}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise errors.ConfigError(f"{field}={dict(zip(MESH_AXES, sizes))} has more than one -1; "
                     "at most one axis may take the remaining devices")
  if any(s == 0 or s < -1 for s in sizes):
    raise errors.ConfigError(
        f"{field}={dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise errors.ConfigError(
          f"{field}={dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
          f"divisible by the fixed axes' product {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise errors.ConfigError(
        f"{field}={dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices "
        f"but {num_devices} are available; set one axis to -1 to use them all")
  return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """A mesh with axes (data, fsdp, tensor), all of type Auto so that logical constraints apply.

  `mesh_config.dcn` (optional) gives each axis's size across slices, over the data-center
  network (MaxText's `dcn_*` parallelism; TPU devices name their slice, elsewhere each process is
  one); the other sizes are then within a slice (ICI), and an axis's size is their product.
  Devices of several TPU slices need `dcn`, so that no fast axis runs over the slow network.
  """
  devices = jax.devices() if devices is None else devices
  within = {k: v for k, v in mesh_config.items() if k != "dcn"}
  # TPU devices name their slice; CPU and GPU ones say slice 0, and there a process is one.
  slices = {getattr(d, "slice_index", 0) for d in devices}
  by_slice = len(slices) > 1 or devices[0].platform == "tpu"
  granules = len(slices) if by_slice else len({d.process_index for d in devices})
  if not mesh_config.get("dcn"):
    if by_slice and granules > 1:
      raise errors.ConfigError(
          f"the devices span {granules} TPU slices but config.mesh has no `dcn` sizes: set e.g. "
          f"config.mesh.dcn=dict(data={granules}) so that only data parallelism crosses slices")
    shape = mesh_shape(within, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)
  dcn_shape = mesh_shape(mesh_config.dcn, granules, "config.mesh.dcn (over slices)")
  ici_shape = mesh_shape(within, len(devices) // granules)
  device_array = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                      process_is_granule=not by_slice)
  return jax.sharding.Mesh(device_array, MESH_AXES,
                           axis_types=(AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh):
  """Context in which jitted model code sees the mesh and the logical-axis rules."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield


def logical_to_shardings(boxed_tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """NamedShardings for a tree of (abstract) values boxed with logical axis names."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over data and fsdp; other axes replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def batch_axis_size(mesh: jax.sharding.Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_divides(batch_size: int, mesh: jax.sharding.Mesh, field: str) -> None:
  """ConfigError unless the batch `field` splits evenly over the mesh's batch axes."""
  if batch_size % batch_axis_size(mesh):
    raise errors.ConfigError(
        f"{field}={batch_size} is not divisible by the batch axes of the mesh (data x fsdp = "
        f"{batch_axis_size(mesh)})")


def global_batch_from_local(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict:
  """Assembles each process's slice of the batch into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
