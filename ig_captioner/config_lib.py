"""Helpers for config files: argument parsing, shared defaults, and validation of values.

Config files (`configs/*.py`) define `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/demo.py:runlocal,steps=100` and is parsed by `parse_arg`.
"""

import ml_collections

from ig_captioner.data import digits_captions


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,steps=100' -> {runlocal: True, steps: 100}, typed like `defaults`."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not sep:
      value = True
    elif isinstance(defaults[key], bool):
      value = value.lower() in ("1", "true", "yes")
    else:
      value = type(defaults[key])(value)
    parsed[key] = value
  return parsed


def digits_data(**overrides) -> ml_collections.ConfigDict:
  """`config.data` for the embedded `digits_captions` data set."""
  data = ml_collections.ConfigDict(dict(
      name="digits_captions",
      data_dir=ml_collections.FieldReference(None, field_type=str),  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
      train_split="train",
      image_key="image",
      text_key="caption",
      tokenizer=ml_collections.FieldReference(None, field_type=str),  # None: the data set's own
      tokenizer_vocab_size=128,  # Size asked of SentencePiece when the data set is prepared.
      # digits_captions builder parameters (part of the data set's name on disk).
      prior_exponent=1.0,  # Zipf exponent of class frequency in captions; 0 = balanced.
      caption_noise=0.0,  # Fraction of captions naming a popular class instead of the image's.
      seed=0,
      num_train_examples=20_000,
      holdout_per_class=50,  # Images per class in the held-out `zeroshot` split.
      validation_per_class=20,  # Images per class in the `validation` split.
      # Pipeline.
      shuffle_seed=0,
      augment_shift=2,
      num_workers=0,  # grain worker processes; 0 = in the main process.
      read_threads=0,  # grain reader threads; >0 helps on remote storage.
  ))
  data.update(overrides)
  return data


def zeroshot_eval(**overrides) -> ml_collections.ConfigDict:
  """An `evals` entry for zero-shot classification by (IG) caption scoring."""
  cfg = ml_collections.ConfigDict(dict(
      type="zeroshot",
      split="zeroshot",
      label_key="label",
      # Prompt templates ({} = class name); the class score averages the per-template scores.
      templates=("a photo of the number {}", "a handwritten {}", "the digit {} written by hand"),
      alphas=(0.0, 0.5, 1.0),
      batch_size=128,  # Images per global batch (a multiple of the mesh's batch axes).
      prompt_chunk=64,  # (image, prompt) pairs scored per decoder call = batch_size * prompt_chunk.
  ))
  cfg.update(overrides)
  return cfg


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field and the fix for values that cannot work."""
  def check(ok, field, value, need):
    if not ok:
      raise ValueError(f"config.{field}={value!r} is invalid: {need}")

  check(config.total_steps > 0, "total_steps", config.total_steps, "must be positive")
  check(config.batch_size > 0, "batch_size", config.batch_size, "must be positive")
  check(config.text_only_weight >= 0, "text_only_weight", config.text_only_weight,
        "lambda must be >= 0 (0 = standard captioner, 1 = IG captioner)")
  check(config.log_every > 0, "log_every", config.log_every, "must be positive")
  check(config.checkpoint_every > 0, "checkpoint_every", config.checkpoint_every,
        "must be positive")
  check(config.keep_checkpoints is None or config.keep_checkpoints > 0, "keep_checkpoints",
        config.keep_checkpoints, "must be positive (or None to keep all)")
  check(config.model.image_size > 0, "model.image_size", config.model.image_size, "must be positive")
  check(config.model.vocab_size > 3, "model.vocab_size", config.model.vocab_size,
        "must exceed the 4 special ids (pad, bos, eos, unk)")
  if config.data.name == digits_captions.DigitsCaptions.name:
    check(config.data.prior_exponent >= 0, "data.prior_exponent", config.data.prior_exponent,
          "must be >= 0 (0 = balanced classes)")
    check(0 <= config.data.caption_noise < 1, "data.caption_noise", config.data.caption_noise,
          "must be in [0, 1)")
  check(config.data.augment_shift >= 0, "data.augment_shift", config.data.augment_shift,
        "must be >= 0")
  for name, ev in config.get("evals", {}).items():
    check(ev.type in ("zeroshot",), f"evals.{name}.type", ev.type, "known types: ['zeroshot']")
    check(len(ev.alphas) > 0, f"evals.{name}.alphas", ev.alphas, "needs at least one alpha")
    check(len(ev.templates) > 0 and all("{}" in t for t in ev.templates), f"evals.{name}.templates",
          ev.templates, "needs at least one template, each with a '{}' for the class name")
    check(ev.batch_size > 0, f"evals.{name}.batch_size", ev.batch_size, "must be positive")
    check(ev.prompt_chunk > 0, f"evals.{name}.prompt_chunk", ev.prompt_chunk, "must be positive")
