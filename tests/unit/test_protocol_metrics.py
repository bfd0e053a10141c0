"""CLIP_benchmark's metrics (`evaluators/protocol_metrics.py`) against a plain numpy rendering
of their definitions in clip_benchmark/metrics (top-k by a stable sort, one query at a time;
scikit-learn's balanced accuracy from a confusion matrix), with ties, classes without test
images, multi-caption images and duplicate caption texts."""

import jax
import numpy as np
import pytest

from ig_captioner.evaluators import protocol_metrics


def _order(scores_C):
  """Candidates best first; equal scores in index order."""
  return np.argsort(-np.asarray(scores_C), kind="stable")


def reference_classification(scores_BxC, labels_B):
  num_classes = scores_BxC.shape[1]
  out = {}
  for k in (1, 5) if num_classes >= 5 else (1,):
    hits = [labels_B[b] in _order(scores_BxC[b])[:k] for b in range(len(labels_B))]
    out[f"acc{k}"] = sum(hits) / len(hits)
  pred_B = np.array([_order(s)[0] for s in scores_BxC])
  confusion = np.zeros((num_classes, num_classes))
  for truth, pred in zip(labels_B, pred_B):
    confusion[truth, pred] += 1
  with np.errstate(invalid="ignore", divide="ignore"):
    recall_C = np.diag(confusion) / confusion.sum(axis=1)
  out["mean_per_class_recall"] = float(np.mean(recall_C[~np.isnan(recall_C)]))
  return out


@pytest.mark.parametrize("num_classes", [3, 5, 12])
def test_classification_equals_the_definitions_with_ties(num_classes):
  rng = np.random.default_rng(num_classes)
  scores_BxC = rng.integers(0, 4, (300, num_classes)).astype(np.float32)  # Many ties.
  labels_B = rng.integers(0, num_classes - 1, 300)  # The last class has no test image.
  ranks = min(5, num_classes)
  top_BxR = np.asarray(jax.lax.top_k(scores_BxC, ranks)[1])  # What the evaluator computes.
  np.testing.assert_array_equal(top_BxR, np.stack([_order(s)[:ranks] for s in scores_BxC]))
  got = protocol_metrics.classification(top_BxR, labels_B, num_classes)
  expected = reference_classification(scores_BxC, labels_B)
  assert got.keys() == expected.keys()
  for name, value in expected.items():
    assert got[name] == pytest.approx(value, abs=1e-12), name
  if num_classes >= 5:  # The metrics differ on this data: a test that can tell them apart.
    assert got["acc5"] > got["acc1"] and got["mean_per_class_recall"] != got["acc1"]
  # Top-1 alone (a shortlist's predictions): no acc5.
  assert "acc5" not in protocol_metrics.classification(top_BxR[:, :1], labels_B, num_classes)


def reference_recall(scores_QxC, positive_QxC, k):
  hits = [positive_QxC[q, _order(scores_QxC[q])[:k]].any() for q in range(len(scores_QxC))]
  return sum(hits) / len(hits)


def test_caption_retrieval_equals_the_definitions():
  rng = np.random.default_rng(0)
  # 40 images with 1-5 captions each; some texts repeat (their scores are equal, as the
  # evaluator scores one copy), and scores are coarse, so ties are common.
  image_N = np.repeat(np.arange(40), rng.integers(1, 6, 40))
  text_N = rng.integers(0, 60, len(image_N))
  scores_IxU = np.round(rng.normal(size=(40, 60)), 1)
  scores_IxN = scores_IxU[:, text_N]
  got = protocol_metrics.caption_retrieval(scores_IxN, image_N, (1, 5, 10))
  positive_IxN = np.arange(40)[:, None] == image_N[None]
  for k in (1, 5, 10):
    assert got[f"text_retrieval_recall@{k}"] == pytest.approx(
        reference_recall(scores_IxN, positive_IxN, k))
    assert got[f"image_retrieval_recall@{k}"] == pytest.approx(
        reference_recall(scores_IxN.T, positive_IxN.T, k))
  assert 0 < got["text_retrieval_recall@1"] < got["text_retrieval_recall@10"] < 1
  only_text = protocol_metrics.caption_retrieval(scores_IxN, image_N, (1,), text_only=True)
  assert list(only_text) == ["text_retrieval_recall@1"]


def test_ties_rank_in_index_order_and_chunks_do_not_matter():
  # Query 0: its positive (candidate 2) ties with candidates 0 and 1 ahead of it: rank 2.
  scores_QxC = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0]])
  positive_QxC = np.array([[0, 0, 1, 0], [0, 1, 0, 1]], bool)
  assert protocol_metrics.recall_at_k(scores_QxC, positive_QxC, (1, 2, 3)) == {
      1: 0.5, 2: 0.5, 3: 1.0}
  rng = np.random.default_rng(1)
  scores, positive = rng.normal(size=(700, 30)), np.eye(700, 30, dtype=bool)
  positive[np.arange(700), rng.integers(0, 30, 700)] = True
  assert protocol_metrics.recall_at_k(scores, positive, (3,))[3] == pytest.approx(
      reference_recall(scores, positive, 3))


def test_bad_scores_and_queries_without_positives_are_errors():
  with pytest.raises(FloatingPointError, match="NaN or infinite"):
    protocol_metrics.recall_at_k(np.array([[np.nan, 1.0]]), np.array([[True, False]]), (1,))
  with pytest.raises(ValueError, match="1 queries have no positive"):
    protocol_metrics.recall_at_k(np.zeros((2, 2)), np.array([[True, False], [False, False]]),
                                 (1,))
