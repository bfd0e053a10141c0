"""The field's zero-shot metrics, as LAION-AI's CLIP_benchmark defines them
(`clip_benchmark/metrics/zeroshot_classification.py`, `zeroshot_retrieval.py`; definitions from
there, the code is ours), so that figures compare with published CLIP_benchmark tables:

- classification: `acc1`, `acc5` (the label among the 5 highest-scoring classes; absent below 5
  classes), `mean_per_class_recall` (the top-1 recall of each class that has test images,
  averaged over those classes: scikit-learn's `balanced_accuracy_score`);
- retrieval, every caption its own text (duplicate texts are separate candidates):
  `image_retrieval_recall@k` (each caption a query over the images: is its image among the k
  best?) and `text_retrieval_recall@k` (each image a query over all captions: is any of its
  captions among the k best?).

Ties: the k best are the first k of the candidates sorted by score, descending, equal scores
in index order (lower class or caption index first), as `jax.lax.top_k` and a stable sort
order them; CLIP_benchmark's `torch.topk` leaves the order of ties unspecified.

Shape letters: B images, K kept ranks, Q queries, C candidates.
"""

from typing import Sequence

import numpy as np

TOP_K = 5  # Ranks a classification keeps per image: acc5's.
_ROWS = 256  # Queries ranked at once (bounds the memory of a 25k-caption candidate set).


def classification(top_BxK: np.ndarray, labels_B: np.ndarray,
                   num_classes: int) -> dict[str, float]:
  """{'acc1', 'acc5', 'mean_per_class_recall'} of predictions top_BxK (the best classes of each
  image, best first); acc5 only with 5 classes or more and K >= 5."""
  top_BxK, labels_B = np.asarray(top_BxK), np.asarray(labels_B)
  if not len(labels_B):
    raise ValueError("no labelled images to score")
  hit1_B = top_BxK[:, 0] == labels_B
  out = {"acc1": float(hit1_B.mean())}
  if num_classes >= TOP_K and top_BxK.shape[1] >= TOP_K:
    out["acc5"] = float((top_BxK[:, :TOP_K] == labels_B[:, None]).any(-1).mean())
  present_C = np.bincount(labels_B, minlength=num_classes)
  correct_C = np.bincount(labels_B[hit1_B], minlength=num_classes)
  out["mean_per_class_recall"] = float(np.mean(correct_C[present_C > 0]
                                               / present_C[present_C > 0]))
  return out


def recall_at_k(scores_QxC: np.ndarray, positive_QxC: np.ndarray,
                ks: Sequence[int]) -> dict[int, float]:
  """{k: fraction of queries with a positive candidate among their k best} (ties in index
  order). Every query needs a positive; FloatingPointError for a non-finite score."""
  scores_QxC, positive_QxC = np.asarray(scores_QxC), np.asarray(positive_QxC, bool)
  if not positive_QxC.any(-1).all():
    raise ValueError(f"{int((~positive_QxC.any(-1)).sum())} queries have no positive candidate")
  position_Q = np.concatenate([_first_positive_position(scores_QxC[i:i + _ROWS],
                                                        positive_QxC[i:i + _ROWS])
                               for i in range(0, len(scores_QxC), _ROWS)])
  return {k: float(np.mean(position_Q < k)) for k in ks}


def _first_positive_position(scores_QxC: np.ndarray, positive_QxC: np.ndarray) -> np.ndarray:
  """The rank (from 0) of each query's best-ranked positive candidate."""
  if not np.isfinite(scores_QxC).all():
    raise FloatingPointError("retrieval scores are NaN or infinite: the params (or the inputs) "
                             "are broken")
  best_Q = np.where(positive_QxC, scores_QxC, -np.inf).max(-1)
  at_best_QxC = scores_QxC == best_Q[:, None]
  first_Q = np.argmax(positive_QxC & at_best_QxC, axis=-1)  # The best positive first in order.
  before_QxC = np.arange(scores_QxC.shape[1])[None] < first_Q[:, None]
  return (scores_QxC > best_Q[:, None]).sum(-1) + (at_best_QxC & before_QxC).sum(-1)


def caption_retrieval(scores_IxC: np.ndarray, image_of_C: np.ndarray,
                      ks: Sequence[int], text_only: bool = False) -> dict[str, float]:
  """CLIP_benchmark's retrieval metrics of image-caption scores scores_IxC (image i, caption c;
  caption c describes image image_of_C[c]): text retrieval for each k, and unless `text_only`
  image retrieval."""
  positive_IxC = np.arange(scores_IxC.shape[0])[:, None] == np.asarray(image_of_C)[None]
  out = {f"text_retrieval_recall@{k}": r
         for k, r in recall_at_k(scores_IxC, positive_IxC, ks).items()}
  if not text_only:
    out.update({f"image_retrieval_recall@{k}": r
                for k, r in recall_at_k(scores_IxC.T, positive_IxC.T, ks).items()})
  return out
