"""Prefix conditioning (Saito et al., *Prefix Conditioning Unifies Language and Label Supervision*,
CVPR 2023) on the embedded data. Two train sources, mixed half and half:

  captions  the demo's caption data: digits with long-tailed, noisy captions;
  labels    classification data: the training-pool digits in another style (inverted: a dark
            digit on a light ground), their labels made into texts through templates.

Trained without prefixes, or with a learned dataset-type prefix token per source (`<caption>`,
`<classification>`), then tested with each prefix on the held-out `zeroshot` split (the caption
data's style) and on `zeroshot_inverted` (the same images in the classification data's style).

  bash launch/prefix_study.sh [WORKDIR]   # the sweep below: CLIP and the IG captioner, +- prefixes

Arguments (`--config=configs/prefix.py:ARGS`): family=clip (default) or any of configs/demo.py's;
prefix (train with the prefix tokens); runlocal; steps=N. Everything else is the main job's
(`recipes.digits_config`, as configs/demo.py).
"""

import ml_collections

from ig_captioner import config_lib
from ig_captioner import recipes

# Label texts in a phrasing of their own (the caption data says "a handwritten seven", ...).
LABEL_TEMPLATES = ("a photo of the number {}", "the number {}", "a picture of a {}")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=1200, family="clip", prefix=False)
  config = recipes.digits_config(arg.family, arg.steps, arg.runlocal)
  config.data.mixture = ml_collections.ConfigDict({
      "captions": dict(split="train", weight=0.5, kind="caption",
                       prefix="caption" if arg.prefix else None),
      "labels": dict(split="classification", weight=0.5, kind="classification",
                     prefix="classification" if arg.prefix else None,
                     templates=LABEL_TEMPLATES, label_key="label"),
  })
  prefixes = (None, "caption", "classification") if arg.prefix else (None,)
  config.evals.digits = recipes.digits_zeroshot(arg.runlocal, prefixes=prefixes,
                                                alphas=(0.0, 1.0))
  config.evals.digits_inverted = recipes.digits_zeroshot(
      arg.runlocal, split="zeroshot_inverted", prefixes=prefixes, alphas=(0.0, 1.0))
  return config


def sweep(add):
  """CLIP and the IG captioner, each trained without and with prefix conditioning."""
  add(label="CLIP", arg="family=clip")
  add(label="CLIP + prefixes", arg="family=clip,prefix")
  add(label="IG captioner", arg="family=captioner")
  add(label="IG captioner + prefixes", arg="family=captioner,prefix")


def sweep_tables():
  """Zero-shot top-1 per test prefix, on each style."""
  def columns(name):
    return {f"{prefix or 'no'} prefix": f"zeroshot/{name}" +
            (f"/{prefix}_prefix" if prefix else "") + "/acc1"
            for prefix in (None, "caption", "classification")}
  return [("held-out `zeroshot` (caption style)", columns("digits")),
          ("held-out `zeroshot_inverted` (classification style)", columns("digits_inverted"))], (
              0.0, 1.0)
