"""The sweep's pieces: runs expanded per seed and aggregated to mean and sample std, the summary
file an `--only` sweep merges into, a signal passed to the running step (the whole sweep end to
end: tests/e2e/test_sweep.py)."""

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from ig_captioner.tools import sweep
from ig_captioner.tools import sweep_tables


def test_an_only_sweep_keeps_the_other_runs_in_the_summary(tmp_path):
  path = str(tmp_path / sweep_tables.SUMMARY)
  order = ["a", "b", "seeded", "c"]
  sweep_tables.write_summary(path, [("a", {"top1": 0.1}), ("seeded (n=2)", {
      "top1": sweep_tables.Spread(0.5, 0.1, 2)}), ("gone", {"top1": 0.9})])
  previous = sweep_tables.read_summary(path)
  assert previous[1] == ("seeded (n=2)", {"top1": sweep_tables.Spread(0.5, 0.1, 2)})
  merged = sweep_tables.merge_summary(previous, [("c", {"top1": 0.3}), ("a", {"top1": 0.2})], order)
  # 'a' replaced, 'seeded' kept, 'gone' (no longer in the sweep) dropped, sweep order.
  assert merged == [("a", {"top1": 0.2}),
                    ("seeded (n=2)", {"top1": sweep_tables.Spread(0.5, 0.1, 2)}),
                    ("c", {"top1": 0.3})]
  assert sweep_tables.merge_summary([], [("b", {})], order) == [("b", {})]


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


def test_seeds_expand_to_runs_and_aggregate_to_mean_and_sample_std():
  module = type("Module", (), {"sweep": staticmethod(lambda add: (
      add(label="IG", arg="family=captioner", seeds=(0, 1, 2), **{"objective.x": 1}),
      add(label="CLIP", arg="family=clip")))})
  runs = sweep.sweep_runs(module)
  assert [r.label for r in runs] == ["IG seed=0", "IG seed=1", "IG seed=2", "CLIP"]
  assert [r.overrides for r in runs[:3]] == [
      {"objective.x": 1, "seed": s, "data.shuffle_seed": s} for s in (0, 1, 2)]
  assert len({r.directory for r in runs}) == 4 and runs[3].group == ""

  top1 = [0.5, 0.625, 0.75]
  results = [("IG", {"top1": t, "top1_alpha1.0": t + 0.125, "step": 9}) for t in top1]
  results.insert(1, ("CLIP", {"top1": 0.8}))
  merged = dict(sweep_tables.aggregate_seeds(results))
  assert list(merged) == ["IG (n=3)", "CLIP"] and merged["CLIP"] == {"top1": 0.8}
  spread = merged["IG (n=3)"]["top1"]
  assert (spread.mean, spread.n) == (pytest.approx(np.mean(top1)), 3)
  assert spread.std == pytest.approx(np.std(top1, ddof=1))
  rows = sweep_tables.table_rows("IG (n=3)", merged["IG (n=3)"], {"top-1": "top1"}, (1.0,))
  assert rows == [["IG (n=3)", "62.5 ± 12.5"], ["IG (n=3), alpha=1", "75.0 ± 12.5"]]
