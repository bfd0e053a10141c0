"""Web-scale image-text shards: img2dataset's parquet output read as a grain IterDataset.

img2dataset (`--output_format parquet`) writes shards `00000.parquet`, `00001.parquet`, ...
with one row per downloaded example: `url`, `caption`, `jpg` (the encoded image) and a few
more columns. This source reads them with grain's `ParquetIterDataset`, one shard per stream,
interleaved; it is deterministic, resumable from the iterator state and split over processes.

    config.data = dict(
        name="web_shards",
        shards="gs://bucket/laion/{00000..41407}.parquet",  # or a list; globs and ranges
        image_column="jpg", text_column="caption",  # (the defaults)
        cycle_length=16,      # shards read at once, each by its prefetch thread (default 16)
        shuffle_window=1024,  # decoded examples shuffled in windows of this many (default 0: off)
        shuffle_seed=0,       # shard order (permuted again every epoch) and window shuffle
        tokenizer="gs://bucket/laion/tokenizer.model",  # trained by `prepare` if missing
        tokenizer_vocab_size=32_000,
        tokenizer_sample=1_000_000)  # captions of the first shards that train it (default)

`shards` holds paths, glob patterns (`dir/*.parquet`) or `{00000..00099}` ranges, as a list or
one comma-separated string. Shard i (in that order, each pattern's matches sorted) goes to
process i % process_count. Globs are listed and shards read through `paths` (etils.epath), so
local files and `gs://`/`s3://` URIs work alike.

Corrupt data never stops a run and is never silent: a record whose image does not decode, or
whose text is empty, is skipped; a shard that cannot be read (truncated, missing) is skipped
from the first bad read on. Each skip is counted per reason in a `SkipCounts` and logged (the
first few of each reason, then at each power of ten). Only if no shard yields a single usable
record does reading stop, with a DataError. Skipping depends on the bytes alone, so the order
and the iterator state stay deterministic.
"""

import collections
import io
import re
import threading
from typing import Sequence

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import pyarrow
import pyarrow.fs
import pyarrow.parquet

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import pipeline
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib

NAME = sources.WEB_SHARDS
# Record skip reasons, and the shard-level one.
NO_IMAGE, BAD_IMAGE, NO_TEXT = "missing_image", "undecodable_image", "empty_text"
UNREADABLE_SHARD = "unreadable_shard"
IMAGE_KEY, TEXT_KEY = "image", "text"  # Of the records `load` yields.
_WARN_FIRST = 5  # Warnings logged per reason before only powers of ten are.
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


