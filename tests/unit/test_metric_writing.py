"""Metrics files: exactly one row per step after kills and resumes, and torn lines repaired."""

import json

from ig_captioner import metric_files
from ig_captioner import metric_writing


def _write(path, text):
  path.write_text(text, encoding="utf-8")


def test_a_torn_last_line_is_dropped_and_never_swallows_the_next_row(tmp_path, caplog):
  path = tmp_path / "eval_metrics.jsonl"
  _write(path, '{"step": 1, "a": 0.5}\n{"step": 2, "a": 0.25}\n{"step": 3, "a')  # Killed here.
  metric_files.repair(str(path))
  assert "dropped unreadable line(s) [3]" in caplog.text
  writer = metric_writing.JsonLinesWriter(str(path))
  writer.write_scalars(3, {"a": 0.125})
  writer.close()
  assert metric_files.read_jsonl(str(path)) == [
      {"step": 1, "a": 0.5}, {"step": 2, "a": 0.25}, {"step": 3, "a": 0.125}]


def test_without_repair_the_next_row_would_be_lost(tmp_path, caplog):
  """What `repair` prevents: appending after a torn line makes the next row unreadable too."""
  path = tmp_path / "m.jsonl"
  _write(path, '{"step": 1}\n{"step": 2, "a')
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": 2, "a": 1.0}) + "\n")
  assert [r["step"] for r in metric_files.read_jsonl(str(path))] == [1]
  assert "skipped unreadable line(s) [2]" in caplog.text


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
  path = tmp_path / "train_metrics.jsonl"
  _write(path, "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (2, 4, 5)))
  metric_files.repair(str(path), after_step=3)  # Resuming from the step-3 checkpoint.
  assert [r["step"] for r in metric_files.read_jsonl(str(path))] == [2]
  metric_files.repair(str(path), after_step=0)  # No checkpoint: training starts over.
  assert metric_files.read_jsonl(str(path)) == []


def test_status_rows_are_written_beside_scalars(tmp_path):
  writer = metric_writing.create_writer(str(tmp_path), "eval")
  writer.write_scalars(3, {"acc": 0.5})
  writer.write_row({"step": 6, "status": "failed", "reason": "corrupt"})
  writer.close()
  assert metric_files.read_jsonl(metric_files.jsonl_path(str(tmp_path), "eval")) == [
      {"step": 3, "acc": 0.5}, {"step": 6, "status": "failed", "reason": "corrupt"}]
