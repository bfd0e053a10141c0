"""Zero-shot scoring speed: the cached scorer (f32, bf16) against the reference path, side by side
in one process, with this machine's matmul peak measured in the same run.

    python -m benchmarks.scoring            # both shapes, scaling and templates (~10 min)
    python -m benchmarks.scoring --quick    # the small shape only

What is timed is the evaluator's step per image batch: encode the images, then log P(t|I) of
every (image, prompt) pair (log P(t) is once per checkpoint and excluded). Pairs/s are compared
with the limit peak / minimum work, where the minimum work per pair (printed) is the matmul FLOPs
of: the decoder over every text position after BOS with causal self-attention (BOS, shared by all
prompts, once per image), the image's cross-attention keys/values and its encoder once per image
(shared by the classes). Executed FLOPs are counted from each program's jaxpr with loop bodies
times their trip counts. The paths and the 2048^3 matmuls that give the peak are timed in turn in
each of several rounds, and each path's fraction of the limit uses its own round's peak: this
machine's speed drifts by 10-20% over minutes, which a single peak at the start would not see.
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
from ig_captioner.scoring import prompt_scoring


def minimum_flops(shape: shapes_lib.Shape, num_classes: int, prefix_len: int = 1,
                  num_templates: int = 1, with_encoder: bool = True) -> float:
  """Matmul FLOPs per (image, prompt) pair: the positions after a `prefix_len` shared by a
  template's prompts (at least BOS) decoded per prompt, the prefix once per (image, template),
  the image's cross-attention keys/values and (`with_encoder`) its encoder once per image."""
  d, f, n = shape.size.width, shape.size.mlp_dim, shape.visual_tokens
  positions = shape.text_len - 1 - prefix_len
  per_position = 4 * d * d + 2 * d * d + 2 * d * f  # Self q/k/v/o, cross q/o, MLP.
  attention = 2 * d * (positions * (positions + 1) / 2 + positions * prefix_len) + 2 * d * n * (
      positions)
  decoder = shape.decoder_depth * (positions * per_position + attention) + positions * d * (
      shapes_lib.VOCAB)
  encoder = (n * shape.patch ** 2 * 3 * d +
             shape.encoder_depth * (n * (4 * d * d + 2 * d * f) + 2 * n * n * d))
  image = encoder * with_encoder + shape.decoder_depth * 2 * n * d * d
  prefix = prefix_len * (shape.decoder_depth * (per_position + d * n) + d * shapes_lib.VOCAB)
  per_image = image + num_templates * prefix
  return 2 * (decoder + per_image / (num_classes * num_templates))


def _step(model, scorer):
  fns = model.predict_fns

  def step(params, images, inputs):
    return scorer.image_text_logprobs(params, fns["encode_images"](params, images), inputs)
  return jax.jit(step)


def scoring_calls(shape, prompts, images, groups=None, methods=("cached", "bf16", "reference"),
                  block_tokens: int = 4096, encoded: bool = False) -> tuple[dict, dict]:
  """({method: (step, params, images, inputs)}, {method: executed matmul FLOPs per pair}).
  `encoded`: the step takes the images' visual tokens (encoded once here), scoring only."""
  calls, flops = {}, {}
  for method in methods:
    model = shapes_lib.build(shape, "bfloat16" if method == "bf16" else "float32")
    params = shapes_lib.random_params(model)
    scorer = prompt_scoring.PromptScorer(
        model.predict_fns, prompts, groups, "reference" if method == "reference" else "cached",
        images_per_device=len(images), block_tokens=block_tokens)
    if encoded:
      visual = jax.jit(model.predict_fns["encode_images"])(params, images)
      calls[method] = (jax.jit(scorer.image_text_logprobs), params, visual, scorer.inputs)
    else:
      calls[method] = (_step(model, scorer), params, images, scorer.inputs)
    flops[method] = measure.matmul_flops(*calls[method]) / (len(images) * len(prompts))
  return calls, flops


def _peak_calls() -> dict:
  return {"peak_f32": measure.matmul_call(jnp.float32),
          "peak_bf16": measure.matmul_call(jnp.bfloat16)}


PEAK_BEST_OF = {"peak_f32": 5, "peak_bf16": 5}  # A round's peak: the fastest of 5 matmuls.
# A call right after the reference path (which frees ~2 GB of temporaries as it ends) ran up to
# 20% slower: timed calls are 1 s apart, and in each round the reference is followed by the
# peak matmuls (best of 5, so their first call's slowdown is dropped), not by a path.
SETTLE_S = 1.0


