"""Opens prepared TFDS data sets (ArrayRecord) as random-access sources, with clear errors.

`config.data.name` is either `digits_captions` (the embedded data set, whose builder parameters
come from `config.data`) or any TFDS data set prepared in ArrayRecord format under
`config.data.data_dir`; `fashion_mnist` with `config.data.manual_dir` set is read from a local copy
of its original files (`fashion_mnist_local.py`). `data/catalog.py` has ready entries by name.
"""

import os
from typing import Any, Mapping, Sequence

import ml_collections
import tensorflow_datasets as tfds

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import digits_captions
from ig_captioner.data import fashion_mnist_local
from ig_captioner.data import imagenet_metadata
from ig_captioner.data import tokenizer as tokenizer_lib

TOKENIZER_FILENAME = "tokenizer.model"
WEB_SHARDS = "web_shards"  # config.data.name of parquet shards (`web_shards.py`), not TFDS.


class DataError(errors.UserError, RuntimeError):
  """The data set is missing, incomplete or corrupt."""


def data_dir(data_config: ml_collections.ConfigDict) -> str:
  return paths.resolve(data_config.get("data_dir") or os.environ.get(
      "TFDS_DATA_DIR", "~/tensorflow_datasets"))


def prepare_command(data_config: ml_collections.ConfigDict) -> str:
  if data_config.name == WEB_SHARDS:
    return ("python -m ig_captioner.data.prepare --config=<your config> (it trains "
            f"config.data.tokenizer={data_config.get('tokenizer')} from the shards' captions)")
  return ("python -m ig_captioner.data.prepare --config=<your config> "
          f"(it builds {data_config.name} under {data_dir(data_config)})")


def builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `config.data`, prepared or not."""
  if data_config.name == WEB_SHARDS:
    raise DataError("config.data.name='web_shards' names parquet shards, which only the train "
                    "pipeline reads; evaluators and text_only_split need a TFDS data set: name "
                    "one in their `data` override")
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
  if data_config.name == "fashion_mnist" and data_config.get("manual_dir"):
    return fashion_mnist_local.LocalFashionMnist(data_dir=data_dir(data_config),
                                                 file_format="array_record")
  try:
    return tfds.builder(data_config.name, data_dir=data_dir(data_config))
  except Exception as e:  # TFDS raises several types for unknown or unreadable names.
    raise DataError(f"config.data.name={data_config.name!r} is not a known TFDS data set "
                    f"({type(e).__name__}: {e})") from e


def is_built(b: tfds.core.DatasetBuilder) -> bool:
  """Whether TFDS finished building `b`'s data (it writes dataset_info.json last)."""
  return (b.data_path / "dataset_info.json").exists()


def prepared_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder, checked to be prepared in ArrayRecord format."""
  b = builder(data_config)
  if not is_built(b):
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


def field(record: Mapping[str, Any], key: str) -> Any:
  """`record[key]`; a key with '/' that is no feature of its own names a nested one
  (coco_captions' 'captions/text' is `record['captions']['text']`)."""
  if key in record:
    return record[key]
  value = record
  for part in key.split("/"):
    if not isinstance(value, Mapping) or part not in value:
      raise DataError(f"the records have no field {key!r}; their fields: {sorted(record)} "
                      "(nested ones are named 'outer/inner'): fix the config's key")
    value = value[part]
  return value


def texts(value) -> list[str]:
  """The texts of a text field: one (a Text feature) or several (a Sequence of texts)."""
  if isinstance(value, (bytes, str)):
    return [as_text(value)]
  return [as_text(v) for v in value]


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


def readable_class_names(data_config: ml_collections.ConfigDict, label_key: str = "label",
                         names: str | None = None) -> list[str]:
  """Class names for prompts, in label order. `names`: None, the ClassLabel's with '_' read as a
  space (CIFAR-100's 'aquarium_fish'); 'imagenet', OpenAI's 1,000 human-readable ImageNet names
  (imagenet2012's ClassLabel holds WordNet ids); else a file, one name a line."""
  label_names = class_names(data_config, label_key)
  if names is None:
    return [n.replace("_", " ") for n in label_names]
  if names == "imagenet":
    out, origin = list(imagenet_metadata.class_names()), "the package's ImageNet list"
  else:
    path = paths.path(names)
    if not path.is_file():
      raise DataError(f"class names file {path} does not exist: give a file with one class "
                      "name a line in label order, 'imagenet', or None (the ClassLabel's names)")
    lines = path.read_text(encoding="utf-8").splitlines()
    out, origin = [line.strip() for line in lines if line.strip()], str(path)
  if len(out) != len(label_names):
    raise DataError(f"{origin} has {len(out)} class names but data set {data_config.name} has "
                    f"{len(label_names)} classes ({label_key!r}): give names for its classes")
  return out


def tokenizer(data_config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """`config.data.tokenizer` if set, else the tokenizer stored with the prepared data set."""
  if data_config.name == WEB_SHARDS:  # No data set directory: the tokenizer field is required.
    if not data_config.get("tokenizer"):
      raise errors.ConfigError("config.data.tokenizer is unset; web shards need one: set it to "
                               "a SentencePiece .model path, which `prepare` trains if missing")
    return _stored_tokenizer(paths.path(data_config.tokenizer),
                             f"train it with {prepare_command(data_config)}")
  if data_config.get("tokenizer"):
    return tokenizer_lib.Tokenizer.from_file(paths.resolve(data_config.tokenizer))
  return _stored_tokenizer(prepared_builder(data_config).data_path / TOKENIZER_FILENAME,
                           f"prepare the data set with {prepare_command(data_config)}, or set "
                           "config.data.tokenizer to a .model file")


def _stored_tokenizer(path, fix: str) -> tokenizer_lib.Tokenizer:
  """The SentencePiece model at `path` (an epath), or DataError ending with `fix`."""
  if not path.exists():
    raise DataError(f"no tokenizer at {path}: {fix}")
  return tokenizer_lib.Tokenizer(path.read_bytes(), source=str(path))
