"""Locked-image tuning (LiT) of an IG captioner: the image tower of a converted CLIP, frozen, and a
new text decoder trained with the IG objective (lambda 1) on the embedded digits.

  python -m ig_captioner.convert --source=open_clip --model=ViT-B-32 \\
      --weights=open_clip_model.safetensors --workdir=/runs/clip_b32
  python -m ig_captioner.train --config=configs/lit_captioner.py:init_from=/runs/clip_b32 \\
      --workdir=/runs/lit

The encoder takes the converted tower's architecture (size, patch, image size, class token,
ln_pre, activation, layer-norm epsilon, image statistics) from its config.json and its params
through `config.init_from` (renamed image_tower -> encoder); `config.frozen` keeps them fixed.
At 224 px a ViT-B tower makes each step far slower than the demo's on a CPU.

Arguments (comma-separated): init_from=DIR (the converted run; required but for runlocal, which
without it starts a tower of the same kind from scratch), runlocal, steps=N.
"""

from ig_captioner import config_lib
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import recipes
from ig_captioner.evaluators import retrieval

NEEDS_ARG = "init_from"  # Every variant but runlocal (tests/unit/test_configs.py checks).
# What the captioner's encoder takes from the converted two-tower model's config.
TOWER_FIELDS = ("encoder", "image_size", "class_token", "ln_pre", "patch_bias", "activation",
                "ln_eps", "image_mean", "image_std")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=1200, init_from="")
  config = recipes.digits_config("captioner", arg.steps, arg.runlocal)
  config.evals.digits = recipes.digits_zeroshot(arg.runlocal)
  config.evals.digits_retrieval = retrieval.default_config()
  if arg.init_from:
    tower = experiment.read_config(arg.init_from).model
    for field in TOWER_FIELDS:
      if field in tower:
        config.model[field] = tower[field]
    config.init_from = dict(workdir=arg.init_from, step=None, rename={"encoder": "image_tower"})
  elif not arg.runlocal:
    raise errors.ConfigError("configs/lit_captioner.py needs init_from=DIR, a run converted by "
                             "python -m ig_captioner.convert (or a trained two-tower run)")
  else:  # A CLIP-style tower from scratch, for the tests' runlocal of every config.
    config.model.update(class_token=True, ln_pre=True, patch_bias=False, activation="quick_gelu",
                        ln_eps=1e-5)
  config.frozen = "^encoder/"
  return config
