"""Prepares `config.data` offline: builds the data set and its tokenizer, then checks that every
record reads.

    python -m ig_captioner.data.prepare --config=configs/demo.py [--verify]

What preparing means is the data source's (`sources.py`): a TFDS data set is built as
ArrayRecord, its SentencePiece model trained on the train split's texts and stored as
`tokenizer.model` beside the data set's files, and every record read once; web shards only get
`config.data.tokenizer` trained on the first shards' captions, if missing. Preparing again is a
no-op once done; `--verify` reads every record again (bit rot: see `verify.py`). The data sets
of the train mixture and of `config.evals` are built too (without a tokenizer). Builders that
read source files put there by hand (imagenet2012's tars; fashion_mnist's local copy) find them
in `manual_dir` (`config.data.manual_dir` or an evaluator's `data.manual_dir`).
"""

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from ig_captioner import cli
from ig_captioner import multihost
from ig_captioner.data import presets
from ig_captioner.data import sources
from ig_captioner.data import train_mixture


def prepare(data_config: ml_collections.ConfigDict, verify: bool = False) -> str:
  """Prepares the data set (and those of its train mixture's other sources) and its tokenizer
  if missing, and checks their records (all of them again if `verify`); returns where the data
  set is."""
  for source in train_mixture.train_sources(data_config):
    if source.data_config.name != data_config.name:  # The tokenizer is the main data's alone.
      sources.prepare(source.data_config, verify, with_tokenizer=False)
  return sources.prepare(data_config, verify)


def eval_data_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """`config.data` as each evaluator reads it (with its `data` overrides)."""
  return [presets.with_overrides(config.data, e.get("data", {}))
          for e in config.get("evals", {}).values()]


def prepare_evals(config: ml_collections.ConfigDict, verify: bool = False) -> list[str]:
  """Prepares the data sets that `config.evals` read besides the train data (without a
  tokenizer: evaluators encode with the train data's); returns where they are."""
  train_names = {s.data_config.name for s in train_mixture.train_sources(config.data)}
  done = {}
  for data in eval_data_configs(config):
    if data.name in train_names | {config.data.name}:
      continue
    source = sources.get(data)
    key = (data.name, source.location())
    if key not in done:
      done[key] = source.prepare(verify, with_tokenizer=False)
  return list(done.values())


def _missing(config: ml_collections.ConfigDict) -> list[tuple[ml_collections.ConfigDict, bool]]:
  """(data config, with its tokenizer) of each offline-buildable data set `config` reads that
  is not prepared: its own data (whose tokenizer every text is encoded with), its train
  mixture's and its evaluators' (`config.evals.*.data` overrides)."""
  used = [config.data] + [s.data_config for s in train_mixture.train_sources(config.data)] + (
      eval_data_configs(config))
  missing = {}
  for i, data_config in enumerate(used):
    source = sources.get(data_config)
    if not source.OFFLINE_BUILDABLE:
      continue
    needs_tokenizer = i == 0 and not data_config.get("tokenizer")
    if not source.is_prepared(needs_tokenizer):
      missing.setdefault(sources.data_key(data_config), (data_config, needs_tokenizer))
  return list(missing.values())


def ensure_prepared(config: ml_collections.ConfigDict) -> None:
  """Prepares the data sets `config` reads that are missing and need nothing but this package
  (`Source.OFFLINE_BUILDABLE`: the embedded digits), with a progress line; every process calls
  it. Process 0 builds first, so that a data dir shared by the hosts is built once; a process
  that still lacks the data then (on its host's own disk) builds its own copy. Any other data
  set needs its source files, so a missing one stays an error."""
  for builders in (jax.process_index() == 0, jax.process_index() > 0):
    if builders:
      for data_config, with_tokenizer in _missing(config):
        source = sources.get(data_config)
        print(f"Preparing {data_config.name} under {source.location()} (first use; about a "
              "minute)...", flush=True)
        print(f"Prepared {source.prepare(False, with_tokenizer)}", flush=True)
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