def _report_shape(shape, rng, num_classes=100, num_images=32, rounds=4) -> dict:
  """Every path and the matmul peaks, timed in turn in each round; a path's fraction of the
  limit is taken against the peak of its own round, then the median over rounds."""
  prompts = shapes_lib.random_prompts(rng, num_classes, shape)
  images = shapes_lib.images(rng, num_images, shape)
  pairs = num_classes * num_images
  needed = minimum_flops(shape, num_classes)
  calls, flops = scoring_calls(shape, prompts, images)
  times = measure.interleaved_seconds({**calls, **_peak_calls()}, rounds, PEAK_BEST_OF,
                                     SETTLE_S)
  peaks = {k: measure.matmul_call_flops() / np.asarray(times[f"peak_{k}"]) for k in ("f32",
                                                                                     "bf16")}
  print(f"\n## shape {shape.name}: {num_classes} random prompts of {shape.text_len} tokens x "
        f"{num_images} images; minimum work {needed / 1e6:.1f} MFLOP/pair; {rounds} rounds, "
        f"matmul peak per round (best of 5) {_spread(peaks['f32'] / 1e9)} GFLOP/s f32, "
        f"{_spread(peaks['bf16'] / 1e9)} bf16 inputs; limit (median peak / minimum work) "
        f"{np.median(peaks['f32']) / needed:,.0f} pairs/s (f32), "
        f"{np.median(peaks['bf16']) / needed:,.0f} (bf16)")
  print("| path | pairs/s | x reference | executed MFLOP/pair | fraction of limit (rounds) |")
  print("|---|---|---|---|---|")
  rows = {}
  for method in calls:
    secs = np.asarray(times[method])
    fraction = pairs / secs / (peaks["bf16" if method == "bf16" else "f32"] / needed)
    speedup = np.asarray(times["reference"]) / secs
    rows[method] = {"pairs_per_s": float(pairs / np.median(secs)),
                    "x_reference": float(np.median(speedup)),
                    "mflop_per_pair": flops[method] / 1e6,
                    "fraction_of_limit": float(np.median(fraction)),
                    "fraction_per_round": fraction.tolist()}
    print(f"| {method} | {rows[method]['pairs_per_s']:,.0f} | {np.median(speedup):.2f} | "
          f"{flops[method] / 1e6:.1f} | {np.median(fraction):.0%} ({_spread(100 * fraction)}%) |")
  return {"minimum_mflop_per_pair": needed / 1e6,
          "peaks_gflops": {k: (v / 1e9).tolist() for k, v in peaks.items()}, "paths": rows}


def _spread(values) -> str:
  return f"{np.min(values):.0f}-{np.max(values):.0f}"


def _report_scaling(shape, rng, rounds=4) -> dict:
  """Cached f32 time vs classes (32 images) and vs images (100 classes), all timed in turn in
  each round: the evaluator's step (encoder included) and the scoring alone (visual tokens
  given)."""
  print(f"\n## cost vs classes and images (shape {shape.name}, cached f32, median of {rounds} "
        "rounds)")
  print("| classes | images | seconds | scoring alone (no encoder) | pairs/s |")
  print("|---|---|---|---|---|")
  cases = ((10, 32), (100, 32), (1000, 32), (100, 8), (100, 128))
  calls = {}
  for case in cases:
    prompts = shapes_lib.random_prompts(rng, case[0], shape)
    images = shapes_lib.images(rng, case[1], shape)
    calls[case] = scoring_calls(shape, prompts, images, methods=("cached",))[0]["cached"]
    calls[("scoring",) + case] = scoring_calls(shape, prompts, images, methods=("cached",),
                                               encoded=True)[0]["cached"]
  timed = measure.interleaved_seconds(calls, rounds, settle_s=SETTLE_S)
  times = {k: float(np.median(v)) for k, v in timed.items()}
  out = []
  for case in cases:
    secs, scoring = times[case], times[("scoring",) + case]
    out.append({"classes": case[0], "images": case[1], "seconds": secs,
                "scoring_seconds": scoring})
    print(f"| {case[0]} | {case[1]} | {secs:.3f} | {scoring:.3f} | "
          f"{case[0] * case[1] / secs:,.0f} |")
  by = {(r["classes"], r["images"]): r["seconds"] for r in out}
  alone = {(r["classes"], r["images"]): r["scoring_seconds"] for r in out}
  floors = {enc: 10 * minimum_flops(shape, 10, with_encoder=enc) / (
      100 * minimum_flops(shape, 100, with_encoder=enc)) for enc in (True, False)}
  ratios = {"with_encoder": by[10, 32] / by[100, 32],
            "scoring_alone": alone[10, 32] / alone[100, 32]}
  print(f"10 classes cost {ratios['with_encoder']:.1%} of 100 (minimum work {floors[True]:.1%}: "
        f"the encoder runs once per image whatever the classes); the scoring alone "
        f"{ratios['scoring_alone']:.1%} (minimum work {floors[False]:.1%}); 1000 classes "
        f"{by[1000, 32] / by[100, 32]:.2f}x; 128 images {by[100, 128] / by[100, 32]:.2f}x of 32")
  return {"rows": out, "ratio_10_vs_100": ratios,
          "minimum_work_10_vs_100": {"with_encoder": floors[True], "scoring_alone": floors[False]}}


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
  paths = {name: scoring_calls(shape, prompts, images, groups, methods=("cached", "reference"))[0]
           for name, prompts in (("clip_templates", real), ("random", random))}
  calls = {f"{name}/{method}": paths[name][method] for method in ("cached", "reference")
           for name in paths}
  # The references are followed by a peak matmul, not by a path (see SETTLE_S).
  times = measure.interleaved_seconds({**calls, **_peak_calls()}, 3, PEAK_BEST_OF, SETTLE_S)
  out = {}
  for key in calls:
    secs = times[key]
    out[key] = len(real) * num_images / float(np.median(secs))
    print(f"| {key.split('/')[0]} | {key.split('/')[1]} | {out[key]:,.0f} |")
  gain = out["clip_templates/cached"] / out["random/cached"]
  print(f"shared template prefixes: cached {gain:.2f}x the pairs/s on random prompts")
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="the small shape only")
  parser.add_argument("--json", help="also write the figures here")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  report = {}
  names = ("small",) if args.quick else ("small", "large")
  for name in names:
    report[name] = _report_shape(shapes_lib.SHAPES[name], rng)
  if not args.quick:
    report["scaling"] = _report_scaling(shapes_lib.SHAPES["small"], rng)
    report["templates"] = _report_templates(shapes_lib.SHAPES["small"], rng)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
