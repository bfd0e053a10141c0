"""The IG study end to end on two tiny runs: the sweep, its report and figures."""

import json


from ig_captioner.tools import sweep
from ig_captioner.tools import sweep_tables
from tests.conftest import REPO


def test_study_runs_end_to_end_with_report_and_figures(data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  monkeypatch.chdir(REPO)
  only = ["noisy, mu, separate batch, lambda=1 seed=0"]  # One run: the suite stays short.
  sweep.run_sweep("configs/ig_study.py:runlocal", str(tmp_path), [], only)
  out = capsys.readouterr().out
  assert "Alpha chosen on the validation split" in out
  assert "| noisy, mu, separate batch | 1 | " in out
  for name in ("accuracy_vs_alpha.png", "diagnostics_over_steps.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  summary = json.load(open(tmp_path / sweep_tables.SUMMARY))
  assert {r["label"] for r in summary} == {o.split(" seed=")[0] for o in only}
  for row in summary:
    assert "diagnostics/diagnostics/info_gain_per_token" in row["metrics"]
  # Every checkpoint was evaluated (the diagnostics' curve), not only the last.
  rows = [json.loads(line) for line in open(
      tmp_path / "noisy-mu-separate-batch-lambda=1-seed=0" / "eval_metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4]
  train_rows = [json.loads(line) for line in open(
      tmp_path / "noisy-mu-separate-batch-lambda=1-seed=0" / "train_metrics.jsonl")]
  assert "ce_text_only" in train_rows[-1] and "info_gain_per_token" not in train_rows[-1]
