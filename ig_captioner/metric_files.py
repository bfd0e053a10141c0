"""Metrics files: one JSON line per row under the workdir, read and repaired without TensorFlow
(the writers, with TensorBoard, are `metric_writing`).

A file (`<workdir>/<name>_metrics.jsonl`, e.g. `train_metrics.jsonl`) holds rows such as
`{"step": 100, "loss": 2.3, ...}`, each step at most once: `repair` drops a line torn by a killed
process and, when a trainer resumes from a checkpoint, the rows it is about to log again.
"""

import json

from absl import logging

from ig_captioner import errors
from ig_captioner import paths


def jsonl_path(workdir: str, name: str) -> str:
  return paths.join(workdir, f"{name}_metrics.jsonl")


def _parse(path: str) -> tuple[list[dict], list[int], bool]:
  """(rows, numbers of unreadable lines, whether the file ends inside a line)."""
  rows, bad = [], []
  text = paths.path(path).read_bytes().decode("utf-8", errors="replace")
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
  if not paths.path(path).exists():
    return []
  rows, bad, _ = _parse(path)
  if bad:
    logging.warning("%s: skipped unreadable line(s) %s", path, bad)
  return rows


def repair(path: str, *, after_step: int | None = None,
           fix: str = "choose another --workdir") -> None:
  """Rewrites `path` without unreadable lines (warning) and, if `after_step` is given, without
  rows of later steps (a resumed trainer logs them again). Atomic; a no-op if nothing changes."""
  if not paths.path(path).exists():
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
  try:
    paths.write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
  except OSError as e:
    raise errors.OutputError(f"cannot rewrite {path} ({e.strerror or e}): make its directory "
                             f"writable or {fix}") from e
