"""Keep-lists: which pairs of a pool of web shards a curation kept (`curate.py` writes them,
`web_shards` reads only those pairs when `config.data.keep_list` names one), so that training
reads a curated set straight from the raw shards without rewriting them.

A keep-list is a UTF-8 text file, one kept pair a line, `SHARD<TAB>KEY`: the shard's file name
(`00042.tar`) and the pair's key within it (img2dataset's `key`: a parquet shard's `key`
column, a tar sample's member stem; for a parquet shard without one, `SHARD#ROW`, the row's
number from 0). Lines starting with `#` are comments; the order of lines is of no meaning.
"""

import collections
from typing import Iterable

from ig_captioner import errors
from ig_captioner import paths

KEY_COLUMN = "key"  # img2dataset's parquet column of each pair's key (tars: the member stem).
COMMENT = "#"


def pair_key(value) -> str:
  """A pair's key as a keep-list spells it (img2dataset writes strings; a number is read as
  one)."""
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def row_key(shard_name: str, row: int) -> str:
  """The key of row `row` of a parquet shard that has no `key` column."""
  return f"{shard_name}#{row}"


def writable(key: str) -> bool:
  """Whether a keep-list line can hold `key` (no tab, no line break)."""
  return not any(c in key for c in "\t\n\r")


def line(shard_name: str, key: str) -> str:
  return f"{shard_name}\t{key}"


def shard_name(path: str) -> str:
  """The name a keep-list gives the shard at `path`: its file name."""
  return path.rstrip("/").rpartition("/")[2]


def read(path: str, shard_names: Iterable[str],
         pool_names: Iterable[str]) -> dict[str, frozenset[str]]:
  """{shard name: its kept keys} of the keep-list at `path`, for the shards `shard_names` only
  (a process holds its own shards' keys); ConfigError if the file is unreadable or malformed,
  or if it names pairs but none of the shards `pool_names` (a keep-list of another pool)."""
  wanted, pool = set(shard_names), set(pool_names)
  kept = collections.defaultdict(set)
  named, of_pool = None, False  # A shard the file names; whether one is of the pool.
  try:
    with paths.path(path).open("rb") as f:
      for number, raw in enumerate(f, 1):
        text = raw.decode("utf-8").rstrip("\r\n")
        if not text or text.startswith(COMMENT):
          continue
        shard, tab, key = text.partition("\t")
        if not tab:
          raise errors.ConfigError(
              f"line {number} of the keep-list {path} is not 'SHARD<TAB>KEY' ({text[:80]!r}): "
              "config.data.keep_list takes the keep_list.tsv a curation wrote")
        named, of_pool = shard, of_pool or shard in pool
        if shard in wanted:
          kept[shard].add(key)
  except FileNotFoundError as e:
    raise errors.ConfigError(f"config.data.keep_list={path} does not exist: set it to the "
                             "keep_list.tsv of a curation (python -m ig_captioner.data.curate)"
                             ) from e
  except UnicodeDecodeError as e:
    raise errors.ConfigError(f"the keep-list {path} is not UTF-8 text ({e}): "
                             "config.data.keep_list takes the keep_list.tsv a curation wrote"
                             ) from e
  if named is not None and not of_pool:
    raise errors.ConfigError(
        f"the keep-list {path} names none of the shards of config.data.shards (it names e.g. "
        f"{named!r}): it was written for another pool of shards")
  return {shard: frozenset(keys) for shard, keys in kept.items()}
