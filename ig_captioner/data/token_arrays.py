"""What every tokenizer shares: fixed-length int32 id arrays, and batches of them."""

from typing import Sequence

import numpy as np


def padded(tokens: Sequence[int], max_len: int, pad_id: int) -> np.ndarray:
  """`tokens` (at most max_len) as an int32 array of length max_len, padded with pad_id."""
  out = np.full((max_len,), pad_id, np.int32)
  out[:len(tokens)] = tokens
  return out


class BatchEncoding:
  """`encode_batch` for a tokenizer that has `encode(text, max_len, strict, prefix)`."""

  def encode_batch(self, texts: Sequence[str], max_len: int, strict: bool = False,
                   prefix: str | None = None) -> np.ndarray:
    return np.stack([self.encode(t, max_len, strict, prefix) for t in texts])
