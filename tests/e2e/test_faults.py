"""Fault injection: signals, kills during a save, bit rot, unwritable and full disks, pruned and
corrupt steps under a watching evaluator, torn metrics lines, and the messages users see."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import evaluate
from ig_captioner import metric_files
from ig_captioner import sharding
from ig_captioner import train
from tests import helpers
from tests.conftest import REPO, load_config_module


def _config(data_dir):
  config = load_config_module("demo").get_config("runlocal")
  config.data.data_dir = data_dir
  return config


def _params_np(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def _rows(workdir, name="train"):
  return metric_files.read_jsonl(metric_files.jsonl_path(str(workdir), name))


def _steps(workdir):
  return checkpointing.Checkpointer(str(workdir), read_only=True).all_steps()


def _train_cli(data_dir, workdir, *overrides) -> None:
  """Trains in another process: tensorstore serves what a process wrote from its cache, so
  damage done to those files shows only to other processes (as in real use)."""
  proc = _run_cli(["ig_captioner.train", "--config=configs/demo.py:runlocal",
                   f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *overrides])
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def straight(trained_runlocal):
  """An uninterrupted runlocal run (checkpoints at 3 and 6, trained by the command-line
  trainer): its workdir, params and rows."""
  workdir = pathlib.Path(trained_runlocal)
  params = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "6" / "params")
  return workdir, jax.tree.map(np.asarray, params), _rows(workdir)


@pytest.fixture
def trained_copy(straight, tmp_path):
  """A copy of the straight run's workdir, free to damage."""
  shutil.copytree(straight[0], tmp_path / "run")
  return tmp_path / "run"


def _run_cli(args, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m"] + args, cwd=REPO, capture_output=True, text=True,
                        **kwargs)


def _last_line(proc) -> str:
  return proc.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------- Signals ---
def test_sigterm_saves_the_step_under_way_and_resume_matches(data_dir, straight, tmp_path,
                                                             monkeypatch):
  config = _config(data_dir)
  config.checkpoint_every = 100  # Only the signal and the end save.
  batches, global_batch = [], sharding.global_batch_from_local

  def signalling_batch(local, mesh):  # SIGTERM arrives while the 4th step is being prepared.
    batches.append(1)
    if len(batches) == 4:
      os.kill(os.getpid(), signal.SIGTERM)
    return global_batch(local, mesh)
  monkeypatch.setattr(sharding, "global_batch_from_local", signalling_batch)
  real_save = checkpointing.Checkpointer.save

  def save_during_second_signal(self, *args):
    os.kill(os.getpid(), signal.SIGINT)  # A second signal while the checkpoint is written.
    return real_save(self, *args)
  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_during_second_signal)
  handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]

  stopped = train.train(config, str(tmp_path))
  assert int(stopped.step) == 4
  assert _steps(tmp_path) == [4]
  assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
  monkeypatch.undo()

  resumed = train.train(config, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, _params_np(resumed), straight[1])
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows] == [2, 4, 6]
  assert rows[-1]["loss"] == straight[2][-1]["loss"]


def test_sigterm_to_the_command_line_trainer_exits_0_with_a_checkpoint(data_dir, tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "ig_captioner.train", "--config=configs/demo.py:runlocal",
       f"--config.data.data_dir={data_dir}", f"--workdir={tmp_path}",
       "--config.total_steps=100000", "--config.log_every=1", "--config.checkpoint_every=1000"],
      cwd=REPO, stderr=subprocess.PIPE, text=True)
  output = []
  for line in proc.stderr:  # Signal once it is training.
    output.append(line)
    if "step 2/100000" in line:
      proc.send_signal(signal.SIGTERM)
      break
  output += proc.stderr.readlines()
  assert proc.wait(timeout=120) == 0, "".join(output)
  (saved,) = _steps(tmp_path)
  assert 2 <= saved < 100000
  assert f"Stopped at step {saved} (SIGTERM): checkpoint saved" in output[-1]
  assert not [p for p in os.listdir(tmp_path / "checkpoints") if "tmp" in p]


_KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import orbax.checkpoint as ocp
    finalize = ocp.CheckpointManager._finalize
    def finalize_or_die(self, step, steps_to_remove):  # Written, not yet committed.
      if step == 6:
        os.kill(os.getpid(), signal.SIGKILL)
      return finalize(self, step, steps_to_remove)
    ocp.CheckpointManager._finalize = finalize_or_die
    from ig_captioner import config_lib, train
    _, config = config_lib.load_file("configs/demo.py:runlocal")
    config.data.data_dir = sys.argv[1]
    train.train(config, sys.argv[2])
""")


def test_sigkill_during_a_save_then_resume_matches(data_dir, straight, tmp_path):
  killed = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, data_dir, str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert "6.orbax-checkpoint-tmp" in os.listdir(tmp_path / "checkpoints")
  assert _steps(tmp_path) == [3]
  resumed = train.train(_config(data_dir), str(tmp_path))
  assert _steps(tmp_path) == [3, 6]
  assert not [p for p in os.listdir(tmp_path / "checkpoints") if "tmp" in p]
  jax.tree.map(np.testing.assert_array_equal, _params_np(resumed), straight[1])
  assert [r["step"] for r in _rows(tmp_path)] == [2, 4, 6]  # Row 4 logged twice before the fix.


# ------------------------------------------------------------------------------- Bit rot ---
def _silent_byte_flip(item_dir, intact, scratch) -> None:
  """Flips three bytes in a data file of orbax item `item_dir`, at a place found such that plain
  orbax restores the item without any error but with numbers other than `intact`'s (parts of
  the files are not referenced, and flips there change nothing)."""
  data_files = sorted(item_dir.glob("**/d/*"), key=lambda p: p.stat().st_size, reverse=True)
  # Data files hold superseded chunks too; the live ones were found near their starts.
  candidates = [(f, fraction) for fraction in (0.02, 0.05, 0.01, 0.1, 0.2, 0.5, 0.8)
                for f in data_files]
  for i, (data_file, fraction) in enumerate(candidates):
    candidate = scratch / f"candidate{i}"  # A new path each time: tensorstore caches reads.
    shutil.copytree(item_dir, candidate)
    damaged_file = candidate / data_file.relative_to(item_dir)
    data = bytearray(damaged_file.read_bytes())
    offset = int(len(data) * fraction)
    for position in (offset, offset + 7, offset + 100):
      data[min(position, len(data) - 1)] ^= 0x5A
    damaged_file.write_bytes(bytes(data))
    try:
      damaged = ocp.StandardCheckpointer().restore(candidate)
    except Exception:  # pylint: disable=broad-except
      continue  # Caught by tensorstore itself (a b-tree node): not the silent case.
    if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(intact),
                                                     jax.tree.leaves(damaged))):
      shutil.copyfile(damaged_file, data_file)
      return
  raise AssertionError(f"no byte flip in {item_dir} went unnoticed by orbax")


@pytest.mark.parametrize("item", ["params", "train"])
def test_byte_flips_that_orbax_restores_silently_are_detected(data_dir, straight, trained_copy,
                                                            tmp_path, item):
  intact = ocp.StandardCheckpointer().restore(straight[0] / "checkpoints" / "6" / item)
  _silent_byte_flip(trained_copy / "checkpoints" / "6" / item, intact, tmp_path)
  with pytest.raises(checkpointing.CheckpointError,
                     match=rf"step 6 .* does not match the digests .* arrays of '{item}' differ"
                           r".*mv .*/checkpoints/6 .* resumes from step 3"):
    train.train(_config(data_dir), str(trained_copy))


def test_damaged_data_iterator_state_is_detected(data_dir, trained_copy):
  state_file = trained_copy / "checkpoints" / "6" / "data_iter" / "process_0-of-1.json"
  text = state_file.read_text()
  assert '"next_index": 6' in text  # 6 batches read: one changed digit would rewind it.
  state_file.write_text(text.replace('"next_index": 6', '"next_index": 3'))
  with pytest.raises(checkpointing.CheckpointError, match="process_0-of-1.json does not match"):
    train.train(_config(data_dir), str(trained_copy))


# ------------------------------------------------------------------------ Unwritable disks ---
def test_checkpoint_path_that_is_a_file_fails_before_training(data_dir, tmp_path):
  (tmp_path / "checkpoints").write_text("not a directory")
  start = time.monotonic()
  with pytest.raises(checkpointing.CheckpointError, match="is a file, not a directory"):
    train.train(_config(data_dir), str(tmp_path))
  assert time.monotonic() - start < 10
  assert (tmp_path / "checkpoints").read_text() == "not a directory"


def _can_mount() -> bool:
  probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                         capture_output=True, check=False) if shutil.which("unshare") else None
  return probe is not None and probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs `unshare -m` and mount (root)")


def _train_on_tmpfs(data_dir, workdir, mount_options, *overrides):
  """The trainer CLI with `workdir/checkpoints` on a private tmpfs; returns (process, seconds,
  what the tmpfs held at the end)."""
  ckpt_dir = workdir / "checkpoints"
  ckpt_dir.mkdir(parents=True)
  cmd = (f"mount -t tmpfs -o {mount_options} tmpfs {ckpt_dir} && {sys.executable} -m "
         f"ig_captioner.train --config=configs/demo.py:runlocal "
         f"--config.data.data_dir={data_dir} --workdir={workdir} {' '.join(overrides)}; "
         f"rc=$?; ls {ckpt_dir} > {workdir}/listing; exit $rc")
  start = time.monotonic()
  proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, XLA_FLAGS=""))  # 1 device.
  return proc, time.monotonic() - start, (workdir / "listing").read_text().split()


@needs_mount
def test_read_only_checkpoint_disk_fails_in_seconds_with_one_message(data_dir, tmp_path):
  proc, seconds, _ = _train_on_tmpfs(data_dir, tmp_path, "ro")
  assert proc.returncode == 1
  assert _last_line(proc) == (f"error: cannot write checkpoints to {tmp_path}/checkpoints: "
                              "Read-only file system. Make it writable, free space on its disk, "
                              "or choose another --workdir; nothing was written.")
  assert len(proc.stderr.splitlines()) < 10 and seconds < 60


@needs_mount
def test_full_checkpoint_disk_stops_training_with_one_message(data_dir, tmp_path):
  # Room for the step-3 checkpoint (~660 kB on one device), not for the step-6 one.
  proc, _, listing = _train_on_tmpfs(data_dir, tmp_path, "size=1000k",
                                     "--config.total_steps=60", "--config.log_every=1")
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 60, proc.stderr
  assert _last_line(proc).startswith(
      f"error: saving checkpoint step 6 to {tmp_path}/checkpoints failed: No space left on device")
  assert "(latest complete: step 3)" in _last_line(proc)
  assert "3" in listing
  assert _rows(tmp_path)[-1]["step"] < 20  # Stopped at once, not at the end of the run.


# --------------------------------------------------------------------- Watching evaluator ---
def test_watching_evaluator_records_pruned_and_corrupt_steps_and_goes_on(data_dir, tmp_path):
  config = _config(data_dir)
  config.update(checkpoint_every=1, keep_checkpoints=3)
  _train_cli(data_dir, tmp_path, "--config.checkpoint_every=1", "--config.keep_checkpoints=3")
  assert _steps(tmp_path) == [4, 5, 6]  # 1-3 were pruned before anyone evaluated them.
  for data_file in (tmp_path / "checkpoints" / "5" / "params" / "d").iterdir():
    helpers.corrupt_middle_third(data_file)
  eval_path = metric_files.jsonl_path(str(tmp_path), "eval")
  with open(eval_path, "w") as f:
    f.write('{"step": 4, "zeroshot/dig')  # A row torn by a killed evaluator.

  results = evaluate.evaluate(config, str(tmp_path), poll_interval_s=0.1, timeout_s=5)
  assert sorted(results) == [4, 6]
  rows = _rows(tmp_path, "eval")
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r.get("status") for r in rows] == ["skipped"] * 3 + [None, "failed", None]
  assert "pruned" in rows[0]["reason"]
  assert "could not be read" in rows[4]["reason"] and "trainer" not in rows[4]["reason"]
  assert rows[3]["zeroshot/digits/acc1_alpha1.0"] == results[4]["zeroshot/digits/acc1_alpha1.0"]
  # Restarted, it has nothing left to do.
  assert evaluate.evaluate(config, str(tmp_path), poll_interval_s=0.1, timeout_s=1) == {}
  assert len(_rows(tmp_path, "eval")) == 6


def test_evaluating_a_corrupt_step_by_flag_records_and_raises(data_dir, trained_copy):
  # Step 3's params in step 6's place: valid files, wrong numbers (a mixed-up copy).
  params_6 = trained_copy / "checkpoints" / "6" / "params"
  shutil.rmtree(params_6)
  shutil.copytree(trained_copy / "checkpoints" / "3" / "params", params_6)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"step 6 .* does not match the digests.*recorded as failed"):
    evaluate.evaluate(_config(data_dir), str(trained_copy), step=6)
  (row,) = _rows(trained_copy, "eval")
  assert row["step"] == 6 and row["status"] == "failed"


def test_evaluator_that_cannot_write_its_outputs_says_where(data_dir, trained_copy, tmp_path):
  (trained_copy / "tb").mkdir(exist_ok=True)
  (trained_copy / "tb" / "eval").write_text("a file where TensorBoard needs a directory")
  with pytest.raises(errors.OutputError, match=f"cannot write eval metrics under {trained_copy} "
                                               r".*or pass --output_dir="):
    evaluate.evaluate(_config(data_dir), str(trained_copy), step=6)
  results = evaluate.evaluate(_config(data_dir), str(trained_copy), step=6,
                              output_dir=str(tmp_path / "elsewhere"))
  assert [r["step"] for r in _rows(tmp_path / "elsewhere", "eval")] == list(results) == [6]


# -------------------------------------------------------------------- Command-line output ---
def test_command_line_errors_end_with_one_clear_message(data_dir, tmp_path):
  args = ["ig_captioner.train", "--config=configs/demo.py:runlocal",
          f"--config.data.data_dir={data_dir}", f"--workdir={tmp_path}"]
  unknown = _run_cli(args + ["--config.optimizer.lr=1e-3"])
  assert unknown.returncode == 2
  assert _last_line(unknown).startswith(
      "error: unknown config field in --config.optimizer.lr=1e-3: config.optimizer has no field "
      "'lr'; its fields are: b1, b2, clip_norm, final_lr_fraction, learning_rate,")
  assert "Traceback" not in unknown.stderr

  half = _run_cli(args + ["--coordinator_address=127.0.0.1:1234"])  # Multi-host flags, partly.
  assert half.returncode == 1
  assert _last_line(half).startswith("error: --coordinator_address, --num_processes and "
                                     "--process_id go together")
  assert not (tmp_path / "checkpoints").exists()  # Stopped before anything was written.

  keep_all = _run_cli(args + ["--config.keep_checkpoints=None", "--config.checkpoint_every=1"])
  assert keep_all.returncode == 0, keep_all.stderr[-3000:]
  assert _steps(tmp_path) == [1, 2, 3, 4, 5, 6]  # The default keeps 3.

  helpers.corrupt_middle_third(next((tmp_path / "checkpoints" / "6" / "params" / "d").iterdir()))
  corrupt = _run_cli(args)
  assert corrupt.returncode == 1
  assert _last_line(corrupt).startswith(f"error: checkpoint step 6 in {tmp_path}/checkpoints")
  assert _last_line(corrupt).endswith("The trainer then resumes from step 5.")
  assert "Traceback" not in corrupt.stderr and "Event loop is closed" not in corrupt.stderr
  assert len(corrupt.stderr.splitlines()) < 15, corrupt.stderr