class SkipCounts:
  """Thread-safe counts of what was skipped, per reason, for the trainer to log.

  Counts are of skips (a record skipped in every epoch counts in each), except
  `unreadable_shards`: distinct shards. They are this process's since it started (with
  `num_workers` > 0, each worker process counts and logs its own); a resumed run counts anew.
  """

  def __init__(self, num_shards: int = 0):
    self._num_shards = num_shards
    self._lock = threading.Lock()
    self._counts = collections.Counter()
    self._unreadable = {}  # Shard path -> the error of its first failed read.
    self._first_pass_records = {}  # Shard path -> usable records of a pass from its first row.

  def __getstate__(self):  # Pickled into grain's worker processes; a lock does not pickle.
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())

  def snapshot(self) -> dict[str, int]:
    """{reason: count} of the skipped records and failed shard reads."""
    with self._lock:
      return dict(self._counts)

  def totals(self) -> dict[str, int]:
    """For the trainer's log: corrupt_records, unreadable_shards and each reason's count."""
    return dict(corrupt_records=self.corrupt_records, unreadable_shards=self.unreadable_shards,
                **self.snapshot())

  @property
  def corrupt_records(self) -> int:
    with self._lock:
      return sum(n for reason, n in self._counts.items() if reason != UNREADABLE_SHARD)

  @property
  def unreadable_shards(self) -> int:
    """Distinct shards that failed a read."""
    with self._lock:
      return len(self._unreadable)

  def record_skipped(self, reason: str, shard: str, where: str, detail: str = "") -> None:
    with self._lock:
      self._counts[reason] += 1
      n = self._counts[reason]
    if _should_warn(n):
      logging.warning("Skipped %s of %s: %s%s (%d such records so far in this process)",
                      where, shard, reason, f" ({detail})" if detail else "", n)

  def shard_failed(self, shard: str, error: Exception) -> None:
    with self._lock:
      self._counts[UNREADABLE_SHARD] += 1
      n = self._counts[UNREADABLE_SHARD]
      self._unreadable.setdefault(shard, f"{type(error).__name__}: {error}")
    if _should_warn(n):
      logging.warning("Skipped the rest of shard %s, which cannot be read (%s: %s); %d failed "
                      "shard reads so far in this process", shard, type(error).__name__, error, n)

  def pass_finished(self, shard: str, usable_records: int) -> None:
    """Notes a read of `shard` from its first row to its end (or failure); raises DataError
    once every shard of this process was read whole without a usable record."""
    with self._lock:
      self._first_pass_records[shard] = max(self._first_pass_records.get(shard, 0),
                                            usable_records)
      passes = dict(self._first_pass_records)
      unreadable, counts = dict(self._unreadable), dict(self._counts)
    if len(passes) < self._num_shards or any(passes.values()):
      return
    failed = "; ".join(f"{path}: {error}" for path, error in list(unreadable.items())[:3])
    raise sources.DataError(
        f"none of the {self._num_shards} shards of this process holds a usable record "
        f"(skipped: {counts}{'; unreadable: ' + failed if failed else ''}). Check "
        "config.data.shards (truncated or missing files?), config.data.image_column and "
        "config.data.text_column")


def _should_warn(n: int) -> bool:
  return n <= _WARN_FIRST or str(n).rstrip("0") == "1"  # 1-5, then 10, 100, 1000, ...


# ---------------------------------------------------------------------------- Shard paths ---
def _expand_ranges(pattern: str) -> list[str]:
  """'a/{08..10}.parquet' -> ['a/08.parquet', 'a/09.parquet', 'a/10.parquet']."""
  match = _RANGE.search(pattern)
  if not match:
    return [pattern]
  first, last = match.groups()
  out = []
  for i in range(int(first), int(last) + 1):
    out += _expand_ranges(pattern[:match.start()] + str(i).zfill(len(first)) +
                          pattern[match.end():])
  return out


def _glob(pattern: str) -> list[str]:
  """The sorted matches of a glob pattern (through epath: local or remote), or [pattern]."""
  first_wildcard = min((pattern.find(c) for c in "*?[" if c in pattern), default=-1)
  if first_wildcard < 0:
    return [pattern]
  base, _, relative = pattern[:first_wildcard].rpartition("/")
  relative += pattern[first_wildcard:]
  matches = sorted(str(p) for p in paths.path(base or ".").glob(relative))
  if not matches:
    raise sources.DataError(f"no file matches {pattern!r} (in config.data.shards): check the "
                            "pattern, and that the shards were written there")
  return matches


def shard_paths(data_config: ml_collections.ConfigDict) -> list[str]:
  """All shards of `config.data.shards`, in a fixed order (duplicates dropped)."""
  patterns = data_config.get("shards")
  if isinstance(patterns, str):
    patterns = [p.strip() for p in patterns.split(",") if p.strip()]
  if not patterns:
    raise errors.ConfigError(
        "config.data.shards is empty: set it to img2dataset's parquet shards, e.g. "
        "--config.data.shards='gs://my-bucket/laion400m/*.parquet'")
  found = [path for pattern in patterns for expanded in _expand_ranges(str(pattern))
           for path in _glob(expanded)]
  return list(dict.fromkeys(found))


