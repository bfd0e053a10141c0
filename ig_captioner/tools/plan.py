"""Memory and compile planner: compiles a config's train step, and its zero-shot evaluator's
scoring step, ahead of time for a TPU topology, on this (CPU) machine, and prints per chip what
they need against the chip's HBM, the FLOPs per step and the step time at a given MFU.

    pip install -e '.[planner]'      # libtpu: compiles for TPUs, runs nothing on them
    python -m ig_captioner.tools.plan --config=configs/ig_b16_laion.py --topology=v5e:4x4 \
        [--mfu=0.4] [--eval=false] [--json=plan.json] [--config.batch_size=4096 ...]

It exits 1 with the knobs to turn when the train step does not fit (batch, remat, logits chunk,
FSDP size). Chips: `CHIPS` (v4 and v5p count one device per chip, "megacore"). Nothing runs on a
TPU and nothing is downloaded; compiling a paper-scale step takes minutes and ~9 GB of RAM.
"""

import json
import math
import os
import re
import time

# The planner only compiles for the target: keep jax itself on the CPU, libtpu quiet, and let
# several planners (which never touch a TPU) share libtpu.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
for _name, _value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", "v5litepod-4"),
                      ("TPU_WORKER_HOSTNAMES", "localhost"), ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
  os.environ.setdefault(_name, _value)

# pylint: disable=wrong-import-position
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import accelerators
from ig_captioner import cli
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import models
from ig_captioner import paths
from ig_captioner import sharding
from ig_captioner import train_state
from ig_captioner.scoring import prompt_scoring

GIB = accelerators.GIB
Chip = accelerators.Chip
CHIPS = accelerators.TPU_CHIPS  # Per chip, with sources: `ig_captioner/accelerators.py`.


class PlanError(errors.UserError):
  """The planner cannot run (no libtpu, unknown topology) or the config does not fit."""


def target_devices(topology: str) -> tuple[Chip, list]:
  """(the chip, compile-only devices of `topology`, e.g. 'v5e:4x4' or 'v4:2x2x2')."""
  kind = topology.split(":")[0]
  if kind not in CHIPS or ":" not in topology:
    raise PlanError(f"--topology={topology!r} is not KIND:SHAPE with KIND one of "
                    f"{sorted(CHIPS)}, e.g. v5e:4x4 (16 chips) or v4:2x2x2 (8 chips)")
  try:
    import libtpu  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise PlanError("compiling for a TPU topology needs libtpu: pip install -e '.[planner]'"
                    ) from e
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  chip = CHIPS[kind]
  options = {"chip_config_name": "megacore"} if chip.megacore else {}
  try:
    devices = topologies.get_topology_desc(topology, platform="tpu", **options).devices
  except Exception as e:  # pylint: disable=broad-except
    raise PlanError(f"libtpu could not describe the topology {topology!r}: {e}. A topology "
                    "gives the chips per axis as Cloud TPU names them, e.g. v5e:2x4, v4:2x2x4"
                    ) from e
  return chip, list(devices)


def sharded_bytes(tree) -> int:
  """Bytes per device of a tree of arrays or ShapeDtypeStructs carrying their shardings (the
  largest shard: uneven splits round up)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def memory(compiled) -> dict:
  """Per-device bytes from XLA's memory analysis of a compiled program."""
  stats = compiled.memory_analysis()
  out = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
         "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
         "code": stats.generated_code_size_in_bytes}
  # What must be resident at once: inputs, outputs not written over donated inputs, scratch.
  out["total"] = (out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"] +
                  out["code"])
  return out


def compile_for_target(lowered, resident_bytes: int):
  """(compiled program or None, its per-device memory, FLOPs or None). The TPU compiler refuses
  a program whose temporaries exceed HBM; its message gives their size, which is kept, with
  `resident_bytes` (arguments) for the total."""
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    found = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\)", str(e))
    if "RESOURCE_EXHAUSTED" not in str(e) or not found:
      raise
    temporaries = int(float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024)
    return None, {"arguments": resident_bytes, "outputs": 0, "aliased": 0,
                  "temporaries": temporaries, "code": 0,
                  "total": resident_bytes + temporaries, "refused": str(e).strip()}, None
  return compiled, {**memory(compiled), "refused": None}, flops(compiled)


