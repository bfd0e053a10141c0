"""How often each concept (an evaluation's class names, any list of phrases) is named in a pool
of training captions: the frequency that the language prior of a captioner follows, and that
zero-shot accuracy grows with (Udandarao et al., *No "Zero-Shot" Without Exponential Pretraining
Data*, 2024: linearly in the log of the concept's frequency).

Two definitions of "names", `matching`:
- `words` (the default): the concept's words occur in the caption as consecutive whole words,
  case-insensitively ('tree' in 'a tall Tree.', not in 'street' nor 'trees').
- `metaclip`: MetaCLIP's substring matching, as its curation (`metaclip.py`) counts entries:
  ` CONCEPT ` occurs in the caption `spaced` (a space at both ends, each of `,.;:?!` and the
  backtick given a space each side, tabs and line breaks made spaces); case is kept.
A caption counts once per concept it names. Token n-grams of each caption are looked up in a
set, so the cost is linear in the captions' length whatever the number of concepts (with
`metaclip`, a caption's tokens are the spaced caption split at each space, which finds exactly
the substrings ` CONCEPT `). For billions of captions, the curation pipeline
(`python -m ig_captioner.data.curate`, metadata = the concepts) counts them on a distributed
engine; `read_curation` reads its counts.
"""

import json
import re
from typing import Iterable, Sequence

import numpy as np

from ig_captioner import errors
from ig_captioner import paths

MATCHINGS = ("words", "metaclip")
# A curation's outputs (`curate.py` writes them): COUNT<TAB>ENTRY lines, and its summary.
ENTRY_COUNTS, SUMMARY = "entry_counts.tsv", "summary.json"
_WORD = re.compile(r"\w+")
_SPACED = {**{ord(p): f" {p} " for p in ",.;:?!`"}, **{ord(c): " " for c in "\t\n\r"}}


def spaced(caption: str) -> str:
  """The caption as MetaCLIP looks for entries in it (its `spacing`)."""
  return f" {caption.translate(_SPACED)} "


def words(text: str) -> tuple[str, ...]:
  """The lower-cased words of `text` (runs of letters, digits and underscores)."""
  return tuple(_WORD.findall(text.lower()))


def _tokens(text: str, matching: str) -> tuple[str, ...]:
  return words(text) if matching == "words" else tuple(spaced(text).split(" "))


def _concept_key(concept: str, matching: str) -> tuple[str, ...]:
  if matching == "words":
    return words(concept.replace("_", " "))
  return tuple(concept.split(" ")) if concept.strip() == concept and concept else ()


def count(texts: Iterable[str], concepts: Sequence[str],
          matching: str = "words") -> tuple[np.ndarray, int]:
  """(captions naming each concept, captions read)."""
  if matching not in MATCHINGS:
    raise errors.ConfigError(f"matching={matching!r} is not one of {MATCHINGS}")
  index = {}
  for i, concept in enumerate(concepts):
    key = _concept_key(concept, matching)
    if not key:
      raise errors.ConfigError(f"concept {concept!r} has no words to look for" + (
          " (metaclip matching: no surrounding white space)" if matching == "metaclip" else ""))
    index.setdefault(key, []).append(i)
  longest = max(len(k) for k in index)
  counts, total = np.zeros(len(concepts), np.int64), 0
  for text in texts:
    total += 1
    tokens = _tokens(text, matching)
    named = {tokens[i:i + n] for n in range(1, longest + 1) for i in range(len(tokens) - n + 1)}
    for key in named & index.keys():
      for i in index[key]:
        counts[i] += 1
  return counts, total


def read_curation(directory: str, concepts: Sequence[str]) -> tuple[np.ndarray, int]:
  """(pairs naming each concept, pairs read) as the curation in `directory` counted them (its
  metadata must list every concept, one a line)."""
  counts_file, summary_file = paths.join(directory, ENTRY_COUNTS), paths.join(directory, SUMMARY)
  try:
    lines = paths.path(counts_file).read_text().splitlines()
    total = int(json.loads(paths.path(summary_file).read_text())["pairs_in"])
  except FileNotFoundError as e:
    raise errors.ConfigError(f"{directory} holds no finished curation ({e.filename} is "
                             "missing): run python -m ig_captioner.data.curate into it") from e
  counted = {}
  for line in lines:
    number, _, entry = line.partition("\t")
    counted[entry] = int(number)
  missing = [c for c in concepts if c not in counted]
  if missing:
    raise errors.ConfigError(
        f"the curation in {directory} did not count {len(missing)} of the {len(concepts)} "
        f"concepts (e.g. {missing[0]!r}): curate with --metadata listing them, one a line")
  return np.array([counted[c] for c in concepts], np.int64), total
