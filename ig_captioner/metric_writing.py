"""Metric output: TensorBoard and logging via clu, plus one JSON line per write under the workdir.

JSON lines (`<workdir>/<name>_metrics.jsonl`, e.g. `train_metrics.jsonl`) are the form scripts and
notebooks read: `{"step": 100, "loss": 2.3, ...}`. Only process 0 writes files.
"""

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers


class JsonLinesWriter(metric_writers.MetricWriter):
  """Appends `{"step": s, **scalars}` lines to a file; other summary kinds are ignored."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def jsonl_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, f"{name}_metrics.jsonl")


def read_jsonl(path: str) -> list[dict]:
  """All rows of a metrics file ([] if it does not exist); a torn last line is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # A process killed mid-write leaves at most one partial line.
  return rows


def create_writer(workdir: str, name: str) -> metric_writers.MetricWriter:
  """TensorBoard under `<workdir>/tb/<name>` + JSON lines + logging on process 0; logging elsewhere."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(None, just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(os.path.join(workdir, "tb", name), asynchronous=False),
      JsonLinesWriter(jsonl_path(workdir, name)),
  ])
