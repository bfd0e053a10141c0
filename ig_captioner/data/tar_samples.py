"""webdataset tar shards, as img2dataset writes them (`--output_format webdataset`) and open_clip
trains from: a POSIX tar whose members `KEY.jpg`, `KEY.txt`, `KEY.json`, ... follow each other,
one sample per KEY. Read here with the standard library's `tarfile` (no torch, no webdataset
package), through `paths` (local files and `gs://` alike).

`TarSamples` iterates one shard's samples as rows {extension: bytes, '__key__': KEY} (the
extension after the first dot of a member's file name, as webdataset splits it), and resumes
exactly: its state is the byte offset of the next sample's first member header, so a restored
reader seeks there and reads on, never re-reading the shard from its start. Compressed tars
(`.tar.gz`) cannot be sought: they are refused with how to fix it.
"""

import io
import tarfile
from typing import Iterable

from ig_captioner import paths
from ig_captioner.data import records

KEY = "__key__"
START = {"offset": 0}


def split_name(name: str) -> tuple[str, str]:
  """'dir/000010003.jpg' -> ('dir/000010003', 'jpg'): webdataset's key and extension (the
  extension starts at the first dot of the file name; directories stay in the key)."""
  directory, _, file_name = name.rpartition("/")
  stem, _, extension = file_name.partition(".")
  return (f"{directory}/{stem}" if directory else stem), extension


def write(path: str, samples: Iterable[dict], mtime: int = 1_700_000_000) -> None:
  """Writes samples ({'__key__': KEY, extension: bytes, ...}) as a webdataset tar at `path`
  (whole or not at all), members in sorted extension order with webdataset's TarWriter's member
  metadata (as img2dataset's webdataset output has them)."""
  paths.path(path).parent.mkdir(parents=True, exist_ok=True)
  with paths.open_whole(path) as f, tarfile.open(fileobj=f, mode="w",
                                                 format=tarfile.GNU_FORMAT) as tar:
    for sample in samples:
      for extension in sorted(k for k in sample if k != KEY):
        data = sample[extension]
        info = tarfile.TarInfo(f"{sample[KEY]}.{extension}")
        info.size, info.mode, info.mtime = len(data), 0o444, mtime
        info.uname = info.gname = "bigdata"
        tar.addfile(info, io.BytesIO(data))


class TarSamples:
  """One tar shard's samples, in order; a read error (not a tar, truncated) propagates from
  `__next__` (the caller counts the shard as failed). A sample's end is known only when the
  next sample's first member is read: an error there is raised by the call after the one that
  returns the sample."""

  def __init__(self, path: str):
    if path.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
      raise records.DataError(f"shard {path} is a compressed tar, which cannot be resumed "
                              "mid-shard: write uncompressed .tar shards (img2dataset's default)")
    self._path = path
    self._file = None
    self._tar = None
    self._pending = None  # (TarInfo, bytes) of the next sample's first member, read ahead.
    self._next_offset = 0  # Where the next sample starts; None once the shard is done.
    self._error = None  # A read error met while reading ahead, raised by the next call.
    self._open_at(0)  # Not a tar: the error is raised here, as for a parquet file.

  def _open_at(self, offset: int) -> None:
    self.close()
    self._file = paths.path(self._path).open("rb")
    self._file.seek(offset)
    # An uncompressed tar read from the current position (members' offsets stay absolute).
    self._tar = tarfile.open(fileobj=self._file, mode="r:")  # pylint: disable=consider-using-with
    self._pending = None

  def _read_member(self):
    """(TarInfo, bytes) of the next regular member, or None at the end."""
    while True:
      self._member_offset = self._tar.offset  # Where the header about to be read starts.
      info = self._tar.next()
      if info is None:
        return None
      self._member_offset = info.offset
      if info.isfile():
        return info, self._tar.extractfile(info).read()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._error is not None:
      error, self._error = self._error, None
      raise error
    if self._next_offset is None:
      raise StopIteration
    if self._tar is None:
      self._open_at(self._next_offset)
    first = self._pending or self._read_member()
    if first is None:
      self._next_offset = None
      self.close()
      raise StopIteration
    key, extension = split_name(first[0].name)
    row = {KEY: key, extension: first[1]}
    while True:
      try:
        member = self._read_member()
      except Exception as e:  # pylint: disable=broad-except  # tarfile raises several types.
        self._error, self._pending, self._next_offset = e, None, self._member_offset
        self.close()
        return row
      if member is None:
        self._pending, self._next_offset = None, None
        return row
      member_key, extension = split_name(member[0].name)
      if member_key != key:
        self._pending, self._next_offset = member, member[0].offset
        return row
      row[extension] = member[1]

  def get_state(self) -> dict:
    return {"offset": self._next_offset}

  def set_state(self, state: dict) -> None:
    self.close()
    self._pending, self._next_offset = None, state["offset"]

  def close(self) -> None:
    if self._tar is not None:
      self._tar.close()
      self._file.close()
    self._tar = self._file = None
