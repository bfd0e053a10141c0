"""With libtpu installed but no TPU (nor GPU) attached, importing the package points jax at the
CPU, so that jax does not start the TPU runtime and print its errors; elsewhere it changes
nothing."""

import importlib.util
import sys
import types

import pytest

import ig_captioner


class _Config:
  def __init__(self):
    self.updates = []

  def update(self, name, value):
    self.updates.append((name, value))


@pytest.fixture
def machine(monkeypatch):
  """A machine with libtpu installed, no TPU, no GPU, no JAX_PLATFORMS; jax already imported."""
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
      object() if name == "libtpu" else real_find_spec(name, *a)))
  monkeypatch.setattr(ig_captioner, "_tpu_attached", lambda: False)
  monkeypatch.setattr(ig_captioner.os.path, "exists", lambda path: False)
  fake_jax = types.SimpleNamespace(config=_Config())
  monkeypatch.setitem(sys.modules, "jax", fake_jax)
  return monkeypatch, fake_jax.config


def test_cpu_is_chosen_without_a_tpu(machine):
  monkeypatch, config = machine
  ig_captioner._quiet_libtpu()
  assert ig_captioner.os.environ["JAX_PLATFORMS"] == "cpu"
  assert config.updates == [("jax_platforms", "cpu")]


@pytest.mark.parametrize("case", ["tpu", "gpu", "user_choice", "no_libtpu"])
def test_nothing_changes_where_jax_should_choose(machine, case):
  monkeypatch, config = machine
  if case == "tpu":
    monkeypatch.setattr(ig_captioner, "_tpu_attached", lambda: True)
  elif case == "gpu":
    monkeypatch.setattr(ig_captioner.os.path, "exists", lambda path: path == "/dev/nvidia0")
  elif case == "user_choice":
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
  else:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  ig_captioner._quiet_libtpu()
  assert ig_captioner.os.environ.get("JAX_PLATFORMS") == ("tpu" if case == "user_choice"
                                                          else None)
  assert config.updates == []


def test_tpu_is_found_by_its_pci_ids(tmp_path, monkeypatch):
  for name, vendor, device in [("a", "0x8086", "0x0027"), ("b", "0x1ae0", "0x0001")]:
    (tmp_path / name).mkdir()
    (tmp_path / name / "vendor").write_text(vendor + "\n")
    (tmp_path / name / "device").write_text(device + "\n")
  real_glob = ig_captioner.glob.glob
  monkeypatch.setattr(ig_captioner.glob, "glob",
                      lambda pattern: real_glob(str(tmp_path / "*" / "vendor")))
  assert not ig_captioner._tpu_attached()  # Google's other device; a TPU id of another vendor.
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "vendor").write_text("0x1ae0\n")
  (tmp_path / "c" / "device").write_text("0x0063\n")  # A v5e chip.
  assert ig_captioner._tpu_attached()
