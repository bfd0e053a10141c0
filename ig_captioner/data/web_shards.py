"""Web-scale image-text shards, as img2dataset writes them, read as a grain IterDataset: one
kind of data source (`sources.KINDS['web_shards']`).

img2dataset writes shards `00000.parquet`, `00001.parquet`, ... (`--output_format parquet`: one
row per downloaded example with columns `url`, `caption`, `jpg` (the encoded image) and a few
more), or `00000.tar`, ... (`--output_format webdataset`, what open_clip trains from: members
`KEY.jpg`, `KEY.txt`, `KEY.json` per example; `tar_samples.py`). The shard's suffix says which.
This source reads them one shard per stream, interleaved; it is deterministic, resumable from
the iterator state (a parquet row position, a tar byte offset) and split over processes.

    config.data = dict(
        name="web_shards",
        shards="gs://bucket/laion/{00000..41407}.parquet",  # or a list; globs and ranges
        image_column="jpg", text_column="caption",  # defaults; for .tar: "jpg", "txt"
        cycle_length=16,      # shards read at once, each by its prefetch thread (default 16)
        shuffle_window=1024,  # decoded examples shuffled in windows of this many (default 0: off)
        shuffle_seed=0,       # shard order (permuted again every epoch) and window shuffle
        keep_list="gs://bucket/curated/keep_list.tsv",  # optional: read only the pairs it names
        tokenizer="gs://bucket/laion/tokenizer.model",  # trained by `prepare` if missing
        tokenizer_vocab_size=32_000,
        tokenizer_sample=1_000_000)  # captions of the first shards that train it (default)

`shards` holds paths, glob patterns (`dir/*.tar`) or `{00000..00099}` ranges, as a list or
one comma-separated string (`shard_files.py`). Shard i (in that order, each pattern's matches
sorted) goes to process i % process_count.

`keep_list` (optional) names a curation's keep-list (`python -m ig_captioner.data.curate`,
`keep_lists.py`): only the pairs it lists are read, straight from the raw shards; the others are
passed over (not counted as corrupt), and each process holds only its own shards' keys.

Corrupt data never stops a run and is never silent: a record whose image does not decode or is
missing, or whose text is empty, missing or not UTF-8, is skipped; a shard that cannot be read
(not a tar or parquet file, truncated, missing) is skipped from the first bad read on. Each
skip is counted per reason in a `skip_counts.SkipCounts` and logged (the first few of each
reason, then at each power of ten). Only if no shard yields a
single usable record does reading stop, with a DataError. Skipping depends on the bytes alone,
so the order and the iterator state stay deterministic.
"""

import io
from typing import Sequence

from absl import logging
import grain
import ml_collections
import numpy as np
from PIL import Image

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import image_ops
from ig_captioner.data import keep_lists
from ig_captioner.data import pool_shards
from ig_captioner.data import records
from ig_captioner.data import shard_files
from ig_captioner.data import skip_counts
from ig_captioner.data import source_base
from ig_captioner.data import tar_samples
from ig_captioner.data import tokenizer as tokenizer_lib

IMAGE_KEY, TEXT_KEY = "image", "text"  # Of the records `load` yields.
NO_IMAGE, BAD_IMAGE, NO_TEXT = skip_counts.NO_IMAGE, skip_counts.BAD_IMAGE, skip_counts.NO_TEXT


