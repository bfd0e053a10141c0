"""The main job: the IG paper's comparison at CPU scale, on the embedded digits data set. Six
models share the image tower (ViT mu/8 at 32 px), the images, the steps and the batch:

  standard captioner   family=captioner, objective.text_only_weight=0
  IG captioner         family=captioner, objective.text_only_weight=1
  CLIP                 family=clip       (two towers, softmax contrastive loss)
  SigLIP               family=siglip     (two towers, sigmoid contrastive loss)
  CoCa                 family=coca       (contrastive + captioning; 1 unimodal + 1 multimodal
                                          layer, as deep as the captioners' decoder)
  CapPa                family=cappa      (a captioner, 75% of examples predicted in parallel)

  python -m ig_captioner.tools.sweep --config=configs/demo.py --workdir=/tmp/ig_demo  # all six
  python -m ig_captioner.train --config=configs/demo.py:family=clip --workdir=/tmp/clip

Arguments (`--config=configs/demo.py:ARGS`, comma-separated):
  family=NAME  captioner (default), clip, siglip, coca or cappa.
  runlocal     seconds-long smoke-test variant (used by the tests).
  steps=N      number of train steps.

The models, data and optimizer are `recipes.digits_config` (shared with configs/prefix.py and
configs/ig_study.py); this file adds the evaluators and the sweep. `sweep(add)` lists the six
runs; `sweep_tables()` the summary the sweep prints.
"""

from ig_captioner import config_lib
from ig_captioner import recipes
from ig_captioner.evaluators import caption_generation
from ig_captioner.evaluators import retrieval


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=1200, family="captioner")
  config = recipes.digits_config(arg.family, arg.steps, arg.runlocal)
  config.evals.digits = recipes.digits_zeroshot(arg.runlocal)  # The held-out split.
  config.evals.digits_val = recipes.digits_zeroshot(  # For development.
      arg.runlocal, split="validation")
  config.evals.digits_retrieval = retrieval.default_config()  # Held out, 6 captions each.
  if arg.family in recipes.CAPTION_FAMILIES and not arg.runlocal:  # Tested apart.
    # Greedy captions of the retrieval images, plain (alpha 0) and IG-guided (alpha 1).
    config.evals.digits_captions = caption_generation.default_config(alphas=(0.0, 1.0))
  return config


def sweep(add):
  """The paper's comparison: the standard and the IG captioner, CLIP, SigLIP, CoCa, CapPa."""
  add(label="standard captioner", arg="family=captioner", **{"objective.text_only_weight": 0.0})
  add(label="IG captioner", arg="family=captioner", **{"objective.text_only_weight": 1.0})
  add(label="CLIP", arg="family=clip")
  add(label="SigLIP", arg="family=siglip")
  add(label="CoCa", arg="family=coca")
  add(label="CapPa", arg="family=cappa")


def sweep_tables():
  """What the sweep prints: [(title, {column: metric without its _alpha<a> suffix})], and the
  alphas whose rows are shown for caption scoring."""
  held_out = {"zero-shot top-1": "zeroshot/digits/acc1",
              "image->text R@1": "retrieval/digits_retrieval/i2t_r1",
              "text->image R@1": "retrieval/digits_retrieval/t2i_r1"}
  validation = {"zero-shot top-1": "zeroshot/digits_val/acc1"}
  captions = {"CIDEr-D": "captioning/digits_captions/cider_d",
              "BLEU-4": "captioning/digits_captions/bleu4"}
  return [("held-out splits `zeroshot` and `retrieval`", held_out),
          ("`validation` split (for choices)", validation),
          ("greedy captions of the `retrieval` images (x100; alpha: IG-guided decoding)",
           captions)], (0.0, 1.0)
