"""Data sources behind one interface: what `config.data` names, how it is prepared, and how its
records are read.

`config.data.name` picks the kind (`KINDS`; any other name is a TFDS data set):
- `digits_captions`: the embedded data set, built offline from the package alone, its builder's
  parameters taken from `config.data` (`tfds_source.Digits`);
- any TFDS data set prepared as ArrayRecord under `config.data.data_dir` (`tfds_source.Tfds`);
- `web_shards`: img2dataset's parquet shards, read in order, never prepared beyond a tokenizer
  (`web_shards.WebShards`).
Every kind is a `Source`; the functions below take a `config.data` and ask its kind, so that no
other module needs to know which kind a data set is.
"""

import json

import grain
import ml_collections

from ig_captioner import paths
from ig_captioner.data import clip_benchmark_metadata
from ig_captioner.data import imagenet_metadata
from ig_captioner.data import records
from ig_captioner.data import source_base
from ig_captioner.data import tfds_source
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import web_shards

Source = source_base.Source
DataError = records.DataError

# config.data.name -> its kind; other names are TFDS data sets.
KINDS = {"digits_captions": tfds_source.Digits, "web_shards": web_shards.WebShards}


def get(data_config: ml_collections.ConfigDict) -> Source:
  """The source that `config.data` names."""
  return KINDS.get(data_config.name, tfds_source.Tfds)(data_config)


def data_key(data_config: ml_collections.ConfigDict) -> str:
  """What identifies the data on disk: `config.data` without the fields that only change how
  it is read (its kind's `PIPELINE_FIELDS`)."""
  skip = get(data_config).PIPELINE_FIELDS
  return json.dumps({k: v for k, v in data_config.to_dict().items() if k not in skip},
                    sort_keys=True, default=str)


def prepare(data_config: ml_collections.ConfigDict, verify: bool = False,
            with_tokenizer: bool = True) -> str:
  """Prepares the data (and its tokenizer) if missing; returns where it is."""
  return get(data_config).prepare(verify, with_tokenizer)


def tokenizer(data_config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """`config.data.tokenizer` if set, else the tokenizer prepared with the data."""
  return get(data_config).tokenizer()


def open_split(data_config: ml_collections.ConfigDict, split: str) -> records.CheckedSource:
  """Random access to the records of `split`."""
  return get(data_config).open_split(split)


def caption_texts(data_config: ml_collections.ConfigDict, split: str = "train",
                  limit: int = 1_000_000) -> list[str]:
  """Up to `limit` captions of `split` (web shards: of their first shards), in order."""
  return get(data_config).caption_texts(split, limit)


def verify_split(data_config: ml_collections.ConfigDict, split: str, *,
                 force: bool = False) -> None:
  """DataError naming the unreadable records of `split`, before a run reads them."""
  get(data_config).verify_split(split, force=force)


def train_records(data_config: ml_collections.ConfigDict, split: str, seed: int,
                  image_size: int) -> tuple[grain.MapDataset | grain.IterDataset, dict | None]:
  """This process's records of `split`, endless (see `Source.train_records`)."""
  return get(data_config).train_records(split, seed, image_size)


def class_names(data_config: ml_collections.ConfigDict, label_key: str = "label") -> list[str]:
  """The names of the data set's classes (its ClassLabel `label_key`), in label order."""
  return get(data_config).class_names(label_key)


def readable_class_names(data_config: ml_collections.ConfigDict, label_key: str = "label",
                         names: str | None = None) -> list[str]:
  """Class names for prompts, in label order. `names`: None, the ClassLabel's with '_' read as a
  space (CIFAR-100's 'aquarium_fish'); 'imagenet', OpenAI's 1,000 human-readable ImageNet names
  (imagenet2012's ClassLabel holds WordNet ids); 'clip_benchmark:KEY', CLIP_benchmark's list
  KEY (`clip_benchmark_metadata.py`); else a file, one name a line."""
  label_names = class_names(data_config, label_key)
  if names is None:
    return [n.replace("_", " ") for n in label_names]
  if names == "imagenet":
    out, origin = list(imagenet_metadata.class_names()), "the package's ImageNet list"
  elif names.startswith(clip_benchmark_metadata.PREFIX):
    key = names[len(clip_benchmark_metadata.PREFIX):]
    out, origin = list(clip_benchmark_metadata.class_names(key)), f"CLIP_benchmark's {key!r}"
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
