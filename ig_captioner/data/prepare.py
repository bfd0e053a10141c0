"""Prepares `config.data` offline: builds the TFDS data set (ArrayRecord) and its tokenizer,
then checks that every record reads.

    python -m ig_captioner.data.prepare --config=configs/demo.py [--verify]

The SentencePiece model is trained on the train split's texts and stored as `tokenizer.model`
beside the data set's files. Preparing again is a no-op once both exist and verified; `--verify`
reads every record again (bit rot: see `verify.py`). For `web_shards` (parquet shards read as
they are) it only trains `config.data.tokenizer` on the first shards' captions, if missing.
The data sets of `config.evals` are built too (without a tokenizer). Builders that read source
files put there by hand (imagenet2012's tars; fashion_mnist's local copy) find them in
`manual_dir` (`config.data.manual_dir` or an evaluator's `data.manual_dir`; see catalog.py).
"""


from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import tensorflow_datasets as tfds

from ig_captioner import cli
from ig_captioner import config_lib
from ig_captioner import multihost
from ig_captioner import paths
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import train_mixture
from ig_captioner.data import verify as verify_lib
from ig_captioner.data import web_shards


def prepare(data_config: ml_collections.ConfigDict, verify: bool = False) -> str:
  """Builds the data set (and those of its train mixture's other sources) and its tokenizer if
  missing, and checks their records (all of them again if `verify`); returns the data set's
  directory."""
  for source in train_mixture.train_sources(data_config):
    # The tokenizer is the main data's alone; web shards need nothing else prepared.
    if source.data_config.name not in (data_config.name, sources.WEB_SHARDS):
      _build(source.data_config, verify, with_tokenizer=False)
  if data_config.name == sources.WEB_SHARDS:
    return web_shards.prepare_tokenizer(data_config)
  return _build(data_config, verify)


def prepare_evals(config: ml_collections.ConfigDict, verify: bool = False) -> list[str]:
  """Builds the data sets that `config.evals` read besides the train data (without a tokenizer:
  evaluators encode with the train data's); returns their directories."""
  train_names = {s.data_config.name for s in train_mixture.train_sources(config.data)}
  done = {}
  for data in _eval_data(config):
    key = (data.name, sources.data_dir(data))
    if data.name not in train_names | {config.data.name} and key not in done:
      done[key] = _build(data, verify, with_tokenizer=False)
  return list(done.values())


def _eval_data(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """`config.data` as each evaluator reads it (with its `data` overrides)."""
  from ig_captioner.evaluators import _common  # pylint: disable=g-import-not-at-top
  return [_common.data_config(config, e) for e in config.get("evals", {}).values()]


def _build(data_config: ml_collections.ConfigDict, verify: bool,
           with_tokenizer: bool = True) -> str:
  builder = sources.builder(data_config)
  if not sources.is_built(builder):
    if data_config.name != "digits_captions":
      logging.warning("Building %s with TFDS: this may need its source files to be available "
                      "(see the TFDS catalog for manual download instructions).", data_config.name)
    tfds.disable_progress_bar()
    manual_dir = data_config.get("manual_dir")  # Source files put there by hand (ImageNet).
    builder.download_and_prepare(
        file_format="array_record", download_config=tfds.download.DownloadConfig(
            manual_dir=paths.resolve(manual_dir)) if manual_dir else None)
  tokenizer_path = builder.data_path / sources.TOKENIZER_FILENAME
  if with_tokenizer and not data_config.get("tokenizer") and not tokenizer_path.exists():
    source = sources.open_split(data_config, data_config.train_split)
    texts = (text for i in range(len(source))  # Every caption of records that hold several.
             for text in sources.texts(sources.field(source[i], data_config.text_key)))
    model = tokenizer_lib.train(texts, vocab_size=int(data_config.tokenizer_vocab_size))
    paths.write_atomic(tokenizer_path, model)  # A crash never leaves half a tokenizer.
    logging.info("Trained a %d-piece tokenizer at %s",
                 tokenizer_lib.Tokenizer(model).vocab_size, tokenizer_path)
  verify_lib.verify_all(data_config, force=verify)
  return str(builder.data_path)


# Data sets built from nothing but what the package ships: the trainer and the evaluator prepare
# them on first use. Any other data set needs its source files, so a missing one stays an error.
OFFLINE_BUILDABLE = ("digits_captions",)


def _missing(config: ml_collections.ConfigDict) -> list[tuple[ml_collections.ConfigDict, bool]]:
  """(data config, with its tokenizer) of each OFFLINE_BUILDABLE data set `config` reads that is
  not prepared: its own data (whose tokenizer every text is encoded with), its train mixture's
  and its evaluators' (`config.evals.*.data` overrides)."""
  used = [config.data] + [s.data_config for s in train_mixture.train_sources(config.data)] + (
      _eval_data(config))
  missing = {}
  for i, data_config in enumerate(used):
    if data_config.name not in OFFLINE_BUILDABLE:
      continue
    builder = sources.builder(data_config)
    needs_tokenizer = i == 0 and not data_config.get("tokenizer")
    if not sources.is_built(builder) or (
        needs_tokenizer and not (builder.data_path / sources.TOKENIZER_FILENAME).exists()):
      missing.setdefault(config_lib.data_key(data_config), (data_config, needs_tokenizer))
  return list(missing.values())


def ensure_prepared(config: ml_collections.ConfigDict) -> None:
  """Builds the data sets `config` reads that are missing and can be built offline
  (OFFLINE_BUILDABLE), with a progress line; every process calls it. Process 0 builds first, so
  that a data dir shared by the hosts is built once; a process that still lacks the data then
  (on its host's own disk) builds its own copy."""
  for builders in (jax.process_index() == 0, jax.process_index() > 0):
    if builders:
      for data_config, with_tokenizer in _missing(config):
        print(f"Preparing {data_config.name} under {sources.data_dir(data_config)} (first use; "
              "about a minute)...", flush=True)
        print(f"Prepared {_build(data_config, False, with_tokenizer)}", flush=True)
    multihost.most(0)  # Every process waits here for the builders.


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
    for path in prepare_evals(config.value, verify=verify.value):
      print(f"Prepared {path} (evaluation data)")
  cli.run(run)


if __name__ == "__main__":
  main()
