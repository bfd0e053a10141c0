"""big_vision's SigLIP text preprocessing, for runs converted from big_vision: `tokenize(max_len,
model, eos='sticky', pad_value=1)` of its `pp/ops_text.py`, on any SentencePiece model.

A text is lower-cased in ASCII only (as `tf.strings.lower`: 'Ü' stays), split into the model's
pieces with no BOS, and the model's end id appended. A text of more than `max_len` ids keeps its
first `max_len - 1` and the end id last ("sticky"); a shorter one is padded with id 1 (T5's
vocabularies, c4_en's included, have pad 0 and end 1: the padding repeats the end token, and a
tower pooled at the final position reads an end token whatever the length).
`config.data.tokenizer = 'sticky_eos:<path of the .model file>'` (`tokenizer.from_setting`).
"""

from typing import Sequence

import numpy as np
import sentencepiece as spm

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import token_arrays

PAD_VALUE = 1
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class StickyEosError(errors.UserError, ValueError):
  """A SentencePiece model that is missing, unreadable, or has no end id."""


class StickyEosTokenizer(token_arrays.BatchEncoding):
  """Encodes texts into fixed-length int32 arrays as big_vision's SigLIP models read them (the
  data pipeline's interface, as `tokenizer.Tokenizer`)."""
  has_reserved_ids = False
  # Never scored by caption scoring (two towers score none): T5's pad id 0; its 5 and 6 are
  # pieces. The padding repeats the end id, which cannot be told apart from it.
  unscored_ids = (0,)

  def __init__(self, model_proto: bytes, source: str = "<in memory>"):
    self.source = source
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except Exception as e:  # SentencePiece raises RuntimeError('Internal: ...') without a path.
      raise StickyEosError(f"tokenizer {source} is not a readable SentencePiece model "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                           "pass the .model file the checkpoint was trained with") from None
    self.eos_id = self._sp.eos_id()
    if self.eos_id < 0:
      raise StickyEosError(f"tokenizer {source} has no end-of-text piece, which sticky-EOS "
                           "tokenization appends: pass the model the checkpoint was trained with")

  @classmethod
  def from_file(cls, path: str) -> "StickyEosTokenizer":
    model_path = paths.path(path)
    if not model_path.exists() or model_path.is_dir():
      raise StickyEosError(f"SentencePiece model {path} does not exist (the .model file the "
                           "checkpoint was trained with; c4_en's: "
                           "gs://t5-data/vocabs/cc_en.32000/sentencepiece.model)")
    return cls(model_path.read_bytes(), source=str(path))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def require_reserved_ids(self, feature: str) -> None:
    raise errors.ConfigError(f"{feature} needs ig-captioner's reserved ids (<mask>, prefixes), "
                             f"which the sticky-EOS tokenizer {self.source} does not have")

  def encode(self, text: str, max_len: int, strict: bool = False,
             prefix: str | None = None) -> np.ndarray:
    """`[pieces..., EOS, 1...]` of length max_len; too long a text is cut with EOS kept last, or
    raises if `strict`."""
    if prefix is not None:
      self.require_reserved_ids(f"the {prefix!r} prefix")
    ids = self._sp.encode(text.translate(_ASCII_LOWER)) + [self.eos_id]
    if len(ids) > max_len:
      if strict:
        raise errors.ConfigError(f"text {text!r} needs {len(ids)} tokens with its end token but "
                                 f"max_text_len is {max_len}: shorten it")
      ids = ids[:max_len - 1] + [self.eos_id]
    return token_arrays.padded(ids, max_len, PAD_VALUE)

  def decode(self, tokens: Sequence[int]) -> str:
    """The text of `tokens` up to the first end id (lower-cased, as encoded)."""
    ids = [int(t) for t in tokens]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._sp.decode(ids)
