"""`python -m ig_captioner.tools.concept_frequency` on the session's trained run: per-class
accuracy and caption frequency, written as JSON, a table and a figure."""

import json

import numpy as np

from ig_captioner import inference
from ig_captioner.data import concept_counts
from ig_captioner.data import sources
from tests import helpers


def test_report_of_a_trained_run(trained_runlocal, tmp_path):
  made = helpers.run_module("ig_captioner.tools.concept_frequency",
                            f"--workdir={trained_runlocal}", f"--out={tmp_path}")
  assert made.returncode == 0, made.stderr[-3000:]
  (result,) = json.loads((tmp_path / "concept_frequency.json").read_text())
  assert (tmp_path / "concept_frequency.png").stat().st_size > 1000
  assert "points per tenfold frequency" in (tmp_path / "concept_frequency.md").read_text()

  run = inference.load_run(trained_runlocal)
  task = run.task()
  names = [row["class"] for row in result["classes"]]
  assert names == task.class_names and result["step"] == run.step
  # The counts are the training captions' (digits: the prior is a Zipf law, every class named).
  texts = sources.caption_texts(run.config.data)
  counts, total = concept_counts.count(texts, names)
  assert [row["captions_naming"] for row in result["classes"]] == counts.tolist()
  assert result["captions"] == total == len(texts) and counts.min() > 0
  # Per-class accuracy, weighted by the classes' images, is the split's top-1 at each alpha.
  examples = task.examples()
  scores = run.classify(examples.images_BxHxWx3, names, task.templates, alphas=(0.0, 1.0),
                        top_k=1)
  images_C = np.bincount(examples.labels_B, minlength=len(names))
  for alpha in (0.0, 1.0):
    per_class_C = np.array([row[f"top1_alpha{alpha:g}"] for row in result["classes"]])
    top1 = np.mean(scores["ig"][alpha]["topk_BxK"][:, 0] == examples.labels_B)
    assert abs(np.sum(per_class_C * images_C) / images_C.sum() - top1) < 1e-9
