"""The IG-objective study: when does training with lambda * CE(t | no image) help zero-shot
classification, and which variant of it is robust? Captioners only, on the embedded digits data.

  bash launch/ig_study.sh [WORKDIR]     # the whole study (docs/ig_study.md)

Grid (`sweep(add)`), every point with 3 training seeds:
- lambda (objective.text_only_weight) in LAMBDAS, for the caption regimes of REGIMES with the
  `mu` decoder (`steep`: STEEP_LAMBDAS only), and for the `noisy` regime with the smaller `nano`
  decoder as well;
- the variants of VARIANTS (objectives/captioning.py), at lambda = 1, `noisy` regime, `mu`.
Each run is scored for every alpha of ALPHAS from the same passes, on the validation split
(for choices) and the held-out split; the study's report (`ig_captioner.tools.study_report`) picks
alpha on validation only, prints the tables and saves `accuracy_vs_alpha.png` and
`diagnostics_over_steps.png` under the workdir. Every kept checkpoint is evaluated, with
the held-out diagnostics of `evaluators/caption_diagnostics.py`.

Arguments (`--config=configs/ig_study.py:ARGS`, comma-separated):
  regime=NAME   balanced, mild, steep or noisy (REGIMES).
  decoder=SIZE  the text decoder's size (models/layers.py SIZES), default mu.
  steps=N       train steps (default 800; the main job trains 1200).
  runlocal      seconds-long smoke-test variant (used by the tests).
"""

from ig_captioner import config_lib
from ig_captioner import errors
from ig_captioner import recipes
from ig_captioner.data import digits_captions
from ig_captioner.evaluators import caption_diagnostics
from ig_captioner.tools import study_report

# Caption regimes: (Zipf exponent of concept frequency, share of captions naming a popular
# concept instead of the image's). `noisy` is the main job's (configs/demo.py); `steep` is it
# without the noise, run at the ends of the lambda grid only (STEEP_LAMBDAS).
REGIMES = {"balanced": (0.0, 0.0), "mild": (1.0, 0.0), "noisy": (2.0, 0.5),
           "steep": (2.0, 0.0)}
LAMBDAS = (0.0, 0.1, 0.3, 1.0)
STEEP_LAMBDAS = (0.0, 1.0)
SEEDS = (0, 1, 2)
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SMALL_DECODER = "nano"
# Variants of the text-only term (config overrides), compared at lambda = 1.
VARIANTS = {
    "fraction=0.25": {"objective.text_only_fraction": 0.25},
    "separate batch": {"objective.text_only_batch": "separate",
                       "data.text_only_split": "train"},
    "warm-up": {"objective.text_only_warmup_steps": 400},  # Half of the 800 steps.
    "head only": {"objective.text_only_trainable": "decoder/(ln_final|head)"},
}
VAL_METRIC = "zeroshot/digits_val/acc1"
TEST_METRIC = "zeroshot/digits/acc1"


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=800, regime="noisy", decoder="mu")
  if arg.regime not in REGIMES:
    raise errors.ConfigError(f"config argument regime={arg.regime!r} is unknown; known: "
                             f"{list(REGIMES)}")
  # The main job's captioner: its runlocal variant has a nano decoder whatever `decoder` says.
  config = recipes.digits_config("captioner", arg.steps, arg.runlocal)
  config.data.prior_exponent, config.data.caption_noise = REGIMES[arg.regime]
  if not arg.runlocal:
    config.model.decoder = arg.decoder
  config.checkpoint_every = max(arg.steps // 2, 1)  # Diagnostics at mid-training and the end.
  config.keep_checkpoints = None  # Every checkpoint is evaluated: the diagnostics' curve.

  config.evals.digits = recipes.digits_zeroshot(arg.runlocal, alphas=ALPHAS)  # Held out.
  config.evals.digits_val = recipes.digits_zeroshot(arg.runlocal, split="validation",
                                                    alphas=ALPHAS)
  config.evals.diagnostics = caption_diagnostics.default_config(
      prior_templates=digits_captions.CAPTION_TEMPLATES)  # On the validation split.

  if arg.runlocal:
    config.total_steps = 4
    config.checkpoint_every = 2
    config.evals.diagnostics.max_captions = 2
  return config


EVALUATE_EVERY_CHECKPOINT = True


def label(regime: str, decoder: str, variant: str, lam: float) -> str:
  """A run's label, as `study_report.parse_label` reads it back."""
  return f"{regime}, {decoder}, {variant}, lambda={lam:g}"


def sweep(add):
  """The main regime (`noisy`) first, then its variants and the small decoder, then the other
  regimes: an interrupted study has its most informative points first."""
  def grid(regime, decoder="mu"):
    arg = f"regime={regime}" + ("" if decoder == "mu" else f",decoder={decoder}")
    for lam in STEEP_LAMBDAS if regime == "steep" else LAMBDAS:
      add(label=label(regime, decoder, "paper", lam), arg=arg, seeds=SEEDS,
          **{"objective.text_only_weight": lam})

  grid("noisy")
  for variant, overrides in VARIANTS.items():
    add(label=label("noisy", "mu", variant, 1.0), arg="regime=noisy", seeds=SEEDS,
        **{"objective.text_only_weight": 1.0, **overrides})
  grid("noisy", SMALL_DECODER)
  for regime in REGIMES:
    if regime != "noisy":
      grid(regime)


def sweep_tables():
  return [("held-out zero-shot top-1", {"top-1": TEST_METRIC}),
          ("`validation` split (for choices)", {"top-1": VAL_METRIC})], (0.0, 1.0)


def sweep_report(results, workdir, runs):
  return study_report.report(results, workdir, runs, alphas=ALPHAS,
                             val_metric=VAL_METRIC, test_metric=TEST_METRIC,
                             diagnostics="diagnostics/diagnostics")