def process_shards(all_shards: Sequence[str]) -> list[str]:
  """This process's shards: i goes to process i % process_count."""
  count = jax.process_count()
  if len(all_shards) < count:
    raise errors.ConfigError(
        f"{len(all_shards)} shards cannot feed {count} processes (each reads whole shards, and "
        "needs at least one): add shards to config.data.shards (img2dataset writes more, "
        "smaller ones with a lower --number_sample_per_shard) or run on fewer processes")
  return list(all_shards[jax.process_index()::count])


class _EpathFiles(pyarrow.fs.FileSystemHandler):
  """pyarrow reads a shard's bytes through `paths` (etils.epath), local or in a bucket; only
  reading is supported."""

  def get_type_name(self):
    return "epath"

  def normalize_path(self, path):
    return path

  def open_input_file(self, path):
    return pyarrow.PythonFile(paths.path(path).open("rb"), mode="r")

  def open_input_stream(self, path):
    return self.open_input_file(path)

  def _refuse(self, *unused_args, **unused_kwargs):
    raise NotImplementedError("web shards are only read")

  get_file_info = get_file_info_selector = create_dir = delete_dir = _refuse
  delete_dir_contents = delete_root_dir_contents = delete_file = move = copy_file = _refuse
  open_output_stream = open_append_stream = _refuse


def parquet_rows(path: str) -> grain.IterDataset:
  """grain's ParquetIterDataset of one shard, its bytes read through `paths`."""
  return grain.experimental.ParquetIterDataset(
      path, filesystem=pyarrow.fs.PyFileSystem(_EpathFiles()))


def parquet_file(path: str) -> "pyarrow.parquet.ParquetFile":
  return pyarrow.parquet.ParquetFile(path, filesystem=pyarrow.fs.PyFileSystem(_EpathFiles()))


