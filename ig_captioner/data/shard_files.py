"""Where web shards are and how their bytes are read: shard lists from paths, globs and
`{00000..41407}` ranges, one process's share of them, and each shard's rows, from a parquet
file or a webdataset tar (`tar_samples.py`), read through `paths` (etils.epath), so that local
files and `gs://`/`s3://` URIs work alike.
"""

import itertools
import re
from typing import Sequence

import grain
import jax
import ml_collections
import pyarrow
import pyarrow.fs
import pyarrow.parquet

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import records
from ig_captioner.data import tar_samples

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


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
    raise records.DataError(f"no file matches {pattern!r} (in config.data.shards): check the "
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


def is_tar(path: str) -> bool:
  """Whether the shard at `path` is a webdataset tar (else img2dataset's parquet)."""
  return path.endswith((".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz"))


def default_columns(path: str) -> tuple[str, str]:
  """img2dataset's (image, text) fields: parquet columns 'jpg', 'caption'; tar members' 'jpg',
  'txt'."""
  return ("jpg", "txt") if is_tar(path) else ("jpg", "caption")


def open_rows(path: str):
  """One shard's rows as dicts, an iterator with `get_state`/`set_state`: a parquet file's
  rows by column, or a tar's samples by member extension (`tar_samples.TarSamples`)."""
  return tar_samples.TarSamples(path) if is_tar(path) else iter(parquet_rows(path))


def start_state(path: str) -> dict:
  """The state of `open_rows(path)` before its first row."""
  return tar_samples.START if is_tar(path) else {"row_group": 0, "index_within_row_group": 0}


def row_group_starts(path: str) -> list[int]:
  """The number (from 0) of the first row of each row group of a parquet shard, and the row
  count last: a row's number from the reader's state (keep-lists name rows without a key so)."""
  metadata = parquet_file(path).metadata
  return list(itertools.accumulate(
      (metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)), initial=0))


def describe(path: str, after: dict) -> str:
  """Which row was read last, given the state `after` it (for messages)."""
  if is_tar(path):
    return f"the sample before byte {after['offset']}" if after["offset"] is not None \
        else "the last sample"
  return f"row {after['index_within_row_group'] - 1} of row group {after['row_group']}"


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
