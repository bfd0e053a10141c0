"""Reading records: a random-access source whose read errors name the record and the repair,
the fields of a record (nested ones, one text or several), and a process's shuffled share of a
source for training.
"""

from typing import Any, Mapping, Sequence

import grain
import jax

from ig_captioner import errors


class DataError(errors.UserError, RuntimeError):
  """The data set is missing, incomplete or corrupt."""


class CheckedSource:
  """A random-access source whose read errors name the record and say how to repair the data."""

  def __init__(self, source: Sequence[Any], identity: str, description: str, repair: str):
    self._source = source
    self._identity = identity
    self._description = description
    self._repair = repair

  def __repr__(self) -> str:
    # grain checks that a restored iterator reads the same source by comparing reprs: name the
    # data set, not where it lies, so a checkpoint resumes with the data moved elsewhere.
    return f"CheckedSource({self._identity}, {len(self)} records)"

  def __len__(self) -> int:
    return len(self._source)

  @property
  def description(self) -> str:
    return self._description

  @property
  def repair(self) -> str:
    return self._repair

  def __getitem__(self, index: int) -> Any:
    try:
      return self._source[index]
    except Exception as e:  # array_record and the feature decoders raise many types.
      raise DataError(f"record {index} of {self._description} could not be read "
                      f"({type(e).__name__}: {e}). The prepared data looks corrupt: {self._repair}"
                      ) from e

  def unreadable(self, indices: Sequence[int]) -> list[int]:
    """Which of `indices` cannot be read and decoded (one batched read when all can)."""
    try:
      self._source.__getitems__(list(indices))
      return []
    except Exception:  # pylint: disable=broad-except
      pass
    bad = []
    for i in indices:
      try:
        self._source[i]
      except Exception:  # pylint: disable=broad-except
        bad.append(i)
    return bad


def as_text(value) -> str:
  """A record's text field as str (TFDS Text features read back as UTF-8 bytes)."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def field(record: Mapping[str, Any], key: str) -> Any:
  """`record[key]`; a key with '/' that is no feature of its own names a nested one
  (coco_captions' 'captions/text' is `record['captions']['text']`)."""
  if key in record:
    return record[key]
  value = record
  for part in key.split("/"):
    if not isinstance(value, Mapping) or part not in value:
      raise DataError(f"the records have no field {key!r}; their fields: {sorted(record)} "
                      "(nested ones are named 'outer/inner'): fix the config's key")
    value = value[part]
  return value


def texts(value) -> list[str]:
  """The texts of a text field: one (a Text feature) or several (a Sequence of texts)."""
  if isinstance(value, (bytes, str)):
    return [as_text(value)]
  return [as_text(v) for v in value]


def shuffled_shard(source: Sequence[Any], seed: int) -> grain.MapDataset:
  """This process's slice of a random-access `source` (disjoint across processes, complete
  together), repeated forever and shuffled differently every epoch."""
  shard = grain.MapDataset.source(source)[jax.process_index()::jax.process_count()]
  if not len(shard):
    raise errors.ConfigError(f"{len(source)} records cannot be split over "
                             f"{jax.process_count()} processes")
  return shard.shuffle(seed=seed).repeat()
