"""Multi-host start-up (`ig_captioner/distributed.py`) and the mesh over slices (`config.mesh.dcn`).

The longer two-process run is `tests/e2e/test_multihost.py` (its workers start through
`distributed.initialize` with explicit flags' values and train on a `dcn` mesh)."""

import types

import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner import distributed
from ig_captioner import errors
from ig_captioner import sharding


@pytest.mark.parametrize("environ, cluster", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # One task: nothing to join.
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "SLURM"),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, None),  # A single-host TPU VM.
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "Cloud TPU / GKE"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}, "multi-slice TPU"),
])
def test_the_cluster_is_detected_from_the_environment(environ, cluster):
  assert distributed.detected_cluster(environ) == cluster


def test_initialize_calls_jax_only_for_a_multi_process_job(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *args: calls.append(args))
  monkeypatch.setattr(jax.config, "update", lambda *args: None)
  for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
               "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  distributed.initialize()  # A laptop: nothing to join.
  assert calls == []
  distributed.initialize("10.0.0.2:1234", 4, 3)
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  distributed.initialize()  # JAX reads SLURM's variables itself.
  assert calls == [("10.0.0.2:1234", 4, 3), (None, None, None)]
  with pytest.raises(errors.ConfigError, match="go together: give all three"):
    distributed.initialize("10.0.0.2:1234")
  with pytest.raises(errors.ConfigError, match=r"--process_id=4 must be in \[0, --num_processes"):
    distributed.initialize("10.0.0.2:1234", 4, 4)


def _fake_devices(num_slices: int, per_slice: int):
  return [types.SimpleNamespace(id=i, slice_index=i // per_slice, process_index=i // per_slice,
                                platform="cpu", device_kind="cpu")
          for i in range(num_slices * per_slice)]


def test_dcn_axes_cross_slices_and_ici_axes_stay_within_one(monkeypatch):
  built = {}
  monkeypatch.setattr(jax.sharding, "Mesh",
                      lambda devices, names, axis_types: built.update(devices=devices))
  config = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=2, dcn=dict(data=-1)))
  sharding.make_mesh(config, _fake_devices(num_slices=2, per_slice=8))
  slices_DxFxT = np.vectorize(lambda d: d.slice_index)(built["devices"])
  assert slices_DxFxT.shape == (2, 4, 2)  # data over the 2 slices, fsdp x tensor within one.
  assert (slices_DxFxT[0] == 0).all() and (slices_DxFxT[1] == 1).all()
  with pytest.raises(errors.ConfigError, match=r"span 2 TPU slices .*config.mesh.dcn=dict"):
    sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1)), _fake_devices(2, 8))
  with pytest.raises(errors.ConfigError, match=r"config.mesh.dcn \(over slices\)=.* needs 4"):
    sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, dcn=dict(data=4))),
                       _fake_devices(2, 8))


def test_a_dcn_mesh_of_one_process_is_the_plain_mesh():
  with_dcn = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=-1, dcn=dict())))
  plain = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=-1)))
  assert dict(with_dcn.shape) == dict(plain.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  one_slice = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=-1,
                                                                dcn=dict(data=1))))
  np.testing.assert_array_equal(np.vectorize(lambda d: d.id)(one_slice.devices),
                                np.vectorize(lambda d: d.id)(plain.devices))
