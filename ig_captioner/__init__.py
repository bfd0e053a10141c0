"""ig-captioner: Information Gain captioners in JAX/Flax."""

import glob
import importlib.util
import os
import sys

# TensorFlow (imported by TFDS and clu for host-side work) logs verbosely at import; keep errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow only reads and writes files here: its oneDNN kernels (and their notice) add nothing.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# How jax itself finds accelerators (jax/_src/hardware_utils.py, jax 0.10): TPU chips are PCI
# devices of Google's vendor id with these device ids (v3 to TPU7x); NVIDIA GPUs are device files.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")
_NVIDIA_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")


def _tpu_attached() -> bool:
  for vendor_file in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor_file, encoding="ascii") as f:
        if f.read().strip() != _GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor_file), "device"), encoding="ascii") as f:
        if f.read().strip() in _TPU_PCI_DEVICES:
          return True
    except OSError:
      continue
  return False


def _quiet_libtpu() -> None:
  """With libtpu installed (the `planner` extra) but no TPU attached, jax still starts the TPU
  runtime at its first device query, which prints errors about unknown TPU hostnames and
  accelerator types that a user reads as failures (jax skips CUDA without a GPU, but has no such
  check for TPUs). There, jax is told to use the CPU, unless the user chose platforms
  (JAX_PLATFORMS) or a GPU is visible. The planner compiles for TPU topologies all the same: it
  loads libtpu itself."""
  if ("JAX_PLATFORMS" in os.environ or importlib.util.find_spec("libtpu") is None or
      _tpu_attached() or any(os.path.exists(f) for f in _NVIDIA_DEVICE_FILES)):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"  # Read when jax is imported, here and in child processes.
  if "jax" in sys.modules:  # Imported before this package: its config has read the variable.
    sys.modules["jax"].config.update("jax_platforms", "cpu")


_quiet_libtpu()
