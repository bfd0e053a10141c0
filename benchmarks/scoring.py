"""Zero-shot scoring speed: the cached scorer (f32, bf16) against the reference path, side by side
in one process, with this machine's matmul peak measured in the same run.

    python -m benchmarks.scoring            # both shapes, scaling and templates (~10 min)
    python -m benchmarks.scoring --quick    # the small shape only

What is timed is the evaluator's step per image batch: encode the images, then log P(t|I) of
every (image, prompt) pair (log P(t) is once per checkpoint and excluded). Pairs/s are compared
with the limit peak / minimum work, where the minimum work per pair (printed) is the matmul FLOPs
of: the decoder over every text position after BOS with causal self-attention (BOS, shared by all
prompts, once per image), the image's cross-attention keys/values and its encoder once per image
(shared by the classes). Executed FLOPs are counted
from each program's jaxpr with loop bodies times their trip counts.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import measure
from benchmarks import shapes as shapes_lib
from ig_captioner.data import imagenet_metadata
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.models import prompt_scoring


def minimum_flops(shape: shapes_lib.Shape, num_classes: int, prefix_len: int = 1,
                  num_templates: int = 1) -> float:
  """Matmul FLOPs per (image, prompt) pair: the positions after a `prefix_len` shared by a
  template's prompts (at least BOS) decoded per prompt, the prefix once per (image, template)."""
  d, f, n = shape.size.width, shape.size.mlp_dim, shape.visual_tokens
  positions = shape.text_len - 1 - prefix_len
  per_position = 4 * d * d + 2 * d * d + 2 * d * f  # Self q/k/v/o, cross q/o, MLP.
  attention = 2 * d * (positions * (positions + 1) / 2 + positions * prefix_len) + 2 * d * n * (
      positions)
  decoder = shape.decoder_depth * (positions * per_position + attention) + positions * d * (
      shapes_lib.VOCAB)
  encoder = (n * shape.patch ** 2 * 3 * d +
             shape.encoder_depth * (n * (4 * d * d + 2 * d * f) + 2 * n * n * d))
  image = encoder + shape.decoder_depth * 2 * n * d * d
  prefix = prefix_len * (shape.decoder_depth * (per_position + d * n) + d * shapes_lib.VOCAB)
  per_image = image + num_templates * prefix
  return 2 * (decoder + per_image / (num_classes * num_templates))


def _step(model, scorer):
  fns = model.predict_fns

  def step(params, images, inputs):
    return scorer.image_text_logprobs(params, fns["encode_images"](params, images), inputs)
  return jax.jit(step)


def measure_scoring(shape, prompts, images, groups=None, methods=("reference", "cached", "bf16"),
                    block_tokens: int = 2048, repeats: int = 3) -> dict:
  """{method: (seconds, executed FLOPs per pair)} for one batch of images x prompts."""
  out = {}
  for method in methods:
    model = shapes_lib.build(shape, "bfloat16" if method == "bf16" else "float32")
    params = shapes_lib.random_params(model)
    scorer = prompt_scoring.PromptScorer(
        model.predict_fns, prompts, groups, "reference" if method == "reference" else "cached",
        images_per_device=len(images), block_tokens=block_tokens)
    step = _step(model, scorer)
    pairs = len(images) * len(prompts)
    flops = measure.matmul_flops(step, params, images, scorer.inputs) / pairs
    out[method] = (measure.seconds(step, params, images, scorer.inputs, repeats=repeats), flops)
  return out


def _report_shape(shape, peaks, rng, num_classes=100, num_images=32) -> dict:
  prompts = shapes_lib.random_prompts(rng, num_classes, shape)
  images = shapes_lib.images(rng, num_images, shape)
  pairs = num_classes * num_images
  needed = minimum_flops(shape, num_classes)
  limits = {"f32": peaks["f32"] / needed, "bf16": peaks["bf16"] / needed}
  print(f"\n## shape {shape.name}: {num_classes} random prompts of {shape.text_len} tokens x "
        f"{num_images} images; minimum work {needed / 1e6:.1f} MFLOP/pair; limit "
        f"{limits['f32']:,.0f} pairs/s (f32), {limits['bf16']:,.0f} (bf16 inputs)")
  print("| path | pairs/s | x reference | executed MFLOP/pair | fraction of limit |")
  print("|---|---|---|---|---|")
  results = measure_scoring(shape, prompts, images)
  rows = {}
  for method, (secs, flops) in results.items():
    rate = pairs / secs
    limit = limits["bf16" if method == "bf16" else "f32"]
    rows[method] = {"pairs_per_s": rate, "mflop_per_pair": flops / 1e6,
                    "fraction_of_limit": rate / limit}
    print(f"| {method} | {rate:,.0f} | {rate * results['reference'][0] / pairs:.2f} | "
          f"{flops / 1e6:.1f} | {rate / limit:.0%} |")
  return {"minimum_mflop_per_pair": needed / 1e6, "limits": limits, "paths": rows}