# -------------------------------------------------------------------------------- Records ---
def check_row(row: dict, image_column: str, text_column: str,
              image_size: int | None = None) -> tuple[np.ndarray | None, str, str]:
  """(uint8 RGB HxWx3 image resized to image_size if given, text, '') of a usable row, else
  (None, the reason it is unusable, details). A tar sample may lack a member: that is an
  unusable row too."""
  text = row.get(text_column)
  if isinstance(text, bytes):
    try:
      text = text.decode("utf-8")
    except UnicodeDecodeError as e:
      return None, NO_TEXT, f"its {text_column!r} is not UTF-8 text ({e})"
  if not isinstance(text, str) or not text.strip():
    detail = "" if text_column in row else f"no {text_column!r} in {_fields(row)}"
    return None, NO_TEXT, detail
  encoded = row.get(image_column)
  if encoded is None or not len(encoded):
    detail = "" if image_column in row else f"no {image_column!r} in {_fields(row)}"
    return None, NO_IMAGE, detail
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      image_HxWx3 = np.asarray(image.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types.
    return None, BAD_IMAGE, f"{type(e).__name__}: {e}"
  if image_size:
    image_HxWx3 = image_ops.resize_image(image_HxWx3, image_size)
  return image_HxWx3, text, ""


def _fields(row: dict) -> list[str]:
  return sorted(k for k in row if not k.startswith("__"))


def check_columns(row: dict, shard: str, columns: Sequence[str]) -> None:
  missing = [c for c in columns if c not in row]
  if missing:
    raise records.DataError(
        f"shard {shard} has no column {missing}; its columns are {sorted(row)}: set "
        "config.data.image_column / config.data.text_column to the right ones")


class _ShardIterator(grain.DatasetIterator):
  """One shard's usable records, {'image': uint8 HxWx3, 'text': str}; ends at a bad read."""

  def __init__(self, shard: "_Shard"):
    super().__init__()
    self._shard = shard
    self._rows = None  # grain's parquet iterator; None once a read failed.
    self._usable = 0  # Usable records since the first row, if this read started there.
    self._from_first_row = True
    self._finished = False
    self._row_starts = None  # A parquet shard's first row of each row group, once needed.
    if shard.kept is not None and not shard.kept:  # The keep-list keeps none of its pairs.
      return
    try:
      self._rows = shard_files.open_rows(shard.path)
    except records.DataError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # pyarrow raises many types.
      self._fail(e)

  def _fail(self, error: Exception) -> None:
    self._shard.counts.shard_failed(self._shard.path, error)
    self._rows = None
    self._finish()

  def _finish(self) -> None:
    if not self._finished:
      self._finished = True
      if self._from_first_row:
        self._shard.counts.pass_finished(self._shard.path, self._usable)

  def __next__(self) -> dict:
    while self._rows is not None:
      try:
        row = next(self._rows)
      except StopIteration:
        break
      except Exception as e:  # pylint: disable=broad-except
        self._fail(e)
        break
      if not shard_files.is_tar(self._shard.path):  # A tar sample may lack a member: skipped.
        check_columns(row, self._shard.path,
                      (self._shard.image_column, self._shard.text_column))
      if self._shard.kept is not None and self._key(row) not in self._shard.kept:
        continue  # Not curated: passed over, not corrupt.
      image, text, detail = check_row(row, self._shard.image_column, self._shard.text_column,
                                      self._shard.image_size)
      if image is None:
        where = shard_files.describe(self._shard.path, self._rows.get_state())
        if tar_samples.KEY in row:
          where = f"sample {row[tar_samples.KEY]!r}"
        self._shard.counts.record_skipped(text, self._shard.path, where, detail)
        continue
      self._usable += 1
      return {IMAGE_KEY: image, TEXT_KEY: text}
    self._finish()
    raise StopIteration

  def _key(self, row: dict) -> str:
    """The row's key in a keep-list (`keep_lists.py`)."""
    key = row.get(tar_samples.KEY, row.get(keep_lists.KEY_COLUMN))
    if key is not None:
      return keep_lists.pair_key(key)
    if self._row_starts is None:
      self._row_starts = shard_files.row_group_starts(self._shard.path)
    after = self._rows.get_state()
    return keep_lists.row_key(keep_lists.shard_name(self._shard.path),
                              self._row_starts[after["row_group"]]
                              + after["index_within_row_group"] - 1)

  def get_state(self) -> dict:
    return {"rows": None if self._rows is None else self._rows.get_state()}

  def set_state(self, state: dict) -> None:
    self._finished, self._usable = False, 0
    if state["rows"] is None:  # Failed before the checkpoint: no need to read it again.
      self._rows, self._finished = None, True
      return
    self._from_first_row = state["rows"] == shard_files.start_state(self._shard.path)
    try:
      if self._rows is None:
        self._rows = shard_files.open_rows(self._shard.path)
      self._rows.set_state(state["rows"])
    except Exception as e:  # pylint: disable=broad-except
      self._fail(e)


class _Shard(grain.IterDataset):
  """The usable records of one shard (those of `kept` keys only, unless `kept` is None)."""

  def __init__(self, path: str, image_column: str, text_column: str, image_size: int | None,
               counts: skip_counts.SkipCounts, kept: frozenset[str] | None = None):
    super().__init__()
    self.path, self.image_column, self.text_column = path, image_column, text_column
    self.image_size, self.counts, self.kept = image_size, counts, kept

  def __iter__(self) -> _ShardIterator:
    return _ShardIterator(self)

  def __str__(self) -> str:
    return f"WebShard({self.path})"


class _OpenShard:
  """path -> _Shard (a class, not a closure, so that worker processes can unpickle it)."""

  def __init__(self, data_config: ml_collections.ConfigDict, image_size: int | None,
               counts: skip_counts.SkipCounts, keep: dict[str, frozenset[str]] | None = None):
    self._columns = (data_config.get("image_column"), data_config.get("text_column"))
    self._image_size, self._counts, self._keep = image_size, counts, keep

  def __call__(self, path: str) -> _Shard:
    kept = None if self._keep is None else self._keep.get(keep_lists.shard_name(path),
                                                          frozenset())
    return _Shard(path, *columns(self._columns, path), self._image_size, self._counts, kept)


def columns(configured: tuple[str | None, str | None], path: str) -> tuple[str, str]:
  """The (image, text) fields of the shard at `path`: those configured, else img2dataset's
  (`shard_files.default_columns`)."""
  defaults = shard_files.default_columns(path)
  return tuple(c or d for c, d in zip(configured, defaults))


def load(data_config: ml_collections.ConfigDict, image_size: int | None = None,
         num_epochs: int | None = None) -> tuple[grain.IterDataset, skip_counts.SkipCounts]:
  """This process's records {'image': uint8 HxWx3 (image_size square if given), 'text': str},
  for `num_epochs` (None: forever), and the counts of what was skipped."""
  all_shards = shard_files.shard_paths(data_config)
  shards = shard_files.process_shards(all_shards)
  keep = None
  if data_config.get("keep_list"):
    keep = keep_lists.read(data_config.keep_list, map(keep_lists.shard_name, shards),
                           map(keep_lists.shard_name, all_shards))
  seed = int(data_config.get("shuffle_seed", 0))
  counts = skip_counts.SkipCounts(len(shards))
  # Shuffled before repeating: every epoch reads the shards in another order.
  per_shard = grain.MapDataset.source(shards).shuffle(seed=seed).repeat(num_epochs).map(
      _OpenShard(data_config, image_size, counts, keep))
  cycle_length = int(data_config.get("cycle_length", 16))
  if cycle_length < 1:
    raise errors.ConfigError(f"config.data.cycle_length={cycle_length} must be >= 1")
  records = grain.experimental.InterleaveIterDataset(
      per_shard, cycle_length=min(cycle_length, len(shards)))
  window = int(data_config.get("shuffle_window", 0))
  if window > 1:
    records = grain.experimental.WindowShuffleIterDataset(records, window_size=window,
                                                          seed=seed + 1)
  return records, counts


# ------------------------------------------------------------------------------ Tokenizer ---
def sample_texts(data_config: ml_collections.ConfigDict, limit: int) -> list[str]:
  """Up to `limit` non-empty texts of the first shards (in `shard_paths` order; with a
  `keep_list`, of its pairs only); unreadable shards are skipped with a warning."""
  if data_config.get("keep_list"):
    return _kept_texts(data_config, limit)
  texts = []
  for path in shard_files.shard_paths(data_config):
    _, column = columns((None, data_config.get("text_column")), path)
    try:
      if shard_files.is_tar(path):
        for row in tar_samples.TarSamples(path):
          text = row.get(column, b"").decode("utf-8", "replace")
          texts += [text] if text.strip() else []
          if len(texts) >= limit:
            return texts
        continue
      for batch in shard_files.parquet_file(path).iter_batches(columns=[column]):
        texts += [t for t in batch.column(0).to_pylist() if isinstance(t, str) and t.strip()]
        if len(texts) >= limit:
          return texts[:limit]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Skipped shard %s for the tokenizer sample (%s: %s)", path,
                      type(e).__name__, e)
  return texts


