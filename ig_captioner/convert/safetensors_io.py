"""`.safetensors` files (how open_clip and the Hugging Face hub publish weights) read and written
with numpy alone: an 8-byte little-endian header length, a JSON header naming each array's dtype,
shape and byte range, then the raw little-endian bytes. Nothing is unpickled, no code runs.
"""

import json
import struct

import ml_dtypes
import numpy as np

from ig_captioner import errors
from ig_captioner import paths

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
_MAX_HEADER_BYTES = 100 << 20


class WeightsError(errors.UserError):
  """A weights file that cannot be read, or that does not fit the architecture named."""


def read(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a .safetensors file; WeightsError (one line) if it is truncated or corrupt."""
  data = paths.path(path).read_bytes()

  def corrupt(why: str) -> WeightsError:
    return WeightsError(f"{path} is not a readable .safetensors file ({why}); download it again")

  if len(data) < 8:
    raise corrupt(f"{len(data)} bytes, shorter than the header length")
  (header_len,) = struct.unpack("<Q", data[:8])
  if header_len > min(_MAX_HEADER_BYTES, len(data) - 8):
    raise corrupt(f"header of {header_len} bytes in a file of {len(data)}: truncated?")
  try:
    header = json.loads(data[8:8 + header_len])
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise corrupt(f"header is not JSON: {e}") from None
  if not isinstance(header, dict):
    raise corrupt("header is not a JSON object")
  body = memoryview(data)[8 + header_len:]
  arrays = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
      shape = tuple(int(n) for n in entry["shape"])
      begin, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise corrupt(f"entry {name!r} is malformed: {entry!r}") from None
    if not 0 <= begin <= end <= len(body):
      raise corrupt(f"{name!r} lies at bytes {begin}-{end} of a {len(body)}-byte body "
                    "(truncated?)")
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise corrupt(f"{name!r} has {end - begin} bytes for shape {shape} of {entry['dtype']}")
    arrays[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(
        dtype.newbyteorder("="))
  return arrays


def write(path: str, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  """Writes `arrays` as a .safetensors file (fixtures and tests; little-endian, C order)."""
  names = {np.dtype(v): k for k, v in DTYPES.items()}
  header, chunks, offset = {}, [], 0
  for name, array in arrays.items():
    array = np.ascontiguousarray(array)
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  if metadata:
    header["__metadata__"] = metadata
  encoded = json.dumps(header).encode()
  encoded += b" " * (-len(encoded) % 8)  # The format pads the header to 8 bytes.
  paths.write_atomic(path, struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