# -------------------------------------------------------------------------------- Records ---
def check_row(row: dict, image_column: str, text_column: str,
              image_size: int | None = None) -> tuple[np.ndarray | None, str, str]:
  """(uint8 RGB HxWx3 image resized to image_size if given, text, '') of a usable row, else
  (None, the reason it is unusable, details)."""
  text = row[text_column]
  text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
  if not isinstance(text, str) or not text.strip():
    return None, NO_TEXT, ""
  encoded = row[image_column]
  if encoded is None or not len(encoded):
    return None, NO_IMAGE, ""
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      image_HxWx3 = np.asarray(image.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types.
    return None, BAD_IMAGE, f"{type(e).__name__}: {e}"
  if image_size:
    image_HxWx3 = pipeline.resize_image(image_HxWx3, image_size)
  return image_HxWx3, text, ""


def check_columns(row: dict, shard: str, columns: Sequence[str]) -> None:
  missing = [c for c in columns if c not in row]
  if missing:
    raise sources.DataError(
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
    try:
      self._rows = iter(parquet_rows(shard.path))
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
      check_columns(row, self._shard.path, (self._shard.image_column, self._shard.text_column))
      image, text, detail = check_row(row, self._shard.image_column, self._shard.text_column,
                                      self._shard.image_size)
      if image is None:
        after = self._rows.get_state()  # The position after the row just read.
        self._shard.counts.record_skipped(
            text, self._shard.path,
            f"row {after['index_within_row_group'] - 1} of row group {after['row_group']}",
            detail)
        continue
      self._usable += 1
      return {IMAGE_KEY: image, TEXT_KEY: text}
    self._finish()
    raise StopIteration

  def get_state(self) -> dict:
    return {"rows": None if self._rows is None else self._rows.get_state()}

  def set_state(self, state: dict) -> None:
    self._finished, self._usable = False, 0
    if state["rows"] is None:  # Failed before the checkpoint: no need to read it again.
      self._rows, self._finished = None, True
      return
    self._from_first_row = state["rows"] == {"row_group": 0, "index_within_row_group": 0}
    try:
      if self._rows is None:
        self._rows = iter(parquet_rows(self._shard.path))
      self._rows.set_state(state["rows"])
    except Exception as e:  # pylint: disable=broad-except
      self._fail(e)


class _Shard(grain.IterDataset):
  """The usable records of one parquet shard."""

  def __init__(self, path: str, image_column: str, text_column: str, image_size: int | None,
               counts: SkipCounts):
    super().__init__()
    self.path, self.image_column, self.text_column = path, image_column, text_column
    self.image_size, self.counts = image_size, counts

  def __iter__(self) -> _ShardIterator:
    return _ShardIterator(self)

  def __str__(self) -> str:
    return f"WebShard({self.path})"


class _OpenShard:
  """path -> _Shard (a class, not a closure, so that worker processes can unpickle it)."""

  def __init__(self, data_config: ml_collections.ConfigDict, image_size: int | None,
               counts: SkipCounts):
    self._columns = (data_config.get("image_column", "jpg"),
                     data_config.get("text_column", "caption"))
    self._image_size, self._counts = image_size, counts

  def __call__(self, path: str) -> _Shard:
    return _Shard(path, *self._columns, self._image_size, self._counts)


def load(data_config: ml_collections.ConfigDict, image_size: int | None = None,
         num_epochs: int | None = None) -> tuple[grain.IterDataset, SkipCounts]:
  """This process's records {'image': uint8 HxWx3 (image_size square if given), 'text': str},
  for `num_epochs` (None: forever), and the counts of what was skipped."""
  shards = process_shards(shard_paths(data_config))
  seed = int(data_config.get("shuffle_seed", 0))
  counts = SkipCounts(len(shards))
  # Shuffled before repeating: every epoch reads the shards in another order.
  per_shard = grain.MapDataset.source(shards).shuffle(seed=seed).repeat(num_epochs).map(
      _OpenShard(data_config, image_size, counts))
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
  """Up to `limit` non-empty texts of the first shards (in `shard_paths` order); unreadable
  shards are skipped with a warning."""
  column = data_config.get("text_column", "caption")
  texts = []
  for path in shard_paths(data_config):
    try:
      for batch in parquet_file(path).iter_batches(columns=[column]):
        texts += [t for t in batch.column(0).to_pylist() if isinstance(t, str) and t.strip()]
        if len(texts) >= limit:
          return texts[:limit]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Skipped shard %s for the tokenizer sample (%s: %s)", path,
                      type(e).__name__, e)
  return texts


def prepare_tokenizer(data_config: ml_collections.ConfigDict) -> str:
  """Trains the SentencePiece model of `config.data.tokenizer` on the first shards' captions
  (`config.data.tokenizer_sample` of them) unless that file exists; returns its path."""
  if not data_config.get("tokenizer"):
    raise errors.ConfigError(
        "config.data.tokenizer is unset: web shards keep no tokenizer of their own. Set it to "
        "the SentencePiece .model file to train (e.g. gs://my-bucket/laion400m/tokenizer.model) or "
        "to an existing one")
  path = paths.path(data_config.tokenizer)
  if path.exists():
    return str(path)
  limit = int(data_config.get("tokenizer_sample", 1_000_000))
  texts = sample_texts(data_config, limit)
  if not texts:
    raise sources.DataError(f"the shards of config.data.shards hold no readable "
                            f"{data_config.get('text_column', 'caption')!r} text to train the "
                            "tokenizer on: check the shards and config.data.text_column")
  logging.info("Training a tokenizer on %d captions of the first shards", len(texts))
  model = tokenizer_lib.train(texts, vocab_size=int(data_config.tokenizer_vocab_size))
  path.parent.mkdir(parents=True, exist_ok=True)
  paths.write_atomic(path, model)  # A crash never leaves half a tokenizer.
  logging.info("Wrote a %d-piece tokenizer to %s", tokenizer_lib.Tokenizer(model).vocab_size,
               path)
  return str(path)

