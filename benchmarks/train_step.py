"""Train step time, float32 vs bfloat16 compute (bf16 inputs, f32 accumulation, f32 params and
optimizer), the IG objective vs the standard captioner, side by side in one process.

    python -m benchmarks.train_step [--batch 64]

The step is the trainer's own (`train.make_train_step`: loss, gradients, AdamW) on the small
shape of `benchmarks/shapes.py` with random tokens of the full text length.
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import measure
from benchmarks import shapes as shapes_lib
from ig_captioner import objectives
from ig_captioner import optimizer as optimizer_lib
from ig_captioner import train
from ig_captioner import train_state
from ig_captioner.data import tokenizer as tokenizer_lib


def step_and_inputs(shape, dtype: str, text_only_weight: float, batch_size: int):
  """(jitted train step, state, batch, matmul FLOPs of one step)."""
  model = shapes_lib.build(shape, dtype)
  config = ml_collections.ConfigDict(dict(
      model=dict(name="captioner", max_text_len=shape.text_len),
      objective=dict(name="captioning", text_only_weight=text_only_weight)))
  loss_fn = objectives.make_loss(config, model.predict_fns)
  opt = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1,
                                       weight_decay=1e-4, b1=0.9, b2=0.98, clip_norm=1.0))
  tx = optimizer_lib.build(opt, total_steps=100)
  params = shapes_lib.random_params(model)
  state = train_state.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  rng = np.random.default_rng(0)
  tokens = shapes_lib.random_prompts(rng, batch_size, shape)
  batch = {"image": shapes_lib.images(rng, batch_size, shape), "tokens": tokens,
           "target_mask": tokenizer_lib.scored_targets(tokens)}
  schedule = optimizer_lib.learning_rate_schedule(opt, 100)
  step = jax.jit(train.make_train_step(loss_fn, tx, schedule, seed=0))
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
  print("| objective | compute | seconds/step | x f32 | matmul GFLOP/step | GFLOP/s |")
  print("|---|---|---|---|---|---|")
  times = {}
  for weight, label in ((0.0, "standard"), (1.0, "IG (lambda 1)")):
    for dtype in ("float32", "bfloat16"):
      step, state, batch, flops = step_and_inputs(shape, dtype, weight, args.batch)
      secs = measure.seconds(step, state, batch, repeats=5)
      times[label, dtype] = secs
      print(f"| {label} | {dtype} | {secs:.3f} | {times[label, 'float32'] / secs:.2f} | "
            f"{flops / 1e9:.1f} | {flops / secs / 1e9:.0f} |")
  ratio = times["IG (lambda 1)", "float32"] / times["standard", "float32"]
  print(f"\nIG step / standard step (f32): {ratio:.2f}")


if __name__ == "__main__":
  main()
