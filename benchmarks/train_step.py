"""Train step time, float32 vs bfloat16 compute (bf16 inputs, f32 accumulation, f32 params and
optimizer), the IG objective vs the standard captioner, side by side in one process, with the
model FLOPs of a step (`ig_captioner/step_flops.py`, the trainer's MFU count) and their rate as a
fraction of this machine's matmul peak in the same dtype, measured in the same run.

    python -m benchmarks.train_step [--batch 64]

The step is the trainer's own (`experiment.build(...).jit_train_step()`: loss, gradients, AdamW,
on a one-device mesh) on the small shape of `benchmarks/shapes.py` with random tokens of the
full text length.
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import measure
from benchmarks import shapes as shapes_lib
from ig_captioner import experiment
from ig_captioner import sharding
from ig_captioner import token_ids
from ig_captioner import train_state


def step_and_inputs(shape, dtype: str, text_only_weight: float, batch_size: int, mesh):
  """(jitted train step, state, batch, matmul FLOPs of one step)."""
  config = ml_collections.ConfigDict(dict(
      seed=0, total_steps=100, batch_size=batch_size,
      model=shapes_lib.model_config(shape, dtype),
      objective=dict(name="captioning", text_only_weight=text_only_weight),
      optimizer=dict(learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1,
                     weight_decay=1e-4, b1=0.9, b2=0.98, clip_norm=1.0)))
  exp = experiment.build(config, mesh)
  params = shapes_lib.random_params(exp.model)
  state = train_state.TrainState(jnp.zeros((), jnp.int32), params, exp.tx.init(params))
  rng = np.random.default_rng(0)
  tokens = shapes_lib.random_prompts(rng, batch_size, shape)
  batch = {"image": shapes_lib.images(rng, batch_size, shape), "tokens": tokens,
           "target_mask": token_ids.scored_targets(tokens)}
  step = exp.jit_train_step(donate=False)  # The same state is timed again and again.
  return step, state, batch, measure.matmul_flops(step, state, batch)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  args = parser.parse_args()
  shape = shapes_lib.SHAPES["small"]
  peaks = {"float32": measure.matmul_peak(jnp.float32),
           "bfloat16": measure.matmul_peak(jnp.bfloat16)}
  print(f"matmul peak (2048^3, this run): {peaks['float32'] / 1e9:.0f} GFLOP/s f32, "
        f"{peaks['bfloat16'] / 1e9:.0f} GFLOP/s bf16 inputs with f32 accumulation")
  print(f"\n## train step, shape {shape.name}, batch {args.batch}")
  print("| objective | compute | seconds/step | x f32 | model GFLOP/step | GFLOP/s | of peak |")
  print("|---|---|---|---|---|---|---|")
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                            devices=jax.devices()[:1])
  times = {}
  for weight, label in ((0.0, "standard"), (1.0, "IG (lambda 1)")):
    for dtype in ("float32", "bfloat16"):
      # Built outside the mesh context (flax unboxes the abstract state there), run inside.
      step, state, batch, flops = step_and_inputs(shape, dtype, weight, args.batch, mesh)
      with sharding.activate(mesh):
        secs = measure.seconds(step, state, batch, repeats=5)
      times[label, dtype] = secs
      print(f"| {label} | {dtype} | {secs:.3f} | {times[label, 'float32'] / secs:.2f} | "
            f"{flops / 1e9:.1f} | {flops / secs / 1e9:.0f} | {flops / secs / peaks[dtype]:.0%} |")
  ratio = times["IG (lambda 1)", "float32"] / times["standard", "float32"]
  print(f"\nIG step / standard step (f32): {ratio:.2f}")


if __name__ == "__main__":
  main()
