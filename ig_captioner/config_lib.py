"""Helpers for config files: argument parsing, shared defaults, and validation of values.

Config files (`configs/*.py`) define `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/demo.py:runlocal,steps=100` and is parsed by `parse_arg`.
"""

import importlib.util
import json
import os

import ml_collections

from ig_captioner import errors
from ig_captioner import evaluators
from ig_captioner import models
from ig_captioner import objectives
from ig_captioner.data import tokenizer as tokenizer_ids


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,steps=100' -> {runlocal: True, steps: 100}, typed like `defaults`."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise errors.ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not sep:
      value = True
    elif isinstance(defaults[key], bool):
      value = value.lower() in ("1", "true", "yes")
    else:
      try:
        value = type(defaults[key])(value)
      except ValueError as e:
        raise errors.ConfigError(f"config argument {key}={value!r} is not a "
                                 f"{type(defaults[key]).__name__}") from e
    parsed[key] = value
  return parsed


def load_file(config_arg: str):
  """(module, config) for 'path/to/config.py[:args]', as `--config=` flags load it."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise errors.ConfigError(f"config file {path} does not exist (from {config_arg!r})")
  spec = importlib.util.spec_from_file_location("loaded_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(arg or None)


def digits_data(**overrides) -> ml_collections.ConfigDict:
  """`config.data` for the embedded `digits_captions` data set."""
  data = ml_collections.ConfigDict(dict(
      name="digits_captions",
      # None: $TFDS_DATA_DIR, or ~/tensorflow_datasets without it.
      data_dir=ml_collections.FieldReference(None, field_type=str),
      # Source files put there by hand, for builders that read them (imagenet2012; fashion_mnist
      # from a local copy): see data/catalog.py. None: none.
      manual_dir=ml_collections.FieldReference(None, field_type=str),
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
      retrieval_per_class=10,  # Images per class in the `retrieval` split (6 captions each).
      # Pipeline.
      shuffle_seed=0,
      # A split read as texts alone, batched beside the image-text batches (`text_only_tokens`):
      # for objective.text_only_batch='separate'. None: no such batch.
      text_only_split=ml_collections.FieldReference(None, field_type=str),
      augment_shift=2,
      num_workers=0,  # grain worker processes; 0 = in the main process.
      read_threads=0,  # grain reader threads; >0 helps on remote storage.
  ))
  data.update(overrides)
  return data


# Fields of `config.data` that change how the data is read, never what is prepared on disk.
PIPELINE_FIELDS = ("manual_dir", "shuffle_seed", "augment_shift", "num_workers", "read_threads",
                   "text_only_split", "cycle_length", "shuffle_window")  # The last: web_shards.


def data_key(data_config: ml_collections.ConfigDict) -> str:
  """What identifies the data on disk: `config.data` without its PIPELINE_FIELDS."""
  return json.dumps({k: v for k, v in data_config.to_dict().items()
                     if k not in PIPELINE_FIELDS}, sort_keys=True, default=str)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field and the fix for values that cannot work: the trainer's
  own fields here; the model family, the objective and each evaluator check theirs."""
  def check(field, ok, need):
    value = config
    for part in field.split("."):
      value = value[part]
    try:
      valid = bool(ok(value))
    except TypeError:  # e.g. None where a number is needed.
      valid = False
    if not valid:
      raise errors.ConfigError(f"config.{field}={value!r} is invalid: {need}")

  positive = lambda v: v > 0  # pylint: disable=unnecessary-lambda-assignment
  check("total_steps", positive, "must be positive")
  check("batch_size", positive, "must be positive")
  check("log_every", positive, "must be positive")
  check("checkpoint_every", positive, "must be positive")
  check("keep_checkpoints", lambda v: v is None or v > 0,
        "must be positive, or None to keep all (--config.keep_checkpoints=None)")
  check("model.image_size", positive, "must be positive")
  check("model.vocab_size", lambda v: v > tokenizer_ids.NUM_SPECIAL_IDS,
        "must exceed the 4 special ids (pad, bos, eos, unk)")
  check("data.augment_shift", lambda v: v >= 0, "must be >= 0")
  models.build(config.model)
  objectives.validate(config)
  evaluators.validate(config)