def flops(compiled) -> float:
  """FLOPs per device of one call (XLA's cost analysis of the partitioned program)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def plan_train_step(config: ml_collections.ConfigDict, mesh) -> dict:
  """Compiles the trainer's step (`experiment.Experiment.jit_train_step`) for `mesh`; its
  per-device figures."""
  exp = experiment.build(config, mesh)
  abstract, batch = exp.abstract_state, exp.abstract_batch()
  start = time.perf_counter()
  with sharding.activate(mesh):
    step = exp.jit_train_step()
    lowered = step.lower(abstract, batch)
    _, used, xla_flops = compile_for_target(lowered, sharded_bytes((abstract, batch)))
  model_flops = exp.model_flops() / mesh.size
  return {"params": sharded_bytes(abstract.params),
          "optimizer_state": sharded_bytes(abstract.opt_state),
          "batch": sharded_bytes(batch), **used, "flops": xla_flops,
          "model_flops": model_flops,
          "compile_seconds": time.perf_counter() - start, "num_params": exp.num_params}


def plan_eval_step(config: ml_collections.ConfigDict, devices) -> dict | None:
  """Compiles the zero-shot evaluator's scoring of one image batch (encode, then log P(t|I) of a
  stand-in prompt set: 64 prompts sharing a 3-token template prefix, the cached scorer with the
  evaluator's `block_tokens`) on `config.eval_mesh`. None when no zero-shot evaluator of a
  captioning family is configured."""
  name = next((n for n, e in config.evals.items() if e.type == "zeroshot"), None)
  model = models.build(config.model)
  if name is None or not models.supplies(model.predict_fns, models.CACHE_FNS):
    return None
  eval_config = config.evals[name]
  mesh = sharding.make_mesh(config.eval_mesh, devices)
  abstract, _ = train_state.abstract_params_and_shardings(model.init_params, mesh)
  images = min(eval_config.batch_size, 64 * sharding.batch_axis_size(mesh))
  images -= images % sharding.batch_axis_size(mesh)
  length = min(config.model.max_text_len, 12)
  prompts_PxT = np.zeros((64, config.model.max_text_len), np.int32)
  prompts_PxT[:, 0], prompts_PxT[:, 1:4] = 1, 7  # BOS, the template's words.
  prompts_PxT[:, 4:length - 1] = 8 + np.arange(64)[:, None] % (config.model.vocab_size - 8)
  prompts_PxT[:, length - 1] = 2  # EOS.
  scorer = prompt_scoring.PromptScorer(
      model.predict_fns, prompts_PxT, np.zeros(64, np.int32),
      images_per_device=images // sharding.batch_axis_size(mesh),
      block_tokens=int(eval_config.get("block_tokens", 4096)))
  inputs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=NamedSharding(mesh, P())),
                        scorer.inputs)
  size = config.model.image_size
  image_batch = jax.ShapeDtypeStruct((images, size, size, 3), np.float32,
                                     sharding=sharding.batch_sharding(mesh))

  def score(params, inputs, images_BxHxWxC):
    visual = model.predict_fns["encode_images"](params, images_BxHxWxC)
    return scorer.image_text_logprobs(params, visual, inputs)

  start = time.perf_counter()
  with sharding.activate(mesh):
    lowered = jax.jit(score).lower(abstract, inputs, image_batch)
    _, used, score_flops = compile_for_target(
        lowered, sharded_bytes((abstract, inputs, image_batch)))
  return {"evaluator": name, "images": images, "params": sharded_bytes(abstract), **used,
          "flops": score_flops, "compile_seconds": time.perf_counter() - start}


def plan(config: ml_collections.ConfigDict, topology: str, mfu: float = 0.4,
         with_eval: bool = True) -> dict:
  """The figures `main` prints, as a dict (bytes and FLOPs per chip, seconds)."""
  experiment.validate(config)
  chip, devices = target_devices(topology)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_divides(config.batch_size, mesh, "config.batch_size")
  result = {"topology": topology, "chip": chip.name, "chips": len(devices),
            "hbm_bytes": chip.hbm_bytes, "peak_bf16_flops": chip.peak_bf16_flops,
            "chip_source": chip.source, "mesh": dict(mesh.shape), "mfu": mfu,
            "batch_size": config.batch_size, "remat": config.model.get("remat", "none"),
            "logits_chunk": config.objective.get("logits_chunk", 0),
            "train": plan_train_step(config, mesh)}
  # The trainer's MFU counts the same model FLOPs (`step_flops.py`).
  train = result["train"]
  result["train"]["step_seconds"] = (None if train.get("refused") else
                                     train["model_flops"] / (chip.peak_bf16_flops * mfu))
  result["eval"] = plan_eval_step(config, devices) if with_eval else None
  return result


def _size(num_bytes: float) -> str:
  return f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB / 10 else f"{num_bytes / 2**20:.2f} MiB"


def _flops(figures: dict) -> str:
  return "n/a" if figures["flops"] is None else f"{figures['flops']:.3g}"


def report(result: dict) -> str:
  """The table `main` prints."""
  t, e = result["train"], result["eval"]
  mesh = " ".join(f"{k}={v}" for k, v in result["mesh"].items())
  lines = [
      f"{result['topology']}: {result['chips']} x {result['chip']}, {_size(result['hbm_bytes'])}"
      f" HBM and {result['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16 per chip "
      f"({result['chip_source']})",
      f"train: mesh {mesh}; global batch {result['batch_size']} "
      f"({result['batch_size'] // result['chips']} per chip); {t['num_params'] / 1e6:.1f}M "
      f"params; remat {result['remat']}; logits_chunk {result['logits_chunk']}; compiled in "
      f"{t['compile_seconds']:.0f} s",
      "",
      f"{'per chip':<24}{'train step':>14}{'eval scoring':>16}"]
  rows = (("params", "params"), ("optimizer state", "optimizer_state"), ("batch", "batch"),
          ("temporaries", "temporaries"), ("generated code", "code"), ("total", "total"))
  for label, key in rows:
    other = _size(e[key]) if e and key in e else ""
    lines.append(f"  {label:<22}{_size(t[key]):>14}{other:>16}")
  hbm = result["hbm_bytes"]
  lines.append(f"  {'of HBM':<22}{t['total'] / hbm:>14.0%}"
               f"{format(e['total'] / hbm, '.0%') if e else '':>16}")
  lines.append(f"  {'model FLOPs per step':<22}{t['model_flops']:>14.3g}")
  lines.append(f"  {'XLA FLOPs per step':<22}{_flops(t):>14}{_flops(e) if e else '':>16}")
  lines.append("  (model FLOPs: the step's matmuls, loops times their trips, as the trainer's MFU "
               "counts them; XLA's cost analysis counts a loop body once)")
  lines.append("")
  if t["step_seconds"] is None:
    lines.append("the TPU compiler refused the train step (temporaries above HBM): no FLOPs; "
                 "its temporaries are the compiler's figure")
  else:
    images_per_s = result["batch_size"] / t["step_seconds"]
    lines.append(f"train step time at {result['mfu']:.0%} MFU: {t['step_seconds']:.3f} s "
                 f"({images_per_s:,.0f} images/s, {images_per_s / result['chips']:,.0f} per "
                 "chip)")
  if e:
    lines.append(f"eval: '{e['evaluator']}' zero-shot, cached scoring of {e['images']} images x "
                 f"64 stand-in prompts on the eval mesh; compiled in {e['compile_seconds']:.0f} s")
  return "\n".join(lines)


def check_fits(result: dict) -> None:
  """PlanError naming the knobs when the train step needs more than a chip's HBM."""
  t, hbm = result["train"], result["hbm_bytes"]
  if t["total"] <= hbm and not t.get("refused"):
    return
  fsdp = result["mesh"]["fsdp"]
  raise PlanError(
      f"the train step needs {_size(t['total'])} per chip ({_size(t['temporaries'])} of it "
      f"temporaries) but a {result['chip']} chip has {_size(hbm)}. Knobs: lower "
      f"config.batch_size (now {result['batch_size']}); set config.model.remat='block' (now "
      f"{result['remat']!r}); set config.objective.logits_chunk, e.g. 8 (now "
      f"{result['logits_chunk']}); split params and optimizer state over more chips with "
      f"config.mesh.fsdp (now {fsdp}) or a larger --topology.")


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  topology = flags.DEFINE_string("topology", None, "Target TPU topology, e.g. v5e:4x4.")
  mfu = flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for the step time.")
  with_eval = flags.DEFINE_bool("eval", True, "Also plan the zero-shot scoring step.")
  json_path = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
  flags.mark_flags_as_required(["config", "topology"])

  def run(argv):
    del argv
    result = plan(config.value, topology.value, mfu.value, with_eval.value)
    print(report(result), flush=True)
    if json_path.value:
      paths.write_atomic(json_path.value, json.dumps(result, indent=2))
    check_fits(result)
  cli.run(run)


if __name__ == "__main__":
  main()
