"""SentencePiece tokenizer: train one in-process from a corpus, or load any `.model` file.

Texts become the fixed id layout of `token_ids` (pad 0, BOS 1, EOS 2, unk 3, <mask> 4, the
prefix tokens 5-6, then the pieces): `[BOS, (prefix,) pieces..., EOS]` right-padded with PAD to
`max_len` tokens. Tokenizers trained here reserve ids 4-6; one trained elsewhere (pad=0, bos=1,
eos=2 required) works for everything but CapPa and prefixes, which then fail naming the problem.
"""

import io
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner import token_ids
from ig_captioner.data import records
from ig_captioner.data import token_arrays


def train(texts: Iterable[str], vocab_size: int) -> bytes:
  """Trains a BPE SentencePiece model on `texts`; returns the serialized model.

  BPE rather than unigram: on small corpora such as the digits captions, unigram training stops
  at a near character-level vocabulary, while BPE keeps whole words.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", character_coverage=1.0,
      pad_id=token_ids.PAD_ID, bos_id=token_ids.BOS_ID, eos_id=token_ids.EOS_ID,
      unk_id=token_ids.UNK_ID,
      user_defined_symbols=list(token_ids.RESERVED_SYMBOLS),
      # Small corpora cannot fill a large vocabulary: let it be smaller than asked.
      hard_vocab_limit=False, minloglevel=2,
      # Large corpora: train on a random million sentences.
      input_sentence_size=1_000_000, shuffle_input_sentence=True)
  return model.getvalue()


class TokenizerError(errors.UserError, ValueError):
  """A tokenizer file that is missing, unreadable, or has other special ids."""


class TokenizerNotFoundError(TokenizerError, FileNotFoundError):
  """The tokenizer file does not exist."""


_FIX = ("set config.data.tokenizer to a SentencePiece .model file trained with "
        "`ig_captioner.data.tokenizer.train`, or leave it empty to use the data set's (rebuilt by "
        "`python -m ig_captioner.data.prepare` once the bad file is deleted)")


def stored(path, fix: str) -> "Tokenizer":
  """The SentencePiece model prepared with the data at `path` (an epath), or DataError ending
  with `fix` (the data is not prepared)."""
  if not path.exists():
    raise records.DataError(f"no tokenizer at {path}: {fix}")
  return Tokenizer(path.read_bytes(), source=str(path))


# `config.data.tokenizer` naming CLIP's BPE (runs converted from open_clip) instead of a file.
CLIP_BPE = "clip_bpe"
# `config.data.tokenizer = STICKY_EOS + ':' + path`: big_vision's SigLIP tokenization of the
# SentencePiece model at path (runs converted from big_vision, `data/sticky_eos.py`).
STICKY_EOS = "sticky_eos"


def is_builtin(value: str) -> bool:
  """Whether `config.data.tokenizer` names a tokenizer that is read as it is (CLIP_BPE, or
  'sticky_eos:PATH'), not a SentencePiece model that data preparation may train."""
  return value == CLIP_BPE or value.startswith(STICKY_EOS + ":")


def from_setting(value: str):
  """The tokenizer `config.data.tokenizer` names: CLIP_BPE, 'sticky_eos:PATH', or a
  SentencePiece .model path."""
  if value == CLIP_BPE:
    from ig_captioner.data import clip_bpe  # pylint: disable=g-import-not-at-top
    return clip_bpe.ClipBpeTokenizer()
  if value.startswith(STICKY_EOS + ":"):
    from ig_captioner.data import sticky_eos  # pylint: disable=g-import-not-at-top
    return sticky_eos.StickyEosTokenizer.from_file(paths.resolve(value[len(STICKY_EOS) + 1:]))
  return Tokenizer.from_file(paths.resolve(value))


class Tokenizer(token_arrays.BatchEncoding):
  """Encodes texts into fixed-length int32 token arrays."""

  def __init__(self, model_proto: bytes, source: str = "<in memory>"):
    self.source = source
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except Exception as e:  # SentencePiece raises RuntimeError('Internal: ...') without a path.
      raise TokenizerError(f"tokenizer {source} is not a readable SentencePiece model "
                           f"({type(e).__name__}: {e}): {_FIX}") from e
    ids = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id())
    needed = (token_ids.PAD_ID, token_ids.BOS_ID, token_ids.EOS_ID)
    if ids != needed:
      raise TokenizerError(f"tokenizer {source} has (pad, bos, eos) ids {ids}; ig-captioner needs "
                           f"{needed}: {_FIX}")
    self.has_reserved_ids = [self._sp.piece_to_id(s) for s in token_ids.RESERVED_SYMBOLS] == [
        token_ids.MASK_ID, *token_ids.PREFIX_IDS.values()]

  def require_reserved_ids(self, feature: str) -> None:
    """TokenizerError unless ids 4-6 are <mask>, <caption>, <classification>."""
    if not self.has_reserved_ids:
      raise TokenizerError(f"{feature} needs a tokenizer that reserves ids 4-6 for "
                           f"{', '.join(token_ids.RESERVED_SYMBOLS)}, and {self.source} does "
                           f"not: {_FIX}")

  @classmethod
  def from_file(cls, path: str) -> "Tokenizer":
    model_path = paths.path(path)
    if not model_path.exists():
      raise TokenizerNotFoundError(f"SentencePiece model {path} does not exist: {_FIX}")
    return cls(model_path.read_bytes(), source=str(path))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, max_len: int, strict: bool = False,
             prefix: str | None = None) -> np.ndarray:
    """`[BOS, (prefix,) pieces..., EOS, PAD...]` of length max_len; `prefix` names a
    `token_ids.PREFIX_IDS` entry.

    Too long a text is cut (losing EOS), or raises if `strict` (used for class prompts, whose
    score would silently change if cut).
    """
    head = list(token_ids.start_tokens(prefix))
    if prefix is not None:
      self.require_reserved_ids(f"the {prefix!r} prefix")
    pieces = self._sp.encode(text)
    if len(head) + len(pieces) + 1 > max_len:
      if strict:
        raise errors.ConfigError(
            f"text {text!r} needs {len(head) + len(pieces) + 1} tokens with BOS/EOS"
            f"{' and its prefix' if prefix else ''} but max_text_len is {max_len}: raise "
            "config.model.max_text_len")
      tokens = (head + pieces)[:max_len]
    else:
      tokens = head + pieces + [token_ids.EOS_ID]
    return token_arrays.padded(tokens, max_len, token_ids.PAD_ID)

  def decode(self, tokens: Sequence[int]) -> str:
    return self._sp.decode([int(t) for t in tokens if int(t) >= token_ids.NUM_SPECIAL_IDS or
                            int(t) == token_ids.UNK_ID])
