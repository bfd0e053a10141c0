"""Counts of what a web-shard reader skipped (corrupt records, unreadable shards), per reason,
logged as they happen and by the trainer with its metrics: corrupt data is never silent.
"""

import collections
import threading

from absl import logging

from ig_captioner.data import records

# Record skip reasons, and the shard-level one.
NO_IMAGE, BAD_IMAGE, NO_TEXT = "missing_image", "undecodable_image", "empty_text"
UNREADABLE_SHARD = "unreadable_shard"
_WARN_FIRST = 5  # Warnings logged per reason before only powers of ten are.


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
    raise records.DataError(
        f"none of the {self._num_shards} shards of this process holds a usable record "
        f"(skipped: {counts}{'; unreadable: ' + failed if failed else ''}). Check "
        "config.data.shards (truncated or missing files?), config.data.image_column and "
        "config.data.text_column")


def _should_warn(n: int) -> bool:
  return n <= _WARN_FIRST or str(n).rstrip("0") == "1"  # 1-5, then 10, 100, 1000, ...
