"""xpk renders the GKE JobSet in its own dry-run mode, and the sweep hands each unfinished run to
a remote launcher (the rendered commands themselves: tests/unit/test_launchers.py)."""

import os
import subprocess
import sys

import pytest

from ig_captioner import metric_files
from tests import helpers
from tests.conftest import REPO

# Overrides a shell would mangle without quoting: spaces, braces, quotes, a $ and a glob.
OVERRIDES = ("--config.data.name=a b", '--config.mesh={"data": 2, "fsdp": -1}',
             "--config.note=it's $HOME *")


def _xpk_binary() -> str:
  """xpk from .venv-xpk, made by launch/xpk_venv.sh if missing (a local package index)."""
  made = subprocess.run(["bash", "launch/xpk_venv.sh"], cwd=REPO, capture_output=True, text=True,
                        timeout=600, check=False)
  if made.returncode:
    pytest.skip(f"xpk's environment could not be made (launch/xpk_venv.sh: "
                f"{made.stderr.strip()[-300:]})")
  return made.stdout.strip()


def test_xpk_script_dry_run_renders_the_jobset_with_xpk_itself(tmp_path):
  out = subprocess.run(
      ["bash", "launch/xpk.sh", "c1", "v5litepod-16", "configs/demo.py", "gs://b/run",
       "--zone=us-central2-b", "--project=p", "--docker_image=gcr.io/p/ig:1", "--num_slices=2",
       "--evaluate", "--", *OVERRIDES],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, "DRY_RUN": "1", "XPK": _xpk_binary(), "HOME": str(tmp_path)})
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  text = out.stdout + out.stderr
  assert "kind: JobSet" in text and "name: run" in text and "replicas: 2" in text
  assert "cloud.google.com/gke-tpu-topology: 4x4" in text and "image: gcr.io/p/ig:1" in text
  # The pod's shell runs our command as rendered, overrides quoted.
  (line,) = [l.strip() for l in text.splitlines() if l.strip().startswith("(python3 -m ")]
  assert helpers.shell_programs(line.removeprefix("(").rsplit(") & PID=", 1)[0]) == [
      ["ig_captioner.train", "--config=configs/demo.py", *OVERRIDES, "--workdir=gs://b/run"],
      ["ig_captioner.evaluate", "--config=configs/demo.py", *OVERRIDES, "--workdir=gs://b/run",
       "--once"]]
  assert "Would submit run with the xpk launcher" in out.stdout


def _sweep(*args):
  cmd = [sys.executable, "-m", "ig_captioner.tools.sweep", "--config=configs/demo.py:runlocal",
         *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)


def test_sweep_hands_each_unfinished_run_to_a_remote_launcher_and_trains_nothing(tmp_path):
  workdir = tmp_path / "sweep"
  finished = metric_files.jsonl_path(str(workdir / "clip"), "eval")  # Already evaluated.
  os.makedirs(os.path.dirname(finished), exist_ok=True)
  with open(finished, "w", encoding="utf-8") as f:
    f.write('{"step": 6, "zeroshot/digits/acc1": 0.5}\n')
  out = _sweep(f"--workdir={workdir}", "--launcher=slurm", "--launcher_dry_run",
               f"--slurm_log_dir={tmp_path}/logs", "--gpus_per_node=4",
               "--set=config.data.data_dir=/shared/tfds")
  assert out.returncode == 0, out.stderr[-3000:]
  submissions = [l for l in out.stdout.splitlines() if l.startswith("(dry run) $ sbatch ")]
  names = ["demo-ig-captioner", "demo-standard-captioner", "demo-siglip", "demo-coca",
           "demo-cappa"]
  assert sorted(submissions) == sorted(f"(dry run) $ sbatch {tmp_path}/logs/{n}.sbatch"
                                       for n in names)
  assert "srun --kill-on-bad-exit=1 --gpu-bind=per_task:1 python -m ig_captioner.train " \
         "--config=configs/demo.py:runlocal,family=siglip --config.data.data_dir=/shared/tfds " \
         f"--workdir={workdir}/siglip\n" in out.stdout
  assert f"--workdir={workdir}/siglip --step=6\n" in out.stdout  # The evaluator's line.
  assert "Would submit (dry run) 5 of 6 runs with the slurm launcher" in out.stdout
  assert "$ python -m ig_captioner.data.prepare" not in out.stdout
  assert sorted(os.listdir(workdir)) == ["clip"] and not (tmp_path / "logs").exists()


def test_sweep_refuses_a_dry_run_without_a_remote_launcher_and_unknown_launchers(tmp_path):
  local = _sweep(f"--workdir={tmp_path}", "--launcher_dry_run")
  assert local.returncode != 0 and "add --launcher=tpu_vm, xpk or slurm" in local.stderr
  unknown = _sweep(f"--workdir={tmp_path}", "--launcher=k8s")
  assert unknown.returncode != 0 and "--launcher" in unknown.stderr
  relative = _sweep("--workdir=rel/dir", "--launcher=slurm", "--launcher_dry_run")
  assert relative.returncode != 0 and "--workdir=rel/dir is relative" in relative.stderr
  assert not os.listdir(tmp_path)