def _kept_texts(data_config: ml_collections.ConfigDict, limit: int) -> list[str]:
  """`sample_texts` of the pairs the keep-list names (read as the curation reads them)."""
  shards = shard_files.shard_paths(data_config)
  names = [keep_lists.shard_name(p) for p in shards]
  keep = keep_lists.read(data_config.keep_list, names, names)
  texts = []
  for path, name in zip(shards, names):
    if name in keep:
      pairs, _ = pool_shards.read_pairs(path, data_config.get("image_column"),
                                        data_config.get("text_column"))
      texts += [text for key, text in pairs if key in keep[name]]
      if len(texts) >= limit:
        return texts[:limit]
  return texts


def prepare_tokenizer(data_config: ml_collections.ConfigDict) -> str:
  """Trains the SentencePiece model of `config.data.tokenizer` on the first shards' captions
  (`config.data.tokenizer_sample` of them) unless that file exists; returns its path."""
  if not data_config.get("tokenizer"):
    raise errors.ConfigError(
        "config.data.tokenizer is unset: web shards keep no tokenizer of their own. Set it to "
        "the SentencePiece .model file to train (e.g. gs://my-bucket/laion400m/tokenizer.model) or "
        "to an existing one")
  if tokenizer_lib.is_builtin(data_config.tokenizer):  # CLIP's BPE, or big_vision's: no training.
    return data_config.tokenizer
  path = paths.path(data_config.tokenizer)
  if path.exists():
    return str(path)
  limit = int(data_config.get("tokenizer_sample", 1_000_000))
  texts = sample_texts(data_config, limit)
  if not texts:
    column = data_config.get("text_column") or "caption (tar: txt)"
    raise records.DataError(f"the shards of config.data.shards hold no readable {column!r} "
                            "text to train the tokenizer on: check the shards and "
                            "config.data.text_column")
  logging.info("Training a tokenizer on %d captions of the first shards", len(texts))
  model = tokenizer_lib.train(texts, vocab_size=int(data_config.tokenizer_vocab_size))
  path.parent.mkdir(parents=True, exist_ok=True)
  paths.write_atomic(path, model)  # A crash never leaves half a tokenizer.
  logging.info("Wrote a %d-piece tokenizer to %s", tokenizer_lib.Tokenizer(model).vocab_size,
               path)
  return str(path)


