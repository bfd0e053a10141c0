"""Metric output: TensorBoard and logging via clu, plus one JSON line per write under the workdir.

JSON lines (`<workdir>/<name>_metrics.jsonl`, e.g. `train_metrics.jsonl`) are the form scripts and
notebooks read: `{"step": 100, "loss": 2.3, ...}`. Only process 0 writes files. A file holds each
step at most once: `repair` drops a line torn by a killed process and, when a trainer resumes
from a checkpoint, the rows it is about to log again.
"""

import json
import os
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np
from clu import metric_writers

from ig_captioner import errors


class JsonLinesWriter(metric_writers.MetricWriter):
  """Appends `{"step": s, **scalars}` lines to a file; other summary kinds are ignored."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self.write_row({"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}})

  def write_row(self, row: Mapping[str, Any]):
    """Appends any JSON-serializable row (e.g. `{"step": 20, "status": "skipped", ...}`)."""
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


def _parse(path: str) -> tuple[list[dict], list[int], bool]:
  """(rows, numbers of unreadable lines, whether the file ends inside a line)."""
  rows, bad = [], []
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  for number, line in enumerate(text.splitlines(), start=1):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or "step" not in row:
        raise ValueError("not a metrics row")
      rows.append(row)
    except ValueError:  # JSONDecodeError included.
      bad.append(number)
  return rows, bad, bool(text) and not text.endswith("\n")


def read_jsonl(path: str) -> list[dict]:
  """All rows of a metrics file ([] if it does not exist); unreadable lines are skipped with a
  warning (a process killed mid-write leaves a torn last line)."""
  if not os.path.exists(path):
    return []
  rows, bad, _ = _parse(path)
  if bad:
    logging.warning("%s: skipped unreadable line(s) %s", path, bad)
  return rows


def repair(path: str, *, after_step: int | None = None,
           fix: str = "choose another --workdir") -> None:
  """Rewrites `path` without unreadable lines (warning) and, if `after_step` is given, without
  rows of later steps (a resumed trainer logs them again). Atomic; a no-op if nothing changes."""
  if not os.path.exists(path):
    return
  rows, bad, torn = _parse(path)
  kept = [r for r in rows if after_step is None or r["step"] <= after_step]
  if not bad and not torn and len(kept) == len(rows):
    return
  if bad:
    logging.warning("%s: dropped unreadable line(s) %s (a write cut short by a killed process)",
                    path, bad)
  if len(kept) < len(rows):
    logging.info("%s: dropped %d row(s) after step %d, logged after the checkpoint this run "
                 "resumes from; they are logged again.", path, len(rows) - len(kept), after_step)
  tmp = path + ".tmp"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
  except OSError as e:
    raise errors.OutputError(f"cannot rewrite {path} ({e.strerror or e}): make its directory "
                             f"writable or {fix}") from e


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
    json_lines = JsonLinesWriter(jsonl_path(workdir, name))
    tensorboard = metric_writers.create_default_writer(os.path.join(workdir, "tb", name),
                                                       asynchronous=False)
  except Exception as e:  # OSError, or TensorFlow's PermissionDeniedError for tb/.
    raise errors.OutputError(
        f"cannot write {name} metrics under {workdir} ({type(e).__name__}: {e}). Make the "
        f"directory writable or {fix}.") from e
  return RunWriter([tensorboard, json_lines], json_lines)
