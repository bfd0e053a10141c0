"""Two JAX processes on localhost (4 CPU devices each): per-process data, checkpoints, evaluator."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from ig_captioner import evaluate
from ig_captioner import metric_files
from tests import web_shard_files
from tests.conftest import REPO

TIMEOUT_S = 240  # A run takes about 70 s on 2 cores.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_and_wait(data_dir: str, out) -> list[int] | None:
  """Runs the two workers into `out`; their exit codes, or None if they ran past TIMEOUT_S (then
  every thread's Python stack is dumped into their logs first)."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="")
  logs = [open(out / f"log_{i}.txt", "w") for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.multihost_worker", str(i), str(port), data_dir, str(out)],
      cwd=REPO, env=env, stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
  try:
    return [p.wait(timeout=TIMEOUT_S) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.send_signal(signal.SIGUSR1)
    time.sleep(3)
    return None
  finally:
    for p in procs:
      p.kill()
    for log in logs:
      log.close()


def _tails(out, codes) -> str:
  return "\n".join(f"--- process {i} (exit {None if codes is None else codes[i]}):\n" +
                   (out / f"log_{i}.txt").read_text()[-12000:] for i in range(2))


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
  # A hang is retried once, with its stacks reported: on 2-core machines the two processes'
  # CPU (gloo) collectives have, rarely, stopped making progress with every Python thread idle
  # or waiting in XLA (seen once in CI; cause not yet found, see the stack dump). A failure, or a
  # second hang, fails.
  for attempt in range(2):
    out = tmp_path_factory.mktemp("multihost")
    usable = web_shard_files.write_tar_shards(out / "tars")
    (out / "tars_usable.json").write_text(json.dumps(sorted(usable)))
    codes = _start_and_wait(data_dir, out)
    if codes is not None:
      break
    warnings.warn(f"the two-process run hung (attempt {attempt + 1}, limit {TIMEOUT_S}s); "
                  f"logs in {out}:\n{_tails(out, codes)[-4000:]}")
  if codes != [0, 0]:
    pytest.fail(f"the two-process run failed or hung (limit {TIMEOUT_S}s):\n{_tails(out, codes)}")
  return out


def test_processes_read_disjoint_webdataset_shards(two_process_run):
  texts = [json.loads((two_process_run / f"tar_texts_{i}.json").read_text()) for i in range(2)]
  assert texts[0] and texts[1] and not set(texts[0]) & set(texts[1])
  assert sorted(texts[0] + texts[1]) == json.loads(
      (two_process_run / "tars_usable.json").read_text())


def test_processes_agree_and_resume_matches_straight_run(two_process_run):
  params = [dict(np.load(two_process_run / f"params_{i}.npz")) for i in range(2)]
  assert params[0].keys() == params[1].keys() and params[0]
  for name, value in params[0].items():
    np.testing.assert_array_equal(value, params[1][name], err_msg=name)  # Same on both.
    if name.startswith("straight:"):  # Resuming restored both processes' iterators exactly.
      np.testing.assert_array_equal(params[0]["resumed:" + name[9:]], value, err_msg=name)
      np.testing.assert_array_equal(params[0]["sigterm:" + name[9:]], value, err_msg=name)


def test_sigterm_to_one_process_stops_both_at_the_same_step(two_process_run):
  reports = [json.loads((two_process_run / f"sigterm_{i}.json").read_text()) for i in range(2)]
  stops = [report["stopped_at"] for report in reports]
  # Checkpointing synchronised the processes on the host only, never with a device barrier.
  assert [report["device_barriers"] for report in reports] == [[], []]
  # Process 1 voted to stop after its step 4; the votes are read one step late.
  assert stops == [5, 5]
  checkpoints = sorted(int(p) for p in os.listdir(two_process_run / "sigterm" / "checkpoints"))
  assert checkpoints == [5, 6]


def test_each_process_checkpoints_its_own_data_shard(two_process_run):
  # (That the processes' shards are disjoint and complete: tests/unit/test_mixture.py.)
  data_iter = two_process_run / "resumed" / "checkpoints" / "3" / "data_iter"
  for i in range(2):
    state = json.loads((data_iter / f"process_{i}-of-2.json").read_text())
    assert state, i  # This process's position in its own shard of the mixture.
  # Only process 0 writes metrics: one row per logged step, and the same losses as straight.
  losses = {}
  for run in ("straight", "resumed"):
    rows = metric_files.read_jsonl(metric_files.jsonl_path(str(two_process_run / run), "train"))
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), (run, steps)
    losses[run] = {r["step"]: r["loss"] for r in rows}
  assert losses["resumed"][6] == losses["straight"][6]


def test_two_process_evaluator_matches_one_process(two_process_run, runlocal_config, tmp_path):
  results = [json.loads((two_process_run / f"eval_{i}.json").read_text()) for i in range(2)]
  assert results[0] == results[1] and sorted(results[0]) == ["3", "6"]
  # The same checkpoints, evaluated by this (single, 8-device) process.
  shutil.copytree(two_process_run / "resumed" / "checkpoints", tmp_path / "checkpoints")
  single = evaluate.evaluate(runlocal_config, str(tmp_path), poll_interval_s=0.1, timeout_s=5)
  assert {str(step): m for step, m in single.items()} == results[0]
