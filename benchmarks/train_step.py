"""Train step time, float32 vs bfloat16 compute (bf16 inputs, f32 accumulation, f32 params and
optimizer), the IG objective vs the standard captioner, and optionally big_vision's CapPa step on
the same shape, side by side in one process, with the model FLOPs of a step
(`ig_captioner/step_flops.py`, the trainer's MFU count), their rate as a fraction of this
machine's matmul peak in the same dtype, and the step's matmul floor (`matmul_floor.py`: its own
matmuls run alone, every other operation left out), which bounds that fraction on this machine.
The standard step's loss forward and loss gradient (no optimizer) are timed too, to show which
part of the step is far from its floor.

    python -m benchmarks.train_step [--batch 64] [--rounds 5] [--big_vision PATH]

The step is the trainer's own (`experiment.build(...).jit_train_step()`: loss, gradients, AdamW,
on a one-device mesh) on the small shape of `benchmarks/shapes.py` with random tokens of the
full text length. Every step and the peak matmuls are timed in turn in each round (the
machine's speed drifts by 10-20% over minutes); a step's fraction of the peak is taken against
its own round's peak, and the table gives the median over rounds.
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import matmul_floor
from benchmarks import measure
from benchmarks import shapes as shapes_lib
from ig_captioner import experiment
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner import train_state

PEAK_BEST_OF = {"peak_float32": 5, "peak_bfloat16": 5}  # A round's peak: its fastest of 5.


def _experiment(shape, dtype: str, text_only_weight: float, batch_size: int, mesh):
  config = ml_collections.ConfigDict(dict(
      seed=0, total_steps=100, batch_size=batch_size,
      model=shapes_lib.model_config(shape, dtype),
      objective=dict(name="captioning", text_only_weight=text_only_weight),
      optimizer=dict(learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1,
                     weight_decay=1e-4, b1=0.9, b2=0.98, clip_norm=1.0)))
  return experiment.build(config, mesh)


def _batch(shape, batch_size: int) -> dict:
  rng = np.random.default_rng(0)
  tokens = shapes_lib.random_prompts(rng, batch_size, shape)
  return {"image": shapes_lib.images(rng, batch_size, shape), "tokens": tokens,
          "target_mask": token_ids.scored_targets(tokens)}


def step_and_inputs(shape, dtype: str, text_only_weight: float, batch_size: int, mesh):
  """(jitted train step, state, batch, matmul FLOPs of one step)."""
  exp = _experiment(shape, dtype, text_only_weight, batch_size, mesh)
  params = shapes_lib.random_params(exp.model)
  state = train_state.TrainState(jnp.zeros((), jnp.int32), params, exp.tx.init(params))
  batch = _batch(shape, batch_size)
  step = exp.jit_train_step(donate=False)  # The same state is timed again and again.
  return step, state, batch, measure.matmul_flops(step, state, batch)


def loss_parts(shape, dtype: str, batch_size: int, mesh) -> dict:
  """{"loss forward" | "loss gradient": (jitted fn, params, batch)} of the standard step."""
  exp = _experiment(shape, dtype, 0.0, batch_size, mesh)
  params, batch = shapes_lib.random_params(exp.model), _batch(shape, batch_size)
  loss = lambda p, b: exp.loss_fn(p, b, jax.random.key(0), jnp.int32(0))[0]
  return {"loss forward": (jax.jit(loss), params, batch),
          "loss gradient": (jax.jit(jax.grad(loss)), params, batch)}


def _steps(shape, batch_size: int, big_vision: str | None, mesh) -> tuple[dict, dict]:
  """({(label, dtype): (step, state, batch)}, {(label, dtype): model FLOPs per step})."""
  calls, flops = {}, {}
  for weight, label in ((0.0, "standard"), (1.0, "IG (lambda 1)")):
    for dtype in ("float32", "bfloat16"):
      # Built outside the mesh context (flax unboxes the abstract state there), run inside.
      step, state, batch, flops[label, dtype] = step_and_inputs(shape, dtype, weight,
                                                                batch_size, mesh)
      calls[label, dtype] = (step, state, batch)
  for dtype in ("float32", "bfloat16"):  # Where the standard step's time goes.
    for label, call in loss_parts(shape, dtype, batch_size, mesh).items():
      calls[f"standard: {label}", dtype] = call
      flops[f"standard: {label}", dtype] = measure.matmul_flops(*call)
  if big_vision:
    from benchmarks import big_vision_cappa  # pylint: disable=g-import-not-at-top
    step, state, batch = big_vision_cappa.step_and_inputs(big_vision, shape, batch_size)
    calls["big_vision CapPa", "float32"] = (step, state, batch)
    flops["big_vision CapPa", "float32"] = measure.matmul_flops(step, state, batch)
  return calls, flops


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--big_vision", default=None,
                      help="a big_vision checkout's root: adds its CapPa step (f32)")
  args = parser.parse_args()
  shape = shapes_lib.SHAPES["small"]
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                            devices=jax.devices()[:1])
  calls, flops = _steps(shape, args.batch, args.big_vision, mesh)
  timed = {f"{label}/{dtype}": call for (label, dtype), call in calls.items()}
  timed.update({f"{label}/{dtype}/floor": matmul_floor.floor_call(*call)
                for (label, dtype), call in calls.items()})
  timed.update(peak_float32=measure.matmul_call(jnp.float32),
               peak_bfloat16=measure.matmul_call(jnp.bfloat16))
  with sharding.activate(mesh):
    times = {k: np.asarray(v) for k, v in
             measure.interleaved_seconds(timed, args.rounds, PEAK_BEST_OF).items()}
  peaks = {d: measure.matmul_call_flops() / times[f"peak_{d}"] for d in ("float32", "bfloat16")}
  print(f"matmul peak ({measure.PEAK_SIZE}^3, best of 5 per round, {args.rounds} rounds): "
        f"{np.median(peaks['float32']) / 1e9:.0f} GFLOP/s f32 "
        f"({peaks['float32'].min() / 1e9:.0f}-{peaks['float32'].max() / 1e9:.0f}), "
        f"{np.median(peaks['bfloat16']) / 1e9:.0f} GFLOP/s bf16 inputs with f32 accumulation")
  print(f"\n## train step, shape {shape.name}, batch {args.batch}")
  print("| step | compute | seconds/step | x f32 | model GFLOP/step | GFLOP/s | of peak | "
        "floor s | floor of peak |")
  print("|---|---|---|---|---|---|---|---|---|")
  seconds = {key: np.median(times[f"{key[0]}/{key[1]}"]) for key in calls}
  for (label, dtype), secs in seconds.items():
    fraction, floor_fraction = (np.median(flops[label, dtype] / times[name] / peaks[dtype])
                                for name in (f"{label}/{dtype}", f"{label}/{dtype}/floor"))
    print(f"| {label} | {dtype} | {secs:.3f} | {seconds[label, 'float32'] / secs:.2f} | "
          f"{flops[label, dtype] / 1e9:.1f} | {flops[label, dtype] / secs / 1e9:.0f} | "
          f"{fraction:.0%} | {np.median(times[f'{label}/{dtype}/floor']):.3f} | "
          f"{floor_fraction:.0%} |")
  ratios = times["IG (lambda 1)/float32"] / times["standard/float32"]
  print(f"\nIG step / standard step (f32), per round: {np.median(ratios):.2f} "
        f"({ratios.min():.2f}-{ratios.max():.2f})")
  if args.big_vision:
    speedup = times["big_vision CapPa/float32"] / times["standard/float32"]
    print(f"big_vision CapPa step / our standard step (f32), per round: "
          f"{np.median(speedup):.2f} ({speedup.min():.2f}-{speedup.max():.2f})")


if __name__ == "__main__":
  main()
