"""The main job's path: the sweep runner trains and evaluates runs end to end (both evaluator
types, plain-orbax checkpoints) in separate processes and prints the comparison table."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ig_captioner import metric_writing
from ig_captioner import sweep
from tests.conftest import load_config_module
from tests.test_families import check_family_outputs
from tests.conftest import REPO


def _tables(out: str) -> dict[str, dict[str, list[str]]]:
  """The printed markdown tables: {title: {row label: cells}} (titles end with ':')."""
  tables, title = {}, None
  for line in out.splitlines():
    if line.endswith(":") and not line.startswith("|"):
      title = line[:-1]
    elif line.startswith("| ") and title and not line.startswith("| model |"):
      label, *cells = [c.strip() for c in line.strip("|").split("|")]
      tables.setdefault(title, {})[label] = cells
  return tables


def test_sweep_runs_every_model_and_prints_the_comparison(data_dir, tmp_path):
  # Two runs of the six (the others' families are run end to end in test_families.py).
  cmd = [sys.executable, "-m", "ig_captioner.sweep", "--config=configs/demo.py:runlocal",
         f"--workdir={tmp_path}", f"--set=config.data.data_dir={data_dir}",
         "--only=IG captioner", "--only=CLIP"]
  out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  held_out = _tables(out)["held-out splits `zeroshot` and `retrieval`"]
  assert list(held_out) == ["IG captioner, alpha=0", "IG captioner, alpha=1", "CLIP"]

  def cell(value):
    return f"{100 * value:.1f}"

  for run, label in (("ig-captioner", "IG captioner"),):
    (row,) = metric_writing.read_jsonl(metric_writing.jsonl_path(str(tmp_path / run), "eval"))
    assert row["step"] == 6
    for alpha in (0, 1):
      assert held_out[f"{label}, alpha={alpha}"] == [
          cell(row[f"zeroshot/digits/top1_alpha{alpha:.1f}"]),
          cell(row[f"retrieval/digits_retrieval/i2t_r1_alpha{alpha:.1f}"]),
          cell(row["retrieval/digits_retrieval/t2i_r1"])]
  for run, label in (("clip", "CLIP"),):
    (row,) = metric_writing.read_jsonl(metric_writing.jsonl_path(str(tmp_path / run), "eval"))
    assert held_out[label] == [cell(row["zeroshot/digits/top1"]),
                               cell(row["retrieval/digits_retrieval/i2t_r1"]),
                               cell(row["retrieval/digits_retrieval/t2i_r1"])]
  for run, family in (("ig-captioner", "captioner"), ("clip", "clip")):
    config = load_config_module("demo").get_config(f"runlocal,family={family}")
    config.data.data_dir = data_dir
    check_family_outputs(tmp_path / run, family, config)

  # Rerunning reuses finished runs: no trainer or evaluator is started again.
  again = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  assert "ig_captioner.train" not in again and "ig_captioner.evaluate" not in again
  assert _tables(again) == _tables(out)


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
