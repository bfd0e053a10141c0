"""Metric output: TensorBoard and logging via clu, plus one JSON line per write under the workdir.

JSON lines (`<workdir>/<name>_metrics.jsonl`, e.g. `train_metrics.jsonl`) are the form scripts and
notebooks read, with `metric_files` (which needs no TensorFlow). Only process 0 writes files.
"""

import json
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers

from ig_captioner import errors
from ig_captioner import metric_files
from ig_captioner import paths


class JsonLinesWriter(metric_writers.MetricWriter):
  """Appends `{"step": s, **scalars}` lines to a file; other summary kinds are ignored.

  A bucket has no append: there the whole file is written again with each row (metrics files
  are kilobytes), each time a complete object."""

  def __init__(self, path: str):
    self.path = path
    target = paths.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if paths.is_remote(target):
      self._file = None
      self._text = target.read_text() if target.exists() else ""
    else:
      self._file = target.open("a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self.write_row({"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}})

  def write_row(self, row: Mapping[str, Any]):
    """Appends any JSON-serializable row (e.g. `{"step": 20, "status": "skipped", ...}`)."""
    line = json.dumps(row) + "\n"
    if self._file is None:
      self._text += line
      paths.path(self.path).write_text(self._text)
      return
    self._file.write(line)
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
    if self._file is not None:
      self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()


class RunWriter(metric_writers.MultiWriter):
  """clu's MultiWriter plus `write_row`, for rows that are not scalars (JSON lines only)."""

  def __init__(self, writers, json_lines: JsonLinesWriter | None):
    super().__init__(writers)
    self._json_lines = json_lines

  def write_row(self, row: Mapping[str, Any]):
    if self._json_lines is not None:
      self._json_lines.write_row(row)


def create_writer(workdir: str, name: str,
                  fix: str = "choose another --workdir") -> RunWriter:
  """TensorBoard under `<workdir>/tb/<name>` + JSON lines + logging on process 0; logging
  elsewhere. Raises OutputError, ending with `fix`, if they cannot be written."""
  if jax.process_index() > 0:
    return RunWriter([metric_writers.create_default_writer(None, just_logging=True)], None)
  try:
    json_lines = JsonLinesWriter(metric_files.jsonl_path(workdir, name))
    tensorboard = metric_writers.create_default_writer(paths.join(workdir, "tb", name),
                                                       asynchronous=False)
  except Exception as e:  # OSError, or TensorFlow's PermissionDeniedError for tb/.
    raise errors.OutputError(
        f"cannot write {name} metrics under {workdir} ({type(e).__name__}: {e}). Make the "
        f"directory writable or {fix}.") from e
  return RunWriter([tensorboard, json_lines], json_lines)
