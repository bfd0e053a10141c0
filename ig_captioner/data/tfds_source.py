"""TFDS data sets prepared as ArrayRecord: random-access records, every record verified once, the
tokenizer stored beside the data.

`Tfds` is any TFDS data set by name under `config.data.data_dir` (`fashion_mnist` with
`config.data.manual_dir` set is read from a local copy of its original files,
`fashion_mnist_local.py`); `Digits` is the embedded `digits_captions`, whose builder parameters
come from `config.data` and which needs nothing but this package to build.
"""

import os

from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from ig_captioner import paths
from ig_captioner.data import digits_captions
from ig_captioner.data import fashion_mnist_local
from ig_captioner.data import records
from ig_captioner.data import source_base
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import verify as verify_lib

TOKENIZER_FILENAME = "tokenizer.model"


def data_dir(data_config: ml_collections.ConfigDict) -> str:
  return paths.resolve(data_config.get("data_dir") or os.environ.get(
      "TFDS_DATA_DIR", "~/tensorflow_datasets"))


def is_built(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether TFDS finished building `builder`'s data (it writes dataset_info.json last)."""
  return (builder.data_path / "dataset_info.json").exists()


class Tfds(source_base.Source):
  """A TFDS data set in ArrayRecord format."""

  def builder(self) -> tfds.core.DatasetBuilder:
    """The TFDS builder, prepared or not."""
    if self.name == "fashion_mnist" and self.config.get("manual_dir"):
      return fashion_mnist_local.LocalFashionMnist(data_dir=data_dir(self.config),
                                                   file_format="array_record")
    try:
      return tfds.builder(self.name, data_dir=data_dir(self.config))
    except Exception as e:  # TFDS raises several types for unknown or unreadable names.
      raise records.DataError(f"config.data.name={self.name!r} is not a known TFDS data set "
                              f"({type(e).__name__}: {e})") from e

  def prepared_builder(self) -> tfds.core.DatasetBuilder:
    """The builder, checked to be prepared in ArrayRecord format."""
    b = self.builder()
    if not is_built(b):
      raise records.DataError(f"data set {self.name} is not prepared at {b.data_path}. "
                              f"Prepare it with: {self.prepare_command()}")
    formats = {b.info.file_format.value} if b.info.file_format else set()
    if formats and "array_record" not in formats:
      raise records.DataError(f"data set {self.name} at {b.data_path} is in {formats}, not "
                              "array_record, which random access needs: prepare it again with "
                              "file_format='array_record'")
    return b

  # ---------------------------------------------------------------------------- Preparing ---
  def prepare_command(self) -> str:
    return ("python -m ig_captioner.data.prepare --config=<your config> "
            f"(it builds {self.name} under {data_dir(self.config)})")

  def location(self) -> str:
    return str(self.builder().data_path)

  def _tokenizer_path(self, builder):
    return builder.data_path / TOKENIZER_FILENAME

  def is_prepared(self, with_tokenizer: bool) -> bool:
    b = self.builder()
    return is_built(b) and (not with_tokenizer or bool(self.config.get("tokenizer")) or
                            self._tokenizer_path(b).exists())

  def prepare(self, verify: bool = False, with_tokenizer: bool = True) -> str:
    builder = self.builder()
    if not is_built(builder):
      if not self.OFFLINE_BUILDABLE:
        logging.warning("Building %s with TFDS: this may need its source files to be available "
                        "(see the TFDS catalog for manual download instructions).", self.name)
      tfds.disable_progress_bar()
      manual_dir = self.config.get("manual_dir")  # Source files put there by hand (ImageNet).
      builder.download_and_prepare(
          file_format="array_record", download_config=tfds.download.DownloadConfig(
              manual_dir=paths.resolve(manual_dir)) if manual_dir else None)
    tokenizer_path = self._tokenizer_path(builder)
    if with_tokenizer and not self.config.get("tokenizer") and not tokenizer_path.exists():
      source = self.open_split(self.config.train_split)
      texts = (text for i in range(len(source))  # Every caption of records that hold several.
               for text in records.texts(records.field(source[i], self.config.text_key)))
      model = tokenizer_lib.train(texts, vocab_size=int(self.config.tokenizer_vocab_size))
      paths.write_atomic(tokenizer_path, model)  # A crash never leaves half a tokenizer.
      logging.info("Trained a %d-piece tokenizer at %s",
                   tokenizer_lib.Tokenizer(model).vocab_size, tokenizer_path)
    for split in sorted(self.prepared_builder().info.splits):
      self.verify_split(split, force=verify)
    return str(builder.data_path)

  # ------------------------------------------------------------------------------ Reading ---
  def tokenizer(self) -> tokenizer_lib.Tokenizer:
    if self.config.get("tokenizer"):
      return tokenizer_lib.from_setting(self.config.tokenizer)
    return tokenizer_lib.stored(self._tokenizer_path(self.prepared_builder()),
                                f"prepare the data set with {self.prepare_command()}, or set "
                                "config.data.tokenizer to a .model file")

  def open_split(self, split: str) -> records.CheckedSource:
    b = self.prepared_builder()
    if split not in b.info.splits:
      raise records.DataError(f"data set {self.name} has no split {split!r}; it has "
                              f"{sorted(b.info.splits)}")
    description = f"{self.name} split {split!r} at {b.data_path}"
    repair = f"delete {b.data_path} and prepare it again with {self.prepare_command()}"
    try:
      source = b.as_data_source(split=split)
    except Exception as e:
      raise records.DataError(f"cannot open {description} ({type(e).__name__}: {e}): {repair}"
                              ) from e
    if len(source) == 0:
      raise records.DataError(f"{description} is empty: {repair}")
    identity = f"{b.info.full_name} split={split}"
    return records.CheckedSource(source, identity, description, repair)

  def verify_split(self, split: str, force: bool = False) -> None:
    verify_lib.verify_split(self.open_split(split), str(self.prepared_builder().data_path),
                            split, force=force)

  def class_names(self, label_key: str) -> list[str]:
    features = self.prepared_builder().info.features
    if label_key not in features or not hasattr(features[label_key], "names"):
      raise records.DataError(f"data set {self.name} has no ClassLabel feature {label_key!r}")
    return list(features[label_key].names)

  def train_records(self, split: str, seed: int, image_size: int):
    del image_size  # Resized per example by the pipeline.
    return records.shuffled_shard(self.open_split(split), seed), None


class Digits(Tfds):
  """The embedded `digits_captions` (`digits_captions.py`), built from the package alone."""

  OFFLINE_BUILDABLE = True

  def builder(self) -> tfds.core.DatasetBuilder:
    c = self.config
    config = digits_captions.make_config(
        prior_exponent=float(c.prior_exponent), caption_noise=float(c.caption_noise),
        seed=int(c.seed), num_train_examples=int(c.num_train_examples),
        holdout_per_class=int(c.holdout_per_class),
        validation_per_class=int(c.validation_per_class),
        retrieval_per_class=int(c.get("retrieval_per_class", 10)))
    if config.name in digits_captions.DigitsCaptions.builder_configs:
      config = config.name  # TFDS refuses a custom config named like a registered one.
    return digits_captions.DigitsCaptions(config=config, data_dir=data_dir(c),
                                          file_format="array_record")
