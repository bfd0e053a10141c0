"""Converts img2dataset shards (parquet or webdataset tar) to ArrayRecord files, for random
access (global shuffles, `grain.sources.ArrayRecordDataSource`), keeping only the records that
`web_shards` would use.

    python -m ig_captioner.data.shards_to_array_record --shards='dir/*.parquet' --output=DIR

The shards and DIR may lie in a bucket (each file is written to a local scratch directory
first, since the ArrayRecord writer takes a local path, then copied).
Each readable shard `NAME.parquet` (or `NAME.tar`) becomes `DIR/NAME.array_record`; every
record in it is a usable row (its image decodes, its text is not empty) stored as
`array_records.encode_record` lays it out: the encoded image bytes as downloaded and the text.
Corrupt records and unreadable shards are skipped, counted per reason and printed. Read it back
with `array_records.decode_record`.
"""

import itertools

from absl import flags
import ml_collections

from ig_captioner import cli
from ig_captioner import paths
from ig_captioner.data import array_records
from ig_captioner.data import shard_files
from ig_captioner.data import skip_counts
from ig_captioner.data import tar_samples
from ig_captioner.data import web_shards


def convert_shard(path: str, output_dir: str, image_column: str | None, text_column: str | None,
                  counts: skip_counts.SkipCounts) -> int:
  """Writes the usable records of one shard (those before a failed read, if one fails); returns
  how many. A shard that does not open writes no file. Columns None: img2dataset's."""
  image_column, text_column = web_shards.columns((image_column, text_column), path)
  try:
    rows = shard_files.open_rows(path)
  except Exception as e:  # pylint: disable=broad-except  # pyarrow raises many types.
    counts.shard_failed(path, e)
    return 0
  target = paths.path(output_dir) / (paths.path(path).name.split(".", 1)[0] + ".array_record")
  with array_records.writing(target) as write:
    return _write_records(rows, path, write, image_column, text_column, counts)


def _write_records(rows, path: str, write, image_column: str, text_column: str,
                   counts: skip_counts.SkipCounts) -> int:
  written = 0
  for i in itertools.count():
    try:
      row = next(rows)
    except StopIteration:
      break
    except Exception as e:  # pylint: disable=broad-except
      counts.shard_failed(path, e)
      break
    if not shard_files.is_tar(path):  # A tar sample may lack a member: skipped below.
      web_shards.check_columns(row, path, (image_column, text_column))
    image, text, detail = web_shards.check_row(row, image_column, text_column)
    if image is None:
      where = (f"sample {row[tar_samples.KEY]!r}" if tar_samples.KEY in row else f"row {i}")
      counts.record_skipped(text, path, where, detail)
      continue
    write(array_records.encode_record(bytes(row[image_column]), text))
    written += 1
  return written


def convert(shards, output_dir: str, image_column: str | None = None,
            text_column: str | None = None) -> tuple[int, skip_counts.SkipCounts]:
  """Converts every shard of `shards` (as `config.data.shards` takes them); returns the records
  written and the counts of what was skipped."""
  shard_list = shard_files.shard_paths(ml_collections.ConfigDict(dict(shards=shards)))
  paths.path(output_dir).mkdir(parents=True, exist_ok=True)
  counts = skip_counts.SkipCounts(len(shard_list))
  written = sum(convert_shard(p, output_dir, image_column, text_column, counts)
                for p in shard_list)
  return written, counts


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  shards = flags.DEFINE_string("shards", None, "Parquet or tar shards: paths, globs or {a..b} "
                               "ranges, comma-separated.")
  output = flags.DEFINE_string("output", None, "Directory for the .array_record files.")
  image_column = flags.DEFINE_string("image_column", None, "Column (tar: member extension) of "
                                     "the encoded images; default img2dataset's, jpg.")
  text_column = flags.DEFINE_string("text_column", None, "Column (tar: member extension) of "
                                    "the texts; default img2dataset's, caption (tar: txt).")
  flags.mark_flags_as_required(["shards", "output"])

  def run(argv):
    del argv
    written, counts = convert(shards.value, output.value, image_column.value, text_column.value)
    print(f"Wrote {written} records to {output.value}; skipped: {counts.totals()}")
  cli.run(run)


if __name__ == "__main__":
  main()
