"""Prepares `config.data` offline: builds the TFDS data set (ArrayRecord) and its tokenizer,
then checks that every record reads.

    python -m ig_captioner.data.prepare --config=configs/demo.py [--verify]

The SentencePiece model is trained on the train split's texts and stored as `tokenizer.model`
beside the data set's files. Preparing again is a no-op once both exist and verified; `--verify`
reads every record again (bit rot: see `verify.py`).
"""

import os

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import tensorflow_datasets as tfds

from ig_captioner import cli
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import train_mixture
from ig_captioner.data import verify as verify_lib


def prepare(data_config: ml_collections.ConfigDict, verify: bool = False) -> str:
  """Builds the data set (and those of its train mixture's other sources) and its tokenizer if
  missing, and checks their records (all of them again if `verify`); returns the data set's
  directory."""
  for source in train_mixture.train_sources(data_config):
    if source.data_config.name != data_config.name:
      _build(source.data_config, verify)
  return _build(data_config, verify)


def _build(data_config: ml_collections.ConfigDict, verify: bool) -> str:
  builder = sources.builder(data_config)
  if not (builder.data_path / "dataset_info.json").exists():
    if data_config.name != "digits_captions":
      logging.warning("Building %s with TFDS: this may need its source files to be available "
                      "(see the TFDS catalog for manual download instructions).", data_config.name)
    tfds.disable_progress_bar()
    builder.download_and_prepare(file_format="array_record")
  tokenizer_path = builder.data_path / sources.TOKENIZER_FILENAME
  if not data_config.get("tokenizer") and not tokenizer_path.exists():
    source = sources.open_split(data_config, data_config.train_split)
    text_key = data_config.text_key
    texts = (source[i][text_key].decode("utf-8") for i in range(len(source)))
    model = tokenizer_lib.train(texts, vocab_size=int(data_config.tokenizer_vocab_size))
    tmp_path = str(tokenizer_path) + ".tmp"
    with open(tmp_path, "wb") as f:
      f.write(model)
    os.replace(tmp_path, tokenizer_path)  # Atomic: a crash never leaves half a tokenizer.
    logging.info("Trained a %d-piece tokenizer at %s",
                 tokenizer_lib.Tokenizer(model).vocab_size, tokenizer_path)
  verify_lib.verify_all(data_config, force=verify)
  return str(builder.data_path)


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  config = config_flags.DEFINE_config_file("config", None, "Config file (its `data` is used).",
                                           lock_config=True)
  verify = flags.DEFINE_bool("verify", False, "Read every record again, even of splits that "
                             "passed before (bit rot changes no file size or time).")
  flags.mark_flag_as_required("config")

  def run(argv):
    del argv
    print(f"Prepared {prepare(config.value.data, verify=verify.value)}")
  cli.run(run)


if __name__ == "__main__":
  main()
