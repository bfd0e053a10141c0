"""What a run converted from another codebase (`python -m ig_captioner.convert`) is evaluated on,
by default: zero-shot classification and retrieval on the embedded digits (offline, seconds).
The converter replaces the model with the checkpoint's and the tokenizer with the checkpoint's
(CLIP's BPE for open_clip); everything else is this file's. The model given here (the demo's
CLIP) is only what `runlocal` trains when the tests check every config.

  python -m ig_captioner.convert --source=open_clip --model=ViT-B-32 \\
      --weights=open_clip_model.safetensors --workdir=/tmp/clip_b32 \\
      [--config=configs/converted.py:runlocal]
  python -m ig_captioner.evaluate --workdir=/tmp/clip_b32 --once

Arguments: runlocal (the evaluators' small variant).
"""

from ig_captioner import config_lib
from ig_captioner import recipes
from ig_captioner.evaluators import retrieval


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = recipes.digits_config("clip", steps=6, runlocal=arg.runlocal)  # Not for training.
  config.evals.digits = recipes.digits_zeroshot(arg.runlocal)  # The held-out split.
  config.evals.digits_retrieval = retrieval.default_config()
  return config
