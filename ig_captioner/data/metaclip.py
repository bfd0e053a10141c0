"""MetaCLIP's curation of image-text pairs (Xu et al., *Demystifying CLIP Data*, arXiv:2309.16671,
Algorithm 1), as facebookresearch/MetaCLIP defines its parts in `metaclip/metaclip1/
substr_matching.py` and `balancing.py` (definitions from there; the code is ours):

- **Matching.** A caption matches a metadata entry when ` ENTRY ` (the entry with one space on
  each side) occurs in the *spaced* caption: a space added at both ends, each of `,.;:?!` and the
  backtick given a space on each side, tabs and line breaks made spaces. Case is kept (no
  lower-casing): 'Tree' does not match 'a tree'. Entries so match whole space- or
  punctuation-delimited phrases: 'tree' matches 'a tree, green' but not 'street' or 'trees'.
- **Counts.** count(e): the pairs whose caption matches e (a pair counts once per entry).
- **Balancing**, threshold t (the paper's 20,000 for 400M pairs): entry e keeps a pair that
  matches it with probability p(e) = t / max(count(e), t), independently per entry; a pair is
  kept when any of its entries keeps it (P = 1 - prod(1 - p(e))); a pair matching nothing is
  dropped. Entries with count(e) <= t (the tail) keep all their pairs.

MetaCLIP draws with `random.random()`; here each draw is a hash, so the kept set depends on the
pool, the metadata, t and the seed alone (not on the runner, parallelism or shard order): entry
e keeps the pair with key k when `H * max(count(e), t) < t * 2**64`, H the 8-byte BLAKE2b
digest (`hashlib.blake2b(digest_size=8)`, big-endian) of the UTF-8 text `f"{seed}\\n{k}\\n{e}"`.
Multi-pattern matching uses an Aho-Corasick automaton (pyahocorasick), linear in the caption's
length whatever the number of entries.
"""

import hashlib
import json
from typing import Iterable, Sequence

import ahocorasick

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import concept_counts

DEFAULT_THRESHOLD = 20_000  # The paper's t for its 400M-pair set.
spaced = concept_counts.spaced  # The caption as entries are looked for in it.


def read_entries(path: str) -> list[str]:
  """The metadata entries of the file at `path`: a JSON list of strings (MetaCLIP's
  `metadata.json`) if it ends in `.json`, else one entry a line; blank lines, surrounding
  white space, repeated entries and entries holding a tab or line break (which no spaced caption
  holds) dropped. ConfigError if unreadable, not UTF-8 or empty."""
  try:
    data = paths.path(path).read_bytes()
  except FileNotFoundError as e:
    raise errors.ConfigError(f"--metadata={path} does not exist") from e
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise errors.ConfigError(f"the metadata file {path} is not UTF-8 text (line {line}: {e}); "
                             "it takes one entry a line, UTF-8") from e
  if path.endswith(".json"):
    try:
      entries = json.loads(text)
    except json.JSONDecodeError as e:
      raise errors.ConfigError(f"the metadata file {path} is not JSON ({e})") from e
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
      raise errors.ConfigError(f"the metadata file {path} is not a JSON list of strings (as "
                               "MetaCLIP's metadata.json is)")
  else:
    entries = text.splitlines()
  entries = list(dict.fromkeys(e.strip() for e in entries
                               if e.strip() and not any(c in e.strip() for c in "\t\n\r")))
  if not entries:
    raise errors.ConfigError(f"the metadata file {path} holds no entry: it takes one entry a "
                             "line (or a .json list), e.g. MetaCLIP's 500k-entry metadata.json")
  return entries


class EntryMatcher:
  """The entries each caption matches, found by one Aho-Corasick automaton over all of them."""

  def __init__(self, entries: Sequence[str]):
    self._automaton = ahocorasick.Automaton()
    for index, entry in enumerate(entries):
      self._automaton.add_word(f" {entry} ", index)
    self._automaton.make_automaton()

  def match(self, caption: str) -> list[int]:
    """The indices of the entries `caption` matches, ascending."""
    return sorted({index for _, index in self._automaton.iter(spaced(caption))})


def draw(seed: int, key: str, entry: str) -> int:
  """The 64-bit draw of entry `entry` for the pair with key `key` (see the module docstring)."""
  digest = hashlib.blake2b(f"{seed}\n{key}\n{entry}".encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big")


def keep_probability(count: int, threshold: int) -> float:
  """p(e) = t / max(count(e), t)."""
  return threshold / max(count, threshold)


def is_kept(key: str, matched: Iterable[tuple[str, int]], threshold: int, seed: int) -> bool:
  """Whether the pair with key `key`, matching the entries `matched` ((entry, count) pairs), is
  kept: exactly `draw / 2**64 < t / max(count, t)` for some entry, in integers."""
  return any(draw(seed, key, entry) * max(count, threshold) < threshold << 64
             for entry, count in matched)
