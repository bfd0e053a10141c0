"""Paper-scale IG captioner: ViT-B/16 at 224px, 6-layer B-width decoder, 32k SentencePiece, LAION.

  python -m ig_captioner.data.prepare --config=configs/ig_b16_laion.py   # TFDS laion400m/images
  python -m ig_captioner.train --config=configs/ig_b16_laion.py --workdir=gs://.../ig_b16
  python -m ig_captioner.train --config=configs/ig_b16_laion.py:runlocal --workdir=/tmp/x  # CPU

The data set is TFDS `laion400m/images` (image + alt-text `caption`), which you must prepare in
ArrayRecord format yourself (TFDS documents its manual download); nothing here downloads it.
The tokenizer is trained on its captions at preparation time, or set `config.data.tokenizer` to
an existing 32k SentencePiece `.model` (it must use pad=0, bos=1, eos=2).

Optimizer and schedule values are starting points, not a reproduction of a published run; scale
`total_steps` and `batch_size` to your budget. ImageNet zero-shot evaluation (class names and CLIP
prompt templates) is not wired in yet: `config.evals` is empty at this scale.

Arguments: `runlocal` (tiny model on the embedded digits data, as exercised by the tests).
"""

import ml_collections

from ig_captioner import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="laion400m/images",
      data_dir=ml_collections.FieldReference(None, field_type=str),
      train_split="train",
      image_key="image",
      text_key="caption",
      tokenizer=ml_collections.FieldReference(None, field_type=str),
      tokenizer_vocab_size=32_000,
      shuffle_seed=0,
      augment_shift=0,
      num_workers=16,
      read_threads=16,
  ))

  config.model = ml_collections.ConfigDict(dict(
      encoder="B/16",
      decoder="B",
      decoder_depth=6,
      vocab_size=32_000,
      image_size=224,
      max_text_len=64,
      dtype="bfloat16",
  ))

  config.text_only_weight = 1.0  # lambda: 1 = IG captioner, 0 = standard captioner.

  config.total_steps = 100_000
  config.batch_size = 8192
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=10_000, final_lr_fraction=0.0, weight_decay=1e-4,
      b1=0.9, b2=0.95, clip_norm=1.0))

  # FSDP over all devices: params and optimizer state are split, the batch too.
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  config.eval_mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.log_every = 100
  config.checkpoint_every = 2000
  config.keep_checkpoints = 5

  config.evals = ml_collections.ConfigDict()

  if arg.runlocal:
    config.data = config_lib.digits_data(num_train_examples=512)
    config.model.update(encoder="nano/8", decoder="nano", decoder_depth=1, vocab_size=128,
                        image_size=32, max_text_len=12, dtype="float32")
    config.total_steps = 4
    config.batch_size = 16
    config.optimizer.warmup_steps = 1
    config.log_every = 2
    config.checkpoint_every = 2
    config.evals.digits = config_lib.zeroshot_eval(batch_size=128, templates=("a handwritten {}",))
  return config


def sweep(add):
  """lambda in {0, 1}: the standard and the IG captioner on the same data."""
  add(label="standard captioner", text_only_weight=0.0)
  add(label="IG captioner", text_only_weight=1.0)