# ---------------------------------------------------------------------------- The source ---
class WebShards(source_base.Source):
  """img2dataset's parquet shards: read in order, corrupt records skipped and counted (never
  verified up front), never prepared beyond the tokenizer (`config.data.tokenizer`, required:
  there is no data set directory to keep one in)."""

  PIPELINE_FIELDS = source_base.PIPELINE_FIELDS + ("cycle_length", "shuffle_window")

  def prepare_command(self) -> str:
    return ("python -m ig_captioner.data.prepare --config=<your config> (it trains "
            f"config.data.tokenizer={self.config.get('tokenizer')} from the shards' captions)")

  def location(self) -> str:
    return str(self.config.get("shards"))

  def is_prepared(self, with_tokenizer: bool) -> bool:
    tokenizer = self.config.get("tokenizer")
    return not with_tokenizer or bool(tokenizer) and (tokenizer_lib.is_builtin(tokenizer)
                                                      or paths.path(tokenizer).exists())

  def prepare(self, verify: bool = False, with_tokenizer: bool = True) -> str:
    del verify  # Records are checked as they are read.
    return prepare_tokenizer(self.config) if with_tokenizer else self.location()

  def caption_texts(self, split: str, limit: int) -> list[str]:
    del split  # Shards hold one split, read for training.
    return sample_texts(self.config, limit)

  def tokenizer(self) -> tokenizer_lib.Tokenizer:
    if not self.config.get("tokenizer"):
      raise errors.ConfigError("config.data.tokenizer is unset; web shards need one: set it to "
                               "a SentencePiece .model path, which `prepare` trains if missing")
    if tokenizer_lib.is_builtin(self.config.tokenizer):
      return tokenizer_lib.from_setting(self.config.tokenizer)
    return tokenizer_lib.stored(paths.path(self.config.tokenizer),
                                f"train it with {self.prepare_command()}")

  def open_split(self, split: str) -> records.CheckedSource:
    raise records.DataError(
        f"config.data.name='web_shards' names parquet shards, which only the train pipeline "
        f"reads (asked for split {split!r}); evaluators and text_only_split need a TFDS data set: "
        "name one in their `data` override")

  def verify_split(self, split: str, force: bool = False) -> None:
    del split, force  # Corrupt records are skipped and counted while reading.

  def train_records(self, split: str, seed: int, image_size: int):
    del split, seed  # The shards are the data; their order comes from config.data.shuffle_seed.
    return load(self.config, image_size=image_size)

  def record_keys(self) -> tuple[str, str]:
    return IMAGE_KEY, TEXT_KEY
