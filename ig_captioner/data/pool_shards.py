"""A raw pool's shards as the curation (`curate.py`) reads and writes them: each shard's usable
pairs (key, caption), with what was skipped counted, and a shard's kept pairs written out as
parquet or ArrayRecord. Shards are img2dataset's parquet files or webdataset tars, read through
`shard_files` and `tar_samples` (local or `gs://`), as `web_shards` reads them for training.

A pair is usable when its caption is non-blank UTF-8 text, its image is present and its key
fits a keep-list line. Images are not decoded here: one that does not decode is skipped (and
counted) by the reader that trains on it.
"""

import collections
from typing import Iterator

from absl import logging
import pyarrow as pa
import pyarrow.parquet as pq

from ig_captioner import paths
from ig_captioner.data import array_records
from ig_captioner.data import keep_lists
from ig_captioner.data import records
from ig_captioner.data import shard_files
from ig_captioner.data import skip_counts
from ig_captioner.data import tar_samples

PAIRS = "pairs"  # Usable pairs; the other counts are skip_counts' reasons and these two:
BAD_KEY, UNREADABLE_SHARDS = "unwritable_key", "unreadable_shards"
OUTPUT_FORMATS = ("parquet", "array_record")
_BATCH_ROWS = 1024


def columns(path: str, image_column: str | None, text_column: str | None) -> tuple[str, str]:
  """The (image, text) fields of the shard at `path`: those given, else img2dataset's."""
  defaults = shard_files.default_columns(path)
  return image_column or defaults[0], text_column or defaults[1]


def _text(value) -> str | None:
  """A caption as text, or None if it is not text (not UTF-8, not a string) or blank."""
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError:
      return None
  return value if isinstance(value, str) and value.strip() else None


def _parquet_rows(path: str, wanted: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
  """(key, {column: value}) of each row of a parquet shard, the columns `wanted`."""
  name = keep_lists.shard_name(path)
  table_file = shard_files.parquet_file(path)
  names = table_file.schema_arrow.names
  missing = [c for c in wanted if c not in names]
  if missing:
    raise records.DataError(f"shard {path} has no column {missing}; its columns are {names}: "
                            "set --image_column / --text_column to the right ones")
  read = list(wanted) + ([keep_lists.KEY_COLUMN] if keep_lists.KEY_COLUMN in names else [])
  row = 0
  for batch in table_file.iter_batches(batch_size=_BATCH_ROWS, columns=read):
    values = batch.to_pydict()
    keys = values.get(keep_lists.KEY_COLUMN, [None] * batch.num_rows)
    for i in range(batch.num_rows):
      key = keys[i]
      key = keep_lists.row_key(name, row) if key is None else keep_lists.pair_key(key)
      yield key, {c: values[c][i] for c in wanted}
      row += 1


def _tar_rows(path: str) -> Iterator[tuple[str, dict]]:
  for row in tar_samples.TarSamples(path):
    yield keep_lists.pair_key(row[tar_samples.KEY]), row


def _rows(path: str, image_column: str, text_column: str) -> Iterator[tuple[str, dict]]:
  if shard_files.is_tar(path):
    return _tar_rows(path)
  return _parquet_rows(path, (image_column, text_column))


def read_pairs(path: str, image_column: str | None = None, text_column: str | None = None
               ) -> tuple[list[tuple[str, str]], collections.Counter]:
  """((key, caption) of the usable pairs of the shard at `path`, in order; {PAIRS: how many,
  skip reason: how many skipped, UNREADABLE_SHARDS: 1 if a read failed}). A shard that fails
  to read keeps the pairs read before (as `web_shards` reads it); DataError for a shard that
  lacks a column or is a compressed tar (the whole pool needs fixing)."""
  image_column, text_column = columns(path, image_column, text_column)
  pairs, counts = [], collections.Counter()
  try:
    for key, row in _rows(path, image_column, text_column):
      text, image = _text(row.get(text_column)), row.get(image_column)
      reason = (skip_counts.NO_TEXT if text is None else skip_counts.NO_IMAGE if not image
                else None if keep_lists.writable(key) else BAD_KEY)
      if reason:
        counts[reason] += 1
        continue
      pairs.append((key, text))
  except records.DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # pyarrow and tarfile raise many types.
    counts[UNREADABLE_SHARDS] += 1
    logging.warning("Skipped the rest of shard %s, which cannot be read (%s: %s)", path,
                    type(e).__name__, e)
  counts[PAIRS] += len(pairs)
  return pairs, counts


# ------------------------------------------------------------------------- Curated shards ---
def output_name(path: str, output_format: str) -> str:
  """'pool/00042.tar' -> '00042.parquet' (or '00042.array_record')."""
  stem = keep_lists.shard_name(path).split(".", 1)[0]
  return f"{stem}.{output_format}"


def write_kept(path: str, kept_keys: set[str], output_dir: str, output_format: str,
               image_column: str | None = None, text_column: str | None = None) -> int:
  """Writes the pairs of the shard at `path` whose keys are in `kept_keys`, in the shard's order,
  to `output_dir/output_name(path)`: parquet (a parquet shard's columns, or a tar's as
  img2dataset's parquet names them: key, caption, and the image's extension) or ArrayRecord
  (`array_records.encode_record`). Returns how many."""
  image_column, text_column = columns(path, image_column, text_column)
  kept = []
  try:
    for key, row in _rows(path, image_column, text_column):
      text, image = _text(row.get(text_column)), row.get(image_column)
      if key in kept_keys and text is not None and image:  # A repeated key: its usable pair.
        kept.append((key, text, bytes(image)))
  except records.DataError:
    raise
  except Exception:  # pylint: disable=broad-except  # As read_pairs stopped: kept is complete.
    pass
  target = paths.path(output_dir) / output_name(path, output_format)
  if output_format == "array_record":
    with array_records.writing(target) as write:
      for _, text, image in kept:
        write(array_records.encode_record(image, text))
  elif shard_files.is_tar(path):
    table = pa.table({keep_lists.KEY_COLUMN: [k for k, _, _ in kept],
                      "caption": [t for _, t, _ in kept],
                      image_column: pa.array([i for _, _, i in kept], pa.binary())})
    with paths.open_whole(target) as f:
      pq.write_table(table, f)
  else:
    _write_parquet_rows(path, set(k for k, _, _ in kept), target)
  return len(kept)


def _write_parquet_rows(path: str, kept_keys: set[str], target) -> None:
  """The rows of parquet shard `path` with kept keys, every column, to `target`."""
  name = keep_lists.shard_name(path)
  table = shard_files.parquet_file(path).read()
  if keep_lists.KEY_COLUMN in table.column_names:
    keys = [None if k is None else keep_lists.pair_key(k)
            for k in table.column(keep_lists.KEY_COLUMN).to_pylist()]
  else:
    keys = [None] * table.num_rows
  keys = [keep_lists.row_key(name, i) if k is None else k for i, k in enumerate(keys)]
  table = table.filter(pa.array([k in kept_keys for k in keys], pa.bool_()))
  with paths.open_whole(target) as f:
    pq.write_table(table, f)

