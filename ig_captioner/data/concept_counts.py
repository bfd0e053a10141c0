"""How often each concept (an evaluation's class names, any list of phrases) is named in a pool
of training captions: the frequency that the language prior of a captioner follows, and that
zero-shot accuracy grows with (Udandarao et al., *No "Zero-Shot" Without Exponential Pretraining
Data*, 2024: linearly in the log of the concept's frequency).

A caption names a concept when the concept's words occur in it as consecutive whole words,
case-insensitively ('tree' in 'a tall Tree.', not in 'street'); a caption counts once per
concept it names. Word n-grams of each caption are looked up in a set, so the cost is linear in
the captions' length whatever the number of concepts. For billions of captions, the curation
pipeline (`python -m ig_captioner.data.curate`) counts on a distributed engine.
"""

import re
from typing import Iterable, Sequence

import numpy as np

from ig_captioner import errors

_WORD = re.compile(r"\w+")


def words(text: str) -> tuple[str, ...]:
  """The lower-cased words of `text` (runs of letters, digits and underscores)."""
  return tuple(_WORD.findall(text.lower()))


def count(texts: Iterable[str], concepts: Sequence[str]) -> tuple[np.ndarray, int]:
  """(captions naming each concept, captions read)."""
  index = {}
  for i, concept in enumerate(concepts):
    key = words(concept.replace("_", " "))
    if not key:
      raise errors.ConfigError(f"concept {concept!r} has no words to look for")
    index.setdefault(key, []).append(i)
  longest = max(len(k) for k in index)
  counts, total = np.zeros(len(concepts), np.int64), 0
  for text in texts:
    total += 1
    tokens = words(text)
    named = {tokens[i:i + n] for n in range(1, longest + 1) for i in range(len(tokens) - n + 1)}
    for key in named & index.keys():
      for i in index[key]:
        counts[i] += 1
  return counts, total
