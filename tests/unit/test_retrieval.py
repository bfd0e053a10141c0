"""Recall@k against a hand-built score matrix (ties included) and a brute-force reference;
captions shared by several images become one candidate relevant to all of them."""

import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner.evaluators import retrieval


def _brute_force_recall(scores, relevant, k):
  """Sort each query's candidates, best first; ties put irrelevant candidates first."""
  hits = 0
  for q in range(scores.shape[0]):
    order = sorted(range(scores.shape[1]), key=lambda c: (-scores[q, c], relevant[q, c]))
    hits += any(relevant[q, c] for c in order[:k])
  return hits / scores.shape[0]


def test_recall_on_a_hand_built_matrix():
  scores = np.array([[0.9, 0.1, 0.5, 0.3],    # Relevant {0}: rank 0.
                     [0.9, 0.1, 0.5, 0.3],    # Relevant {1}: 3 irrelevant above it, rank 3.
                     [0.2, 0.7, 0.7, 0.1],    # Relevant {2}, tied with irrelevant 1: rank 1.
                     [0.4, 0.8, 0.6, 0.6]])   # Relevant {2, 3}: best 0.6, irrelevant 0.8: rank 1.
  relevant = np.zeros((4, 4), bool)
  relevant[0, 0] = relevant[1, 1] = relevant[2, 2] = relevant[3, 2] = relevant[3, 3] = True
  recall = retrieval.recall_at_k(scores, relevant, (1, 2, 3, 4))
  assert recall == {1: 0.25, 2: 0.75, 3: 0.75, 4: 1.0}


def test_recall_matches_brute_force_with_many_ties():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # Coarse: ties everywhere.
  relevant = rng.random((50, 30)) < 0.1
  relevant[np.arange(50), rng.integers(0, 30, 50)] = True
  recall = retrieval.recall_at_k(scores, relevant, (1, 5, 10))
  for k in (1, 5, 10):
    assert recall[k] == pytest.approx(_brute_force_recall(scores, relevant, k))


class _Source:
  def __init__(self, captions):
    self._records = [{"captions": [c.encode() for c in cs]} for cs in captions]

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    return self._records[i]


def test_identical_captions_are_one_candidate_relevant_to_each_image():
  texts, relevant, image_N, text_N = retrieval.read_captions(
      _Source([["a seven", "the digit seven"], ["a seven", "a 7"], ["a two"]]), "captions")
  assert texts == ["a seven", "the digit seven", "a 7", "a two"]
  np.testing.assert_array_equal(relevant, [[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
  # Every caption apart, for CLIP_benchmark's protocol: its image and its distinct text.
  assert image_N.tolist() == [0, 0, 1, 1, 2] and text_N.tolist() == [0, 1, 0, 2, 3]


def test_bad_retrieval_config_is_named():
  with pytest.raises(errors.ConfigError, match=r"config.evals.r.ks=\(0,\) is invalid"):
    retrieval.validate("r", retrieval.default_config(ks=(0,)))


def test_non_finite_scores_are_an_error_not_hits():
  scores = np.array([[0.5, np.nan], [np.nan, np.nan]])
  with pytest.raises(FloatingPointError, match="3 of 4 retrieval scores are NaN or infinite"):
    retrieval.recall_at_k(scores, np.eye(2, dtype=bool), (1,))
