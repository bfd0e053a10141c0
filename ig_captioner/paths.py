"""Paths of the files the trainer, evaluator, sweep and data preparation read and write: local
or in a bucket (`gs://`, `s3://`), all through `etils.epath` (which reaches buckets through
TensorFlow's file systems when TensorFlow is installed, as here, else fsspec).

Object stores have no rename and no append: an object is published whole when its upload ends.
`write_text_atomic` therefore renames a temporary file into place on local disks and writes the
object directly in a bucket; both leave either the old content or the new, never half of it.
"""

import os

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


def write_text_atomic(p: PathLike, text: str) -> None:
  """Writes `text` to `p` so that a reader never sees half of it (see the module docstring)."""
  target = path(p)
  if is_remote(target):
    target.write_text(text)
    return
  tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
  tmp.write_text(text)
  tmp.replace(target)


def write_bytes_atomic(p: PathLike, data: bytes) -> None:
  """`write_text_atomic` for bytes."""
  target = path(p)
  if is_remote(target):
    target.write_bytes(data)
    return
  tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
  tmp.write_bytes(data)
  tmp.replace(target)


def copy_atomic(source: PathLike, target: PathLike, chunk_bytes: int = 1 << 24) -> None:
  """Copies `source` to `target` (either local or in a bucket) so that a reader of `target`
  never sees part of it."""
  target_path = path(target)
  partial = target_path if is_remote(target_path) else target_path.with_name(
      f"{target_path.name}.tmp{os.getpid()}")
  with path(source).open("rb") as src, partial.open("wb") as dst:
    while block := src.read(chunk_bytes):
      dst.write(block)
  if partial != target_path:
    partial.replace(target_path)
