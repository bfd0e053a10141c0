"""The main job's path: the sweep runner trains and evaluates every model family end to end (both
evaluator types, plain-orbax checkpoints) and prints the comparison table."""

import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ig_captioner import checkpointing
from ig_captioner import metric_writing
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import sweep
from ig_captioner import train_state
from tests.conftest import load_config_module
from tests.test_evaluate import retrieval_names
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


def _check_family_outputs(run_dir, captioner: bool, config) -> None:
  """Both evaluator types ran with this family's scoring, and its checkpoint restores with plain
  orbax to the params our (digest-checking) restore gives."""
  (row,) = metric_writing.read_jsonl(metric_writing.jsonl_path(str(run_dir), "eval"))
  zeroshot_names = ({f"zeroshot/{ds}/top1_alpha{a}" for ds in ("digits", "digits_val")
                     for a in (0.0, 0.5, 1.0)} if captioner else
                    {"zeroshot/digits/top1", "zeroshot/digits_val/top1"})
  assert set(row) - {"step"} == zeroshot_names | retrieval_names(captioner)
  assert all(0.0 <= v <= 1.0 for k, v in row.items() if k != "step")
  plain = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / "6" / "params")
  model = models.build(config.model)
  abstract, _ = train_state.abstract_params_and_shardings(
      model.init_params, sharding.make_mesh(config.mesh))
  ours = checkpointing.Checkpointer(str(run_dir), read_only=True).restore_params(6, abstract,
                                                                                 config)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, plain),
               jax.tree.map(np.asarray, jax.device_get(ours)))


def test_sweep_runs_every_model_and_prints_the_comparison(data_dir, tmp_path):
  cmd = [sys.executable, "-m", "ig_captioner.sweep", "--config=configs/demo.py:runlocal",
         f"--workdir={tmp_path}", f"--set=config.data.data_dir={data_dir}"]
  out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  held_out = _tables(out)["held-out splits `zeroshot` and `retrieval`"]
  assert list(held_out) == [
      "standard captioner, alpha=0", "standard captioner, alpha=1", "IG captioner, alpha=0",
      "IG captioner, alpha=1", "CLIP", "SigLIP"]

  def cell(value):
    return f"{100 * value:.1f}"

  for run, label in (("standard-captioner", "standard captioner"),
                     ("ig-captioner", "IG captioner")):
    (row,) = metric_writing.read_jsonl(metric_writing.jsonl_path(str(tmp_path / run), "eval"))
    assert row["step"] == 6
    for alpha in (0, 1):
      assert held_out[f"{label}, alpha={alpha}"] == [
          cell(row[f"zeroshot/digits/top1_alpha{alpha:.1f}"]),
          cell(row[f"retrieval/digits_retrieval/i2t_r1_alpha{alpha:.1f}"]),
          cell(row["retrieval/digits_retrieval/t2i_r1"])]
  for run, label in (("clip", "CLIP"), ("siglip", "SigLIP")):
    (row,) = metric_writing.read_jsonl(metric_writing.jsonl_path(str(tmp_path / run), "eval"))
    assert held_out[label] == [cell(row["zeroshot/digits/top1"]),
                               cell(row["retrieval/digits_retrieval/i2t_r1"]),
                               cell(row["retrieval/digits_retrieval/t2i_r1"])]
  for run, family in (("ig-captioner", "captioner"), ("clip", "clip"), ("siglip", "siglip")):
    config = load_config_module("demo").get_config(f"runlocal,family={family}")
    config.data.data_dir = data_dir
    _check_family_outputs(tmp_path / run, family == "captioner", config)

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
