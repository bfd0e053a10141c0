"""The ArrayRecord files this codebase writes (`shards_to_array_record`, a curation's
`--output_format=array_record`): one (image, caption) pair a record, laid out by
`encode_record`, every record its own chunk so that a random read decodes one record.

    source = grain.sources.ArrayRecordDataSource(sorted(glob.glob('DIR/*.array_record')))
    image_bytes, text = decode_record(source[i])
"""

import contextlib
import struct
import tempfile
from typing import Callable, Iterator

from array_record.python import array_record_module

from ig_captioner import paths

_HEADER = struct.Struct("<I")  # Length of the UTF-8 text that follows it; the image bytes last.


def encode_record(image_bytes: bytes, text: str) -> bytes:
  encoded_text = text.encode("utf-8")
  return _HEADER.pack(len(encoded_text)) + encoded_text + image_bytes


def decode_record(record: bytes) -> tuple[bytes, str]:
  """(encoded image bytes, text) of a record written by `encode_record`."""
  (text_length,) = _HEADER.unpack_from(record)
  start = _HEADER.size
  return record[start + text_length:], record[start:start + text_length].decode("utf-8")


@contextlib.contextmanager
def writing(target: str) -> Iterator[Callable[[bytes], None]]:
  """Yields a function writing one record to the ArrayRecord file `target` (local or in a
  bucket). The records go to a local scratch file first (the writer takes a local path), copied
  to `target` when the block ends without an error: never a half-written file under its name."""
  target = paths.path(target)
  with tempfile.TemporaryDirectory() as scratch:
    local_file = paths.join(scratch, target.name)
    # group_size:1: every record is its own chunk, so a random read decodes one record.
    writer = array_record_module.ArrayRecordWriter(local_file, "group_size:1")
    try:
      yield writer.write
    finally:
      writer.close()
    paths.copy_atomic(local_file, target)
