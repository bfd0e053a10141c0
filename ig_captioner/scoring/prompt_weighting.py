"""Zero-shot prompt ensembles beyond the equal-weight average of `class_scores.py`: how the
scores of a class's prompts combine, how templates are weighted without labels, and prompts
from per-class descriptions. Host-side (numpy), on per-prompt scores s (B images x P prompts):
for two towers the per-prompt logit 100 * cos(image, prompt) (CLIP_benchmark's fixed scale),
for captioners s = log P(t|I) - alpha * log P(t).

- `logmeanexp`: a class scores log(mean_p exp(s_p)) over its prompts; for captioners the log
  of the arithmetic mean of the likelihood ratios, where the equal average is their geometric
  mean.
- ZPE (Allingham et al., *A Simple Zero-shot Prompt Weighting Technique to Improve Prompt
  Ensembling in Text-Image Models*, ICML 2023; definitions from the authors' notebook,
  google/uncertainty-baselines `experimental/multimodal`): template k scores
      z_k = mean_i max_c [s_ick - (m_pre_ck + m_test_ck) / 2]
  over unlabeled test images i, with m the mean of s over a sample of pretraining images and
  over the test images; the weights are softmax_k(z) and a class scores sum_k w_k s_ick. For a
  captioner this pairs with IG: both remove what a prompt says about the caption data rather
  than the image.
- descriptions: per-class sentences instead of templates (CuPL, Pratt et al. 2023), in
  CLIP_benchmark's `cupl_prompts.json` layout: {key: {class name: [sentence, ...]}}.

Prompts are class-major: `class_P` is non-decreasing (every class's prompts together).
Shape letters: X leading axes (alphas), B images, P prompts, C classes, K templates.
"""

import importlib.resources
import json
from typing import Sequence

import numpy as np

from ig_captioner import errors
from ig_captioner import paths

WEIGHTINGS = ("equal", "logmeanexp", "zpe")
EMBEDDING_SCALE = 100.0  # CLIP_benchmark's logit scale of the per-prompt cosine.


def _starts(class_P: np.ndarray, num_classes: int) -> np.ndarray:
  class_P = np.asarray(class_P)
  if np.any(np.diff(class_P) < 0) or set(np.unique(class_P)) != set(range(num_classes)):
    raise ValueError("prompts must be class-major, with at least one prompt per class")
  return np.searchsorted(class_P, np.arange(num_classes))


def combine(scores_XxBxP: np.ndarray, class_P: np.ndarray, num_classes: int,
            how: str = "mean", weights_P: np.ndarray | None = None) -> np.ndarray:
  """Class scores X x B x C: each class's prompts' scores averaged (`how='mean'`, weighted by
  `weights_P` normalised within the class) or log-mean-exp'd ('logmeanexp')."""
  s = np.asarray(scores_XxBxP, np.float64)
  starts = _starts(class_P, num_classes)
  w_P = np.ones(s.shape[-1]) if weights_P is None else np.asarray(weights_P, np.float64)
  total_C = np.add.reduceat(w_P, starts)
  if how == "mean":
    return np.add.reduceat(s * w_P, starts, axis=-1) / total_C
  if how == "logmeanexp":
    top = np.maximum.reduceat(s, starts, axis=-1)
    shifted = np.exp(s - np.repeat(top, np.diff(np.append(starts, s.shape[-1])), axis=-1))
    return top + np.log(np.add.reduceat(shifted * w_P, starts, axis=-1) / total_C)
  raise ValueError(f"how={how!r} is not 'mean' or 'logmeanexp'")


def zpe_template_scores(scores_XxBxP: np.ndarray, mean_XxP: np.ndarray,
                        num_classes: int) -> np.ndarray:
  """Sum over the images of max_c (s_ick - m_ck), per template: X x K (templates' prompts are
  class-major, P = C x K)."""
  s = np.asarray(scores_XxBxP, np.float64) - np.asarray(mean_XxP)[..., None, :]
  shape = s.shape[:-1] + (num_classes, s.shape[-1] // num_classes)
  return s.reshape(shape).max(axis=-2).sum(axis=-2)


def softmax(z_XxK: np.ndarray) -> np.ndarray:
  z = np.asarray(z_XxK, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def read_descriptions(path: str, class_names: Sequence[str],
                      key: str | None = None) -> tuple[list[str], np.ndarray]:
  """(prompts, class_P) of a descriptions file for `class_names` (in label order); a bare
  file name not found is looked up among the package's metadata (`digits_descriptions.json`).
  ConfigError naming what is wrong with the file."""
  shipped = importlib.resources.files("ig_captioner.data").joinpath("metadata", path)
  if "/" not in path and not paths.path(path).exists() and shipped.is_file():
    path = str(shipped)  # A bare name: the package's own file of that name.
  try:
    table = json.loads(paths.path(path).read_text())
  except FileNotFoundError as e:
    raise errors.ConfigError(f"descriptions file {path} does not exist") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.ConfigError(f"descriptions file {path} is not JSON ({e}): it takes "
                             "CLIP_benchmark's cupl_prompts.json layout") from e
  if not isinstance(table, dict) or not table:
    raise errors.ConfigError(f"descriptions file {path} holds no {{key: {{class: [sentences]}}}} "
                             "table (CLIP_benchmark's cupl_prompts.json layout)")
  if key is None:
    if len(table) != 1:
      raise errors.ConfigError(f"descriptions file {path} holds {sorted(table)}: name one with "
                               "descriptions_key")
    key = next(iter(table))
  if key not in table:
    raise errors.ConfigError(f"descriptions file {path} has no {key!r}; it has {sorted(table)}")
  per_class = table[key]
  missing = [c for c in class_names if not per_class.get(c)]
  if missing:
    raise errors.ConfigError(f"descriptions {key!r} of {path} have no sentences for "
                             f"{len(missing)} classes (e.g. {missing[0]!r}): they must name "
                             "every class as the evaluator does")
  prompts, class_P = [], []
  for c, name in enumerate(class_names):
    sentences = per_class[name]
    if not all(isinstance(t, str) and t.strip() for t in sentences):
      raise errors.ConfigError(f"descriptions of {name!r} in {path} are not all sentences")
    prompts += list(sentences)
    class_P += [c] * len(sentences)
  return prompts, np.asarray(class_P, np.int64)
