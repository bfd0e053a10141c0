"""Paper scale: ViT-B/16 at 224 px, 32k SentencePiece, LAION; the IG captioner (6-layer B-width
decoder) or, with `family=clip|siglip`, a two-tower model with the same image tower and CLIP's
B/16 text tower (width 512, 12 layers, 8 heads; 512-d joint space); `family=coca` splits the
6-layer decoder into 3 unimodal and 3 multimodal layers; `family=cappa` is the captioner trained
with parallel prediction. CoCa and CapPa train with their papers' losses; `family=coca,ig` and
`family=cappa,ig` add the IG term (lambda 1), IG variants of those baselines.

  S='--config.data.shards=gs://my-bucket/laion400m/{00000..41407}.parquet'
  T='--config.data.tokenizer=gs://my-bucket/laion400m/tokenizer.model'
  python -m ig_captioner.data.prepare --config=configs/ig_b16_laion.py "$S" "$T"  # tokenizer
  python -m ig_captioner.train --config=configs/ig_b16_laion.py "$S" "$T" --workdir=/data/ig_b16
  python -m ig_captioner.train --config=configs/ig_b16_laion.py:runlocal --workdir=/tmp/x  # CPU

The data are LAION-400M as img2dataset downloads it (`--output_format parquet`: shards of
`url`, `caption`, `jpg`), read as they are by `ig_captioner/data/web_shards.py`: corrupt images
and empty captions are skipped and counted, shards are split over the processes. Nothing here
downloads them; `config.data.shards` (no default) names yours: paths, globs or `{a..b}` ranges.
`prepare` only trains the 32k tokenizer on the first shards' captions and writes it to
`config.data.tokenizer` (skipped if that file exists: an existing SentencePiece `.model` with
pad=0, bos=1, eos=2 works too). For random access instead, `shards_to_array_record` converts
the shards to ArrayRecord files.

The evaluator reports ImageNet zero-shot top-1 (OpenAI's class names, CLIP's 80 templates,
streamed) and COCO retrieval (Karpathy test split, all captions), from TFDS data under
`config.data.data_dir`; `prepare` builds them too, `imagenet2012` from the ILSVRC2012 tars in
`--config.evals.imagenet.data.manual_dir` (see `ig_captioner/evaluators/catalog.py`).

Optimizer and schedule values are starting points, not a reproduction of a published run; scale
`total_steps` and `batch_size` to your budget.

Arguments: `family=captioner|clip|siglip|coca|cappa` (default captioner: the IG captioner,
lambda 1); `ig` (coca, cappa: the IG term, lambda 1); `runlocal` (tiny model on the embedded
digits data, as exercised by the tests).
"""

import ml_collections

from ig_captioner import config_lib
from ig_captioner import errors
from ig_captioner import recipes
from ig_captioner.data import presets
from ig_captioner.evaluators import catalog
from ig_captioner.evaluators import zeroshot


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, family="captioner", ig=False)
  recipes.check_family(arg.family)
  if arg.ig and arg.family not in ("coca", "cappa"):
    raise errors.ConfigError(f"config argument ig is for family=coca or cappa (their IG "
                             f"variants); family={arg.family} "
                             + ("is the IG captioner already" if arg.family == "captioner"
                                else "has no decoder"))
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="web_shards",
      # img2dataset's shards, parquet or webdataset tars, e.g.
      # 'gs://my-bucket/laion400m/{00000..41407}.tar'.
      shards=ml_collections.FieldReference(None, field_type=str),
      # None: img2dataset's ('jpg' and 'caption' columns; tar members '.jpg' and '.txt').
      image_column=ml_collections.FieldReference(None, field_type=str),
      text_column=ml_collections.FieldReference(None, field_type=str),
      # A curation's keep_list.tsv (python -m ig_captioner.data.curate): only its pairs read.
      keep_list=ml_collections.FieldReference(None, field_type=str),
      cycle_length=16,  # Shards read at once.
      shuffle_window=1024,  # Examples shuffled in windows of this many (decoded, 224 px).
      # TFDS data of the evaluators (ImageNet, COCO).
      data_dir=ml_collections.FieldReference(None, field_type=str),
      tokenizer=ml_collections.FieldReference(None, field_type=str),  # Trained by `prepare`.
      tokenizer_vocab_size=32_000,
      tokenizer_sample=2_000_000,  # Captions of the first shards it is trained on.
      shuffle_seed=0,
      augment_shift=0,
      num_workers=16,
      read_threads=0,  # Unused by web shards: each shard of the cycle has its reader thread.
  ))

  config.model = ml_collections.ConfigDict(dict(
      encoder="B/16", vocab_size=32_000, image_size=224, max_text_len=64, dtype="bfloat16"))
  # The IG captioner (lambda 1); CoCa and CapPa with their papers' losses unless `ig`.
  config.objective = recipes.objective(arg.family, text_only_weight=1.0 if arg.ig else None,
                                       logits_chunk=0)
  if arg.family in ("captioner", "cappa"):
    # remat='block' recomputes each block in the backward pass (less memory, more compute).
    config.model.update(name="captioner", decoder="B", decoder_depth=6, remat="none")
  elif arg.family == "coca":
    config.model.update(name="coca", decoder="B", unimodal_depth=3, multimodal_depth=3,
                        embed_dim=512, temperature_init=1 / 0.07)
  else:
    config.model.update(name="two_towers", text_encoder="M", text_depth=12, embed_dim=512,
                        **recipes.contrastive_head(arg.family))

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

  config.evals = ml_collections.ConfigDict(dict(
      imagenet=catalog.imagenet_zeroshot(
          manual_dir=ml_collections.FieldReference(None, field_type=str), batch_size=1024),
      coco=catalog.coco_retrieval(batch_size=1024)))

  if arg.runlocal:
    config.evals = ml_collections.ConfigDict()
    config.data = presets.digits(num_train_examples=512)
    config.model.update(encoder="nano/8", vocab_size=128, image_size=32, max_text_len=12,
                        dtype="float32")
    if arg.family in ("captioner", "cappa"):
      config.model.update(decoder="nano", decoder_depth=1)
    elif arg.family == "coca":
      config.model.update(decoder="nano", unimodal_depth=1, multimodal_depth=1, embed_dim=32)
    else:
      config.model.update(text_encoder="nano", text_depth=1, embed_dim=32)
    config.total_steps = 4
    config.batch_size = 16
    config.optimizer.warmup_steps = 1
    config.log_every = 2
    config.checkpoint_every = 2
    config.evals.digits = zeroshot.default_config(batch_size=128, templates=("a handwritten {}",))
  return config


def sweep(add):
  """lambda in {0, 1}: the standard and the IG captioner on the same data."""
  add(label="standard captioner", **{"objective.text_only_weight": 0.0})
  add(label="IG captioner", **{"objective.text_only_weight": 1.0})
