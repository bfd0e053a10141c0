"""Accelerators' per-chip figures (HBM, dense bf16 matmul peak), with sources, for the planner
and for the trainer's MFU; `peak_flops` picks a device's peak by its `device_kind`.

TPUs: Google Cloud's TPU pages (https://cloud.google.com/tpu/docs/<kind>, "key chip
specifications"; their "GB" of HBM read as GiB, as the compiler counts). GPUs: NVIDIA's data
sheets, the dense (not 2:4-sparse) BF16 Tensor Core figure of the SXM part (H100 PCIe: its own).
"""

import dataclasses

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int
  peak_bf16_flops: float  # Per second, per device as JAX sees it.
  megacore: bool  # Two TensorCores used as one device (TPU v4, v5p).
  source: str


# Planner topologies name these (`v5e:4x4`).
TPU_CHIPS = {
    "v4": Chip("TPU v4", 32 * GIB, 275e12, True, "cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 16 * GIB, 197e12, False, "cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 95 * GIB, 459e12, True, "cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", 32 * GIB, 918e12, False, "cloud.google.com/tpu/docs/v6e"),
}
GPU_CHIPS = {
    "h100_sxm": Chip("NVIDIA H100 SXM", 80 * 10 ** 9, 989.4e12, False,
                     "nvidia.com/en-us/data-center/h100 (datasheet: 1,979 TFLOPS with sparsity)"),
    "h100_pcie": Chip("NVIDIA H100 PCIe", 80 * 10 ** 9, 756.5e12, False,
                      "nvidia.com/en-us/data-center/h100 (datasheet: 1,513 with sparsity)"),
    "h200": Chip("NVIDIA H200 SXM", 141 * 10 ** 9, 989.4e12, False,
                 "nvidia.com/en-us/data-center/h200 (datasheet: 1,979 with sparsity)"),
    "a100": Chip("NVIDIA A100", 80 * 10 ** 9, 312e12, False,
                 "nvidia.com/en-us/data-center/a100 (datasheet: 624 with sparsity)"),
}
# `device_kind` fragments, most specific first.
_KINDS = (("TPU v4", TPU_CHIPS["v4"]), ("TPU v5 lite", TPU_CHIPS["v5e"]),
          ("TPU v5e", TPU_CHIPS["v5e"]), ("TPU v5p", TPU_CHIPS["v5p"]),
          ("TPU v5", TPU_CHIPS["v5p"]), ("TPU v6 lite", TPU_CHIPS["v6e"]),
          ("TPU v6e", TPU_CHIPS["v6e"]), ("H100 PCIe", GPU_CHIPS["h100_pcie"]),
          ("H100", GPU_CHIPS["h100_sxm"]), ("H200", GPU_CHIPS["h200"]),
          ("A100", GPU_CHIPS["a100"]))


def chip(device_kind: str) -> Chip | None:
  """The table's chip of a `jax.Device.device_kind`, or None (CPUs, chips not listed)."""
  return next((c for fragment, c in _KINDS if fragment in device_kind), None)


MEASURE_SIZE = 1024  # The start-up matmul where no table entry applies (CPUs).


def measured_peak(dtype: str = "float32", size: int = MEASURE_SIZE, repeats: int = 3) -> float:
  """FLOP/s of a size^3 matmul on the default device (inputs `dtype`, f32 accumulation), best
  of `repeats` after a warm-up: the peak MFU is read against where the table has none."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(matmul(a, a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


def peak_flops(device_kind: str, dtype: str = "bfloat16",
               configured: float | None = None) -> tuple[float, str]:
  """(peak FLOP/s per device, where it comes from): `configured` if given, else the table's
  bf16 peak (as MaxText reports MFU, whatever the compute dtype), else a matmul measured now in
  `dtype` (CPUs)."""
  if configured:
    return float(configured), "config.peak_flops_per_device"
  known = chip(device_kind)
  if known is not None:
    return known.peak_bf16_flops, f"{known.name} bf16 peak ({known.source})"
  return measured_peak(dtype), f"{dtype} {MEASURE_SIZE}^3 matmul measured at start-up"
