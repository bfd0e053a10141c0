"""What every tokenizer shares: fixed-length int32 id arrays, and batches of them."""

from typing import Sequence

import numpy as np

from ig_captioner import token_ids


def padded(tokens: Sequence[int], max_len: int, pad_id: int) -> np.ndarray:
  """`tokens` (at most max_len) as an int32 array of length max_len, padded with pad_id."""
  out = np.full((max_len,), pad_id, np.int32)
  out[:len(tokens)] = tokens
  return out


class BatchEncoding:
  """`encode_batch` for a tokenizer that has `encode(text, max_len, strict, prefix)`;
  `unscored_ids`: the target ids never scored (`token_ids.is_scored`): pad and the prefix ids
  unless a tokenizer's vocabulary has pieces there."""
  unscored_ids: tuple[int, ...] = token_ids.UNSCORED_IDS

  def encode_batch(self, texts: Sequence[str], max_len: int, strict: bool = False,
                   prefix: str | None = None) -> np.ndarray:
    return np.stack([self.encode(t, max_len, strict, prefix) for t in texts])