def _report_scaling(shape, rng) -> dict:
  """Cached f32 time vs classes (32 images) and vs images (100 classes)."""
  print(f"\n## cost vs classes and images (shape {shape.name}, cached f32)")
  print("| classes | images | seconds | of which the image encoder | pairs/s |")
  print("|---|---|---|---|---|")
  out = []
  model = shapes_lib.build(shape)
  params = shapes_lib.random_params(model)
  encode = jax.jit(model.predict_fns["encode_images"])
  for num_classes, num_images in ((10, 32), (100, 32), (1000, 32), (100, 8), (100, 128)):
    prompts = shapes_lib.random_prompts(rng, num_classes, shape)
    images = shapes_lib.images(rng, num_images, shape)
    secs, _ = measure_scoring(shape, prompts, images, methods=("cached",))["cached"]
    encoder = measure.seconds(encode, params, images)
    out.append({"classes": num_classes, "images": num_images, "seconds": secs,
                "encoder_seconds": encoder})
    print(f"| {num_classes} | {num_images} | {secs:.3f} | {encoder:.3f} | "
          f"{num_classes * num_images / secs:,.0f} |")
  by = {(r["classes"], r["images"]): r["seconds"] for r in out}
  enc = {(r["classes"], r["images"]): r["encoder_seconds"] for r in out}
  print(f"10 classes cost {by[10, 32] / by[100, 32]:.1%} of 100 ("
        f"{(by[10, 32] - enc[10, 32]) / (by[100, 32] - enc[100, 32]):.1%} without the image "
        f"encoder, which every method runs once per image); 1000 classes "
        f"{by[1000, 32] / by[100, 32]:.2f}x; 128 images {by[100, 128] / by[100, 32]:.2f}x of 32")
  return {"rows": out}


def _report_templates(shape, rng, num_classes=100, num_images=32) -> dict:
  """CLIP's 7 templates on 100 ImageNet class names vs random prompts of the same lengths."""
  names = imagenet_metadata.class_names()[:num_classes]
  templates = imagenet_metadata.clip_templates(simple=True)
  corpus = [t.format(c) for c in imagenet_metadata.class_names()
            for t in imagenet_metadata.clip_templates()]
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.train(corpus, shapes_lib.VOCAB))
  texts = [t.format(c) for c in names for t in templates]
  real = tok.encode_batch(texts, shape.text_len)
  lengths = (real != 0).sum(1)
  random = shapes_lib.random_prompts(rng, len(real), shape, lengths)
  groups = np.arange(len(real)) % len(templates)
  images = shapes_lib.images(rng, num_images, shape)
  print(f"\n## CLIP's 7 templates x {num_classes} ImageNet classes vs random prompts of the same "
        f"lengths (shape {shape.name}, {num_images} images)")
  print("| prompts | path | pairs/s |")
  print("|---|---|---|")
  out = {}
  for name, prompts in (("clip_templates", real), ("random", random)):
    results = measure_scoring(shape, prompts, images, groups, methods=("reference", "cached"))
    for method, (secs, _) in results.items():
      out[f"{name}/{method}"] = len(prompts) * num_images / secs
      print(f"| {name} | {method} | {out[f'{name}/{method}']:,.0f} |")
  gain = out["clip_templates/cached"] / out["random/cached"]
  print(f"shared template prefixes: cached {gain:.2f}x the pairs/s on random prompts")
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="the small shape only")
  parser.add_argument("--json", help="also write the figures here")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  peaks = {"f32": measure.matmul_peak(jnp.float32), "bf16": measure.matmul_peak(jnp.bfloat16)}
  print(f"matmul peak (2048^3, this run): {peaks['f32'] / 1e9:.0f} GFLOP/s f32, "
        f"{peaks['bf16'] / 1e9:.0f} GFLOP/s bf16 inputs with f32 accumulation")
  report = {"peaks_gflops": {k: v / 1e9 for k, v in peaks.items()}}
  names = ("small",) if args.quick else ("small", "large")
  for name in names:
    report[name] = _report_shape(shapes_lib.SHAPES[name], peaks, rng)
  if not args.quick:
    report["scaling"] = _report_scaling(shapes_lib.SHAPES["small"], rng)
    report["templates"] = _report_templates(shapes_lib.SHAPES["small"], rng)
  peak_after = measure.matmul_peak(jnp.float32)
  print(f"\nf32 matmul peak at the end of the run: {peak_after / 1e9:.0f} GFLOP/s "
        f"({peak_after / peaks['f32']:.0%} of the start: how steady the machine was)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
