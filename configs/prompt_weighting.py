"""Prompt ensembles on the embedded digits: CLIP and the standard and IG captioners (the main
job's runs), each trained with 3 seeds, scored on the held-out split with the templates'
equal-weight average, their log-mean-exp, ZPE weights (from the unlabelled test images and a
sample of the training images) and per-class descriptions (`digits_descriptions.json`), at
alpha 0 and 1 for the captioners.

    python -m ig_captioner.tools.sweep --config=configs/prompt_weighting.py --workdir=DIR

Arguments (`--config=configs/prompt_weighting.py:ARGS`): family=NAME, steps=N (default the
main job's 1200), runlocal (the tests' seconds-long variant).
"""

from ig_captioner import config_lib
from ig_captioner import recipes

SEEDS = (0, 1, 2)
WEIGHTINGS = ("equal", "logmeanexp", "zpe")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=1200, family="captioner")
  config = recipes.digits_config(arg.family, arg.steps, arg.runlocal)
  config.evals.digits = recipes.digits_zeroshot(arg.runlocal, weightings=WEIGHTINGS,
                                                alphas=(0.0, 1.0), zpe_images=512)
  config.evals.digits_descriptions = recipes.digits_zeroshot(
      arg.runlocal, descriptions="digits_descriptions.json", alphas=(0.0, 1.0))
  return config


def sweep(add):
  add(label="standard captioner", arg="family=captioner", seeds=SEEDS,
      **{"objective.text_only_weight": 0.0})
  add(label="IG captioner", arg="family=captioner", seeds=SEEDS,
      **{"objective.text_only_weight": 1.0})
  add(label="CLIP", arg="family=clip", seeds=SEEDS)


def sweep_tables():
  """Held-out zero-shot top-1 per prompt ensemble (captioners: a row per alpha)."""
  columns = {"templates, equal weights": "zeroshot/digits/acc1",
             "log-mean-exp": "zeroshot/digits/logmeanexp/acc1",
             "ZPE": "zeroshot/digits/zpe/acc1",
             "descriptions": "zeroshot/digits_descriptions/descriptions/acc1"}
  return [("held-out zero-shot top-1 by prompt ensemble", columns)], (0.0, 1.0)
