"""Up-front checks that every record of a prepared split reads and decodes, so that a corrupt
record stops a run before its first step instead of hours into it.

A split that passed is recorded in `verified.json` beside the data (its files' sizes and
modification times), and later runs skip it until the files change. Bit rot changes neither:
`python -m ig_captioner.data.prepare --config=... --verify` checks every split again regardless.
Each process checks its own slice of the records; all processes agree on the outcome.
"""

import json

from absl import logging
import jax

from ig_captioner import multihost
from ig_captioner import paths
from ig_captioner.data import records

MARKER_FILENAME = "verified.json"
_BATCH = 1000  # Records per batched read.


def _file_stats(data_path: str, split: str) -> dict[str, list[int]]:
  """{file name: [size, mtime]} for the split's data files."""
  stats = {}
  for file_path in sorted(paths.path(data_path).iterdir()):
    if f"-{split}." in file_path.name:
      st = file_path.stat()
      stats[file_path.name] = [int(st.length), int(st.mtime)]
  return stats


def _read_marker(path: str) -> dict:
  try:
    return json.loads(paths.path(path).read_text())
  except Exception:  # pylint: disable=broad-except  # Missing or torn: verified again.
    return {}


def verify_split(source: records.CheckedSource, data_path: str, split: str, *,
                 force: bool = False) -> None:
  """Reads every record of `split` (`source`, whose files lie in `data_path`); raises DataError
  naming the unreadable ones and the fix.

  Skipped if `verified.json` says the split's files passed before and have not changed since.
  """
  marker_path = paths.join(data_path, MARKER_FILENAME)
  stats = _file_stats(data_path, split)
  marker = _read_marker(marker_path)
  if not force and marker.get(split) == stats:
    return
  logging.info("Verifying the %d records of %s (once; `prepare --verify` checks again)",
               len(source), source.description)
  bad = []
  mine = range(jax.process_index(), len(source), jax.process_count())
  for start in range(0, len(mine), _BATCH):
    bad += source.unreadable(mine[start:start + _BATCH])
  if multihost.most(len(bad)):
    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    where = (f"records {shown} ({len(bad)} of the {len(mine)} this process checked)" if bad else
             "records checked by another process (see its log)")
    raise records.DataError(f"{source.description} has unreadable {where}: the prepared data is "
                            f"corrupt. Nothing was trained. {source.repair}")
  if jax.process_index() == 0:
    marker[split] = stats
    try:
      paths.write_atomic(marker_path, json.dumps(marker, indent=1))
    except OSError as e:  # A read-only data dir: verified again next time.
      logging.warning("Could not record the verification in %s (%s)", marker_path, e)
