"""The interface every kind of data source implements (`sources.KINDS`): preparation, the
tokenizer, random access for evaluation, and the endless train records.
"""

import grain
import ml_collections

from ig_captioner.data import records
from ig_captioner.data import tokenizer as tokenizer_lib

# Fields of `config.data` that change how the data is read, never what is prepared on disk.
PIPELINE_FIELDS = ("manual_dir", "shuffle_seed", "augment_shift", "num_workers", "read_threads",
                   "text_only_split")


class Source:
  """One data set, as `config.data` describes it."""

  PIPELINE_FIELDS = PIPELINE_FIELDS
  # Whether `prepare` needs nothing but this package (no source files, no network): the trainer
  # and the evaluator then prepare the data on first use.
  OFFLINE_BUILDABLE = False

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.config = data_config

  @property
  def name(self) -> str:
    return self.config.name

  # ---------------------------------------------------------------------------- Preparing ---
  def prepare_command(self) -> str:
    """The command a user runs to prepare the data, for error messages."""
    raise NotImplementedError

  def location(self) -> str:
    """Where the prepared data lies."""
    raise NotImplementedError

  def is_prepared(self, with_tokenizer: bool) -> bool:
    raise NotImplementedError

  def prepare(self, verify: bool = False, with_tokenizer: bool = True) -> str:
    """Prepares what is missing (the data, and its tokenizer if `with_tokenizer`), checks the
    records (all again if `verify`); returns `location()`."""
    raise NotImplementedError

  # ------------------------------------------------------------------------------ Reading ---
  def tokenizer(self) -> tokenizer_lib.Tokenizer:
    raise NotImplementedError

  def open_split(self, split: str) -> records.CheckedSource:
    """Random access to the records of `split` (DataError for kinds read only in order)."""
    raise NotImplementedError

  def verify_split(self, split: str, force: bool = False) -> None:
    """DataError naming unreadable records of `split`; a no-op for kinds that skip and count
    them while reading."""
    raise NotImplementedError

  def caption_texts(self, split: str, limit: int) -> list[str]:
    """Up to `limit` texts of `split` (each record's `text_key` field, one or several texts), in
    record order."""
    source, out = self.open_split(split), []
    for i in range(len(source)):
      out += records.texts(records.field(source[i], self.config.text_key))
      if len(out) >= limit:
        break
    return out[:limit]

  def class_names(self, label_key: str) -> list[str]:
    raise records.DataError(f"data set {self.name} has no class labels ({label_key!r})")

  def train_records(self, split: str, seed: int, image_size: int
                    ) -> tuple[grain.MapDataset | grain.IterDataset, object | None]:
    """(this process's records of `split`, endless and shuffled from `seed`, each with the
    fields `record_keys()` names; the counts of what reading skips, or None if it never skips).
    A MapDataset where records have random access, an IterDataset where they are read in
    order. `image_size`: a kind that decodes images itself may resize them on the way."""
    raise NotImplementedError

  def record_keys(self) -> tuple[str, str]:
    """(image field, text field) of the records `train_records` yields."""
    return self.config.image_key, self.config.text_key

