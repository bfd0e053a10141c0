"""Demo: a tiny IG captioner on the embedded digits data set, sized for a CPU (a few minutes).

  python -m ig_captioner.data.prepare --config=configs/demo.py
  python -m ig_captioner.train --config=configs/demo.py --workdir=/tmp/ig_demo/ig
  python -m ig_captioner.train --config=configs/demo.py --config.text_only_weight=0 \
      --workdir=/tmp/ig_demo/standard
  python -m ig_captioner.evaluate --config=configs/demo.py --workdir=/tmp/ig_demo/ig --once

Arguments (`--config=configs/demo.py:ARGS`):
  runlocal   seconds-long smoke-test variant (used by the tests).
  steps=N    number of train steps.

`sweep(add)` lists the runs of the lambda sweep (standard captioner vs IG captioner).
"""

import ml_collections

from ig_captioner import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, steps=1200)
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Caption data with a strong language prior, as web alt-text has: a steep long tail of
  # concepts (Zipf exponent 2) and half of the captions naming a concept drawn from that prior
  # instead of the image's. This is the regime in which IG scoring matters; README.md reports
  # milder settings too.
  config.data = config_lib.digits_data(prior_exponent=2.0, caption_noise=0.5)

  config.model = ml_collections.ConfigDict(dict(
      encoder="mu/8",  # ViT size/patch: 16 visual tokens of 8x8 pixels.
      decoder="mu",
      decoder_depth=ml_collections.FieldReference(None, field_type=int),  # None: the size's depth.
      vocab_size=128,  # >= the tokenizer's size (a multiple of the tensor axis is best).
      image_size=32,
      max_text_len=12,  # Tokens incl. BOS and EOS (the longest digits caption needs 9).
      dtype="float32",  # bf16 outputs are slower than f32 on CPUs; use bfloat16 on TPU/GPU.
  ))

  # lambda of the IG objective: loss = CE(t|I) + text_only_weight * CE(t|no image).
  config.text_only_weight = 1.0

  config.total_steps = arg.steps
  config.batch_size = 128
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=3e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=1e-4,
      b1=0.9, b2=0.98, clip_norm=1.0))

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # The evaluator's own mesh.
  config.eval_mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.log_every = 50
  config.checkpoint_every = 400
  config.keep_checkpoints = 3

  config.evals = ml_collections.ConfigDict()
  config.evals.digits = config_lib.zeroshot_eval()  # The held-out split.
  config.evals.digits_val = config_lib.zeroshot_eval(split="validation")  # For development.

  if arg.runlocal:
    config.data.num_train_examples = 512
    config.model.update(encoder="nano/8", decoder="nano")
    config.total_steps = 6
    config.batch_size = 16
    config.optimizer.warmup_steps = 2
    config.log_every = 2
    config.checkpoint_every = 3
    for ev in config.evals.values():
      ev.update(templates=("a handwritten {}", "{}"))
  return config


def sweep(add):
  """The lambda sweep: the standard captioner (0) and the IG captioner (1)."""
  add(label="standard captioner", text_only_weight=0.0)
  add(label="IG captioner", text_only_weight=1.0)
