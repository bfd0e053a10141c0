"""Concept frequencies in training captions (`data/concept_counts.py`) and the slope fit of
`tools/concept_frequency.py`, against independent computations."""

import re

import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner.data import concept_counts
from ig_captioner.data import sources
from ig_captioner.tools import concept_frequency
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
