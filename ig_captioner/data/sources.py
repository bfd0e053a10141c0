"""Opens prepared TFDS data sets (ArrayRecord) as random-access sources, with clear errors.

`config.data.name` is either `digits_captions` (the embedded data set, whose builder parameters
come from `config.data`) or any TFDS data set prepared in ArrayRecord format under
`config.data.data_dir`.
"""

import os
from typing import Any, Sequence

import ml_collections
import tensorflow_datasets as tfds

from ig_captioner import errors
from ig_captioner.data import digits_captions
from ig_captioner.data import tokenizer as tokenizer_lib

TOKENIZER_FILENAME = "tokenizer.model"


class DataError(errors.UserError, RuntimeError):
  """The data set is missing, incomplete or corrupt."""


def data_dir(data_config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(data_config.get("data_dir") or os.environ.get(
      "TFDS_DATA_DIR", "~/tensorflow_datasets"))


def prepare_command(data_config: ml_collections.ConfigDict) -> str:
  return ("python -m ig_captioner.data.prepare --config=<your config> "
          f"(it builds {data_config.name} under {data_dir(data_config)})")


def builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `config.data`, prepared or not."""
  if data_config.name == digits_captions.DigitsCaptions.name:
    config = digits_captions.make_config(
        prior_exponent=float(data_config.prior_exponent),
        caption_noise=float(data_config.caption_noise), seed=int(data_config.seed),
        num_train_examples=int(data_config.num_train_examples),
        holdout_per_class=int(data_config.holdout_per_class),
        validation_per_class=int(data_config.validation_per_class),
        retrieval_per_class=int(data_config.get("retrieval_per_class", 10)))
    if config.name in digits_captions.DigitsCaptions.builder_configs:
      config = config.name  # TFDS refuses a custom config named like a registered one.
    return digits_captions.DigitsCaptions(config=config, data_dir=data_dir(data_config),
                                          file_format="array_record")
  try:
    return tfds.builder(data_config.name, data_dir=data_dir(data_config))
  except Exception as e:  # TFDS raises several types for unknown or unreadable names.
    raise DataError(f"config.data.name={data_config.name!r} is not a known TFDS data set "
                    f"({type(e).__name__}: {e})") from e


def prepared_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder, checked to be prepared in ArrayRecord format."""
  b = builder(data_config)
  if not (b.data_path / "dataset_info.json").exists():
    raise DataError(f"data set {data_config.name} is not prepared at {b.data_path}. "
                    f"Prepare it with: {prepare_command(data_config)}")
  formats = {b.info.file_format.value} if b.info.file_format else set()
  if formats and "array_record" not in formats:
    raise DataError(f"data set {data_config.name} at {b.data_path} is in {formats}, not "
                    "array_record, which random access needs: prepare it again with "
                    "file_format='array_record'")
  return b


class CheckedSource:
  """A random-access source whose read errors name the record and say how to repair the data."""

  def __init__(self, source: Sequence[Any], identity: str, description: str, repair: str):
    self._source = source
    self._identity = identity
    self._description = description
    self._repair = repair

  def __repr__(self) -> str:
    # grain checks that a restored iterator reads the same source by comparing reprs: name the
    # data set, not where it lies, so a checkpoint resumes with the data moved elsewhere.
    return f"CheckedSource({self._identity}, {len(self)} records)"

  def __len__(self) -> int:
    return len(self._source)

  @property
  def description(self) -> str:
    return self._description

  @property
  def repair(self) -> str:
    return self._repair

  def __getitem__(self, index: int) -> Any:
    try:
      return self._source[index]
    except Exception as e:  # array_record and the feature decoders raise many types.
      raise DataError(f"record {index} of {self._description} could not be read "
                      f"({type(e).__name__}: {e}). The prepared data looks corrupt: {self._repair}"
                      ) from e

  def unreadable(self, indices: Sequence[int]) -> list[int]:
    """Which of `indices` cannot be read and decoded (one batched read when all can)."""
    try:
      self._source.__getitems__(list(indices))
      return []
    except Exception:  # pylint: disable=broad-except
      pass
    bad = []
    for i in indices:
      try:
        self._source[i]
      except Exception:  # pylint: disable=broad-except
        bad.append(i)
    return bad


def as_text(value) -> str:
  """A record's text field as str (TFDS Text features read back as UTF-8 bytes)."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def open_split(data_config: ml_collections.ConfigDict, split: str) -> CheckedSource:
  b = prepared_builder(data_config)
  if split not in b.info.splits:
    raise DataError(f"data set {data_config.name} has no split {split!r}; it has "
                    f"{sorted(b.info.splits)}")
  description = f"{data_config.name} split {split!r} at {b.data_path}"
  repair = f"delete {b.data_path} and prepare it again with {prepare_command(data_config)}"
  try:
    source = b.as_data_source(split=split)
  except Exception as e:
    raise DataError(f"cannot open {description} ({type(e).__name__}: {e}): {repair}") from e
  if len(source) == 0:
    raise DataError(f"{description} is empty: {repair}")
  identity = f"{b.info.full_name} split={split}"
  return CheckedSource(source, identity, description, repair)


def class_names(data_config: ml_collections.ConfigDict, label_key: str = "label") -> list[str]:
  features = prepared_builder(data_config).info.features
  if label_key not in features or not hasattr(features[label_key], "names"):
    raise DataError(f"data set {data_config.name} has no ClassLabel feature {label_key!r}")
  return list(features[label_key].names)


def tokenizer(data_config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """`config.data.tokenizer` if set, else the tokenizer stored with the prepared data set."""
  if data_config.get("tokenizer"):
    return tokenizer_lib.Tokenizer.from_file(os.path.expanduser(data_config.tokenizer))
  path = prepared_builder(data_config).data_path / TOKENIZER_FILENAME
  if not path.exists():
    raise DataError(f"no tokenizer at {path}: prepare the data set with "
                    f"{prepare_command(data_config)}, or set config.data.tokenizer to a .model "
                    "file")
  return tokenizer_lib.Tokenizer(path.read_bytes(), source=str(path))
