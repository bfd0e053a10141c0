"""Caption generation speed: KV-cache decoding against full recomputation (the decoder over the
whole text at every step), greedy and beam search, side by side in one process.

    python -m benchmarks.decoding [--images 32]

Shape: the small shape of `benchmarks/shapes.py` (16 text tokens: 15 generated after BOS).
Tokens/s counts generated tokens (images x beams x steps), whatever the hypotheses produced.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import measure
from benchmarks import shapes as shapes_lib
from ig_captioner.scoring import generation


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=32)
  args = parser.parse_args()
  shape = shapes_lib.SHAPES["small"]
  peak = measure.matmul_peak(jnp.float32)
  print(f"matmul peak (2048^3, this run): {peak / 1e9:.0f} GFLOP/s f32")
  model = shapes_lib.build(shape)
  params = shapes_lib.random_params(model)
  fns = model.predict_fns
  visual = jax.jit(fns["encode_images"])(params, shapes_lib.images(np.random.default_rng(0),
                                                                   args.images, shape))
  steps = shape.text_len - 1
  print(f"\n## decoding {steps} tokens for {args.images} images, shape {shape.name}, f32")
  print("| search | cache | tokens/s | x full recomputation | matmul MFLOP/token |")
  print("|---|---|---|---|---|")
  for beam in (1, 4):
    rates = {}
    for full in (True, False):
      config = generation.DecodeConfig(max_tokens=steps, beam_size=beam, full_recompute=full)
      run = jax.jit(functools.partial(generation.generate, fns, config=config,
                                      text_len=shape.text_len))
      tokens = args.images * beam * steps
      rates[full] = tokens / measure.seconds(run, params, visual)
      flops = measure.matmul_flops(run, params, visual) / tokens
      print(f"| {'greedy' if beam == 1 else f'beam {beam}'} | {'no' if full else 'KV cache'} | "
            f"{rates[full]:,.0f} | {rates[full] / rates[True]:.1f} | {flops / 1e6:.1f} |")


if __name__ == "__main__":
  main()
