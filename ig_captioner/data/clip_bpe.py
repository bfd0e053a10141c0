"""CLIP's tokenizer (OpenAI CLIP, open_clip's `SimpleTokenizer`): byte-level BPE over 49,152
merges, ids `[<start_of_text>, pieces..., <end_of_text>, 0...]`, for runs converted from open_clip.

Text is cleaned as open_clip's default `clean='lower'` does: ftfy's `fix_text`, HTML entities
unescaped twice, whitespace runs collapsed, lower case. Words are split by CLIP's pattern
(contractions, runs of letters, single digits, runs of other symbols), each word's UTF-8 bytes
mapped to printable characters and merged pair by pair in the order of the merges list. A text too
long for the context is cut with its end token kept last. Id 0 (the piece '!') is also the pad:
a model pools at the end token (the highest id), never at the last non-zero id.

The merges file `metadata/bpe_simple_vocab_16e6.txt.gz` is OpenAI CLIP's (MIT license), as
open_clip ships it.
"""

import functools
import gzip
import html
import os
from typing import Sequence

import numpy as np

from ig_captioner import errors
from ig_captioner.data import token_arrays

MERGES_FILE = os.path.join(os.path.dirname(__file__), "metadata", "bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2
START, END = "<start_of_text>", "<end_of_text>"
# Contractions, letter runs, single digits, runs of anything else but space (case-insensitive).
_PATTERN = (START + "|" + END +
            r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


def _byte_chars() -> list[tuple[int, str]]:
  """(byte, printable character) pairs, in vocabulary order: bytes that print as themselves
  first, then the others, mapped to characters from U+0100 on."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in printable]
  return ([(b, chr(b)) for b in printable] +
          [(b, chr(256 + i)) for i, b in enumerate(others)])


def _clean(text: str) -> str:
  import ftfy  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return " ".join(text.split()).lower()


class ClipBpeTokenizer(token_arrays.BatchEncoding):
  """Encodes texts into fixed-length int32 arrays of CLIP's ids (the data pipeline's interface,
  as `tokenizer.Tokenizer`)."""
  source = "CLIP byte-level BPE (open_clip's SimpleTokenizer)"
  has_reserved_ids = False
  unscored_ids = (0,)  # Only the pad: ids 5 and 6 are the pieces '&' and "'", scored.

  def __init__(self, merges_file: str = MERGES_FILE):
    try:
      import ftfy  # pylint: disable=g-import-not-at-top,import-outside-toplevel
      import regex  # pylint: disable=g-import-not-at-top,import-outside-toplevel
      del ftfy  # Used by _clean; imported here to fail early.
    except ImportError as e:
      raise errors.ConfigError(f"CLIP's tokenizer needs the packages ftfy and regex ({e}): "
                               "pip install ftfy regex") from None
    with gzip.open(merges_file, "rt", encoding="utf-8") as f:
      merges = [tuple(line.split()) for line in f.read().split("\n")[1:NUM_MERGES + 1]]
    byte_chars = _byte_chars()
    vocab = [c for _, c in byte_chars] + [c + "</w>" for _, c in byte_chars]
    vocab += ["".join(pair) for pair in merges] + [START, END]
    self._ids = {piece: i for i, piece in enumerate(vocab)}
    self._pieces = vocab
    self._ranks = {pair: i for i, pair in enumerate(merges)}
    self._byte_char = dict(byte_chars)
    self._char_byte = {c: b for b, c in byte_chars}
    self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
    self.start_id, self.end_id = self._ids[START], self._ids[END]

  @property
  def vocab_size(self) -> int:
    return len(self._pieces)

  def require_reserved_ids(self, feature: str) -> None:
    raise errors.ConfigError(f"{feature} needs ig-captioner's reserved ids (<mask>, prefixes), "
                             "which CLIP's tokenizer does not have")

  @functools.lru_cache(maxsize=1 << 16)
  def _merge(self, word: str) -> tuple[str, ...]:
    """The BPE pieces of one word (printable characters; the last one marked '</w>')."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
      pairs = {(a, b) for a, b in zip(parts, parts[1:])}
      best = min(pairs, key=lambda pair: self._ranks.get(pair, NUM_MERGES))
      if best not in self._ranks:
        break
      merged, i = [], 0
      while i < len(parts):  # Every occurrence, left to right.
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return tuple(parts)

  def pieces(self, text: str) -> list[int]:
    """The ids of `text`'s pieces, without start and end tokens."""
    out = []
    for word in self._pattern.findall(_clean(text)):
      if word in (START, END):
        out.append(self._ids[word])
        continue
      printable = "".join(self._byte_char[b] for b in word.encode("utf-8"))
      out.extend(self._ids[p] for p in self._merge(printable))
    return out

  def encode(self, text: str, max_len: int, strict: bool = False,
             prefix: str | None = None) -> np.ndarray:
    """`[START, pieces..., END, 0...]` of length max_len; too long a text is cut with END kept
    last (as open_clip does), or raises if `strict`."""
    if prefix is not None:
      self.require_reserved_ids(f"the {prefix!r} prefix")
    tokens = [self.start_id, *self.pieces(text), self.end_id]
    if len(tokens) > max_len:
      if strict:
        raise errors.ConfigError(f"text {text!r} needs {len(tokens)} tokens with start and end "
                                 f"but max_text_len is {max_len}: shorten it")
      tokens = tokens[:max_len - 1] + [self.end_id]
    return token_arrays.padded(tokens, max_len, 0)

  def decode(self, tokens: Sequence[int]) -> str:
    """The text of `tokens` up to the end token, start token dropped (words as cleaned)."""
    pieces = []
    for t in (int(t) for t in tokens):
      if t == self.end_id:
        break
      if t != self.start_id:
        pieces.append(self._pieces[t])
    words = "".join(pieces).split("</w>")
    raw = b" ".join(bytes(self._char_byte[c] for c in word) for word in words)
    return raw.decode("utf-8", errors="replace").strip()
