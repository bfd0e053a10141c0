"""The main job's path: the sweep runner trains and evaluates every run and prints the table."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ig_captioner import metric_writing
from ig_captioner import sweep
from tests.conftest import REPO


def test_sweep_runs_trainer_and_evaluator_and_prints_table(data_dir, tmp_path):
  cmd = [sys.executable, "-m", "ig_captioner.sweep", "--config=configs/demo.py:runlocal",
         f"--workdir={tmp_path}", f"--set=config.data.data_dir={data_dir}"]
  out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  for run in ("text_only_weight=0.0", "text_only_weight=1.0"):
    rows = metric_writing.read_jsonl(metric_writing.jsonl_path(str(tmp_path / run), "eval"))
    assert [r["step"] for r in rows] == [6]
    accuracy = rows[0]["zeroshot/digits/top1_alpha1.0"]
    assert f"{100 * accuracy:.1f}" in out
  assert "| standard captioner (text_only_weight=0.0) |" in out
  assert "| IG captioner (text_only_weight=1.0) |" in out
  assert "| run | alpha=0 | alpha=0.5 | alpha=1 |" in out

  # Rerunning reuses finished runs: no trainer or evaluator is started again.
  again = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  assert "ig_captioner.train" not in again and "ig_captioner.evaluate" not in again


def test_a_signal_is_passed_to_the_running_step_and_stops_the_sweep(tmp_path):
  marker = tmp_path / "got_sigterm"
  child = ("import signal, sys, time\n"
           f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), "
           "sys.exit(0)))\n"
           "time.sleep(60)\n")
  handler = signal.getsignal(signal.SIGTERM)
  threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
  start = time.monotonic()
  with pytest.raises(sweep.Stopped, match="SIGTERM"):
    sweep._run([sys.executable, "-c", child])  # pylint: disable=protected-access
  assert marker.exists() and time.monotonic() - start < 30
  assert signal.getsignal(signal.SIGTERM) is handler
