"""CLIP's BPE tokenizer gives open_clip's ids (tests/fixtures/open_clip/tokenizer_cases.json,
written by open_clip's own tokenizer) for awkward texts, at two context lengths."""

import json
import os

import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner.data import clip_bpe
from ig_captioner.data import tokenizer as tokenizer_lib

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "open_clip")


@pytest.fixture(scope="module")
def tokenizer():
  return tokenizer_lib.from_setting(tokenizer_lib.CLIP_BPE)


def test_ids_equal_open_clips(tokenizer):
  with open(os.path.join(FIXTURES, "tokenizer_cases.json"), encoding="utf-8") as f:
    cases = json.load(f)
  assert len(cases) >= 30 and {c["context_length"] for c in cases} == {77, 8}
  for case in cases:
    ids = tokenizer.encode(case["text"], case["context_length"])
    assert ids.tolist() == case["ids"], case["text"]
  assert tokenizer.vocab_size == 49408
  assert (tokenizer.start_id, tokenizer.end_id) == (49406, 49407)


def test_a_cut_text_keeps_its_end_token_or_raises_when_strict(tokenizer):
  ids = tokenizer.encode("a photo of a big red dog", 5)
  assert ids[0] == tokenizer.start_id and ids[-1] == tokenizer.end_id
  assert tokenizer.decode(ids) == "a photo of"
  with pytest.raises(errors.ConfigError, match="needs 9 tokens .* max_text_len is 5"):
    tokenizer.encode("a photo of a big red dog", 5, strict=True)
  with pytest.raises(errors.ConfigError, match="reserved ids"):
    tokenizer.encode("x", 8, prefix="caption")


def test_decode_inverts_encode_on_cleaned_text(tokenizer):
  for text, cleaned in (("A photo of a Golden Retriever, 2 years old!",
                         "a photo of a golden retriever , 2 years old !"),
                        ("naïve  café", "naïve café"), ("東京 🐶", "東京 🐶")):
    ids = tokenizer.encode_batch([text], 77)
    assert ids.shape == (1, 77) and ids.dtype == np.int32
    assert tokenizer.decode(ids[0]) == cleaned


def test_byte_map_covers_every_byte_once():
  pairs = clip_bpe._byte_chars()  # pylint: disable=protected-access
  assert sorted(b for b, _ in pairs) == list(range(256))
  assert len({c for _, c in pairs}) == 256 and all(not c.isspace() for _, c in pairs)
