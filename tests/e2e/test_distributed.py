"""The trainer started as two SLURM tasks joins from SLURM's variables alone and trains. The
detection and the meshes over slices are in tests/unit/test_distributed.py; the longer
two-process run is tests/e2e/test_multihost.py."""

import os
import random
import subprocess
import sys


from ig_captioner import metric_files
from tests.conftest import REPO


def test_the_trainer_runs_as_two_slurm_tasks_without_flags(data_dir, tmp_path):
  """`python -m ig_captioner.train` started twice with the variables `srun` sets and no
  multi-host flag: JAX's own SLURM detection forms the job, and the two processes train one
  model together (each its share of every batch) to the last step."""
  job = str(random.randrange(10**6))
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               SLURM_JOB_ID=job, SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
               SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_STEP_NUM_NODES="1",
               JAX_PLATFORMS="cpu", IG_CAPTIONER_VERBOSE="1")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "ig_captioner.train", "--config=configs/demo.py:runlocal",
         f"--config.data.data_dir={data_dir}", f"--workdir={tmp_path}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  try:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output[-4000:]
  rows = metric_files.read_jsonl(metric_files.jsonl_path(str(tmp_path), "train"))
  assert rows and rows[-1]["step"] == 6  # demo.py:runlocal's total_steps, written by process 0.
  data_iter = tmp_path / "checkpoints" / "6" / "data_iter"  # One iterator state per process.
  assert sorted(p.name for p in data_iter.glob("process_*.json")) == [
      "process_0-of-2.json", "process_1-of-2.json"]

