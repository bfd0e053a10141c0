"""Concept frequencies in training captions (`data/concept_counts.py`) and the slope fit of
`tools/concept_frequency.py`, against independent computations."""

import re

import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner.data import concept_counts
from ig_captioner.data import sources
from ig_captioner.tools import concept_frequency
from tests.curation_pools import reference_curation
from tests.web_shard_files import write_tar_shards


def _regex_count(texts, concepts):
  """Captions naming each concept, by a word-boundary regex per concept."""
  patterns = [re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, c.lower().replace("_", " ")
                                                             .split())) + r"(?!\w)")
              for c in concepts]
  return np.array([sum(bool(p.search(t.lower())) for t in texts) for p in patterns])


def test_counts_equal_a_regex_count_per_concept():
  rng = np.random.default_rng(0)
  vocabulary = ["tree", "street", "red", "car", "sports", "golden", "retriever", "a", "the",
                "Tree.", "car,", "race-car", "sports_car"]
  texts = [" ".join(rng.choice(vocabulary, size=rng.integers(1, 9))) for _ in range(400)]
  concepts = ["tree", "car", "sports car", "golden retriever", "sports_car", "street", "race"]
  counts, total = concept_counts.count(texts, concepts)
  assert total == 400
  np.testing.assert_array_equal(counts, _regex_count(texts, concepts))
  assert counts[concepts.index("tree")] > 0 and counts[concepts.index("car")] > 0
  assert concept_counts.count(["a tall Tree in the street"], ["tree", "tre"])[0].tolist() == [1, 0]
  with pytest.raises(errors.ConfigError, match="no words"):
    concept_counts.count(["x"], ["..."])


def test_metaclip_matching_equals_the_papers_substring_loop():
  """matching='metaclip' against the plain `' e ' in spaced(caption)` loop of the curation
  tests' reference (tests/curation_pools.py): case kept, punctuation spaced, substrings of words
  never matched."""
  rng = np.random.default_rng(2)
  vocabulary = ["tree", "Tree", "street", "red", "car", "car,", "sports", "car.", "a", "dog!",
                "hot dog", "(dog)", "dog's", "`dog`", "race-car", "tab\tcar", "x:y"]
  texts = [" ".join(rng.choice(vocabulary, size=rng.integers(1, 9))) for _ in range(400)]
  concepts = ["tree", "Tree", "car", "sports car", "hot dog", "dog", "race-car", "x", "car ,",
              "dog's", "(dog)", "street", "tre"]
  pairs = [("s", str(i), t) for i, t in enumerate(texts)]
  _, expected = reference_curation(pairs, concepts, threshold=1, seed=0)
  counts, total = concept_counts.count(texts, concepts, matching="metaclip")
  assert total == 400
  assert counts.tolist() == [expected[c] for c in concepts]
  assert expected["dog"] > 0 and expected["Tree"] > 0 and expected["tre"] == 0
  # The two definitions differ where they should: case, and what splits words.
  words_counts = concept_counts.count(texts, concepts)[0]
  assert words_counts[0] > counts[0] and words_counts[concepts.index("dog")] > counts[5]
  with pytest.raises(errors.ConfigError, match="one of"):
    concept_counts.count(texts, concepts, matching="regex")
  with pytest.raises(errors.ConfigError, match="surrounding white space"):
    concept_counts.count(texts, [" dog"], matching="metaclip")


def test_curation_counts_must_name_every_class(tmp_path):
  (tmp_path / "entry_counts.tsv").write_text("5\tdog\n0\tcat\n", encoding="utf-8")
  with pytest.raises(errors.ConfigError, match="holds no finished curation"):
    concept_counts.read_curation(str(tmp_path), ["dog"])
  (tmp_path / "summary.json").write_text('{"pairs_in": 9}', encoding="utf-8")
  counts, total = concept_counts.read_curation(str(tmp_path), ["cat", "dog"])
  assert counts.tolist() == [0, 5] and total == 9
  with pytest.raises(errors.ConfigError, match="did not count 1 of the 2 concepts .*'bird'"):
    concept_counts.read_curation(str(tmp_path), ["dog", "bird"])


def test_pool_texts_of_web_shards(tmp_path):
  usable = write_tar_shards(tmp_path)
  data = dict(name="web_shards", shards=str(tmp_path / "*.tar"))
  import ml_collections  # pylint: disable=g-import-not-at-top
  texts = sources.caption_texts(ml_collections.ConfigDict(data), limit=1000)
  assert sorted(texts) == sorted(usable)
  counts, total = concept_counts.count(texts, ["number 3", "photo"])
  assert total == len(usable) and counts.tolist() == [4, len(usable)]


def test_fit_is_least_squares_and_pearson():
  rng = np.random.default_rng(1)
  x = rng.normal(size=30)
  y = 0.2 + 0.05 * x + rng.normal(scale=0.01, size=30)
  fitted = concept_frequency.fit(x, y)
  slope = 100 * np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
  r = np.sum((x - x.mean()) * (y - y.mean())) / np.sqrt(
      np.sum((x - x.mean()) ** 2) * np.sum((y - y.mean()) ** 2))
  assert fitted["slope_points_per_decade"] == pytest.approx(slope, rel=1e-9)
  assert fitted["pearson_r"] == pytest.approx(r, rel=1e-9)
  assert concept_frequency.fit(np.ones(3), x[:3])["slope_points_per_decade"] is None
