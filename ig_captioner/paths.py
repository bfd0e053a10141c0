"""Paths of the files the trainer, evaluator, sweep and data preparation read and write: local
or in a bucket (`gs://`, `s3://`), all through `etils.epath` (which reaches buckets through
TensorFlow's file systems when TensorFlow is installed, as here, else fsspec).

Object stores have no rename and no append: an object is published whole when its upload ends.
`write_atomic` therefore renames a temporary file into place on local disks and writes the
object directly in a bucket; both leave either the old content or the new, never half of it.
"""

import contextlib
import os
from typing import BinaryIO, Iterator

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether `path` names a bucket (`scheme://...`) rather than a local file."""
  return "://" in os.fspath(path)


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path: a bucket path as given, a local one with `~` expanded, absolute."""
  text = os.fspath(p)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def resolve(p: PathLike) -> str:
  """`path(p)` as a string: what a workdir flag becomes before it is used or passed on."""
  return os.fspath(path(p))


def join(p: PathLike, *parts: str) -> str:
  """`p / parts...` as a string (what orbax, TensorBoard and subprocess flags take)."""
  return os.fspath(path(p).joinpath(*parts))


@contextlib.contextmanager
def _whole(p: PathLike) -> Iterator[epath.Path]:
  """Yields where to write `p`'s new content; once the block ends, that content is `p` whole."""
  target = path(p)
  if is_remote(target):
    yield target
    return
  partial = target.with_name(f"{target.name}.tmp{os.getpid()}")
  try:
    yield partial
  except BaseException:
    if partial.exists():  # Nothing half-written is left beside the target.
      partial.unlink()
    raise
  partial.replace(target)


@contextlib.contextmanager
def open_whole(p: PathLike) -> Iterator[BinaryIO]:
  """A binary file to write `p`'s new content into; once the block ends, `p` holds it whole (a
  reader never sees part of it, as with `write_atomic`)."""
  with _whole(p) as partial, partial.open("wb") as f:
    yield f


def write_atomic(p: PathLike, data: str | bytes) -> None:
  """Writes `data` (text or bytes) to `p` so that a reader never sees half of it (see the module
  docstring)."""
  with _whole(p) as partial:
    if isinstance(data, str):
      partial.write_text(data)
    else:
      partial.write_bytes(data)


def copy_atomic(source: PathLike, target: PathLike, chunk_bytes: int = 1 << 24) -> None:
  """Copies `source` to `target` (either local or in a bucket) so that a reader of `target`
  never sees part of it."""
  with _whole(target) as partial, path(source).open("rb") as src, partial.open("wb") as dst:
    while block := src.read(chunk_bytes):
      dst.write(block)
