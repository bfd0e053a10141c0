"""The launchers render exact commands: gcloud on every TPU VM worker, xpk workloads (rendered
by xpk itself in its dry-run mode when its environment can be made), SLURM batch scripts with one
process per GPU; bad options fail naming the fix; the sweep hands each run to a launcher."""

import os
import shlex
import stat
import subprocess
import sys

import pytest

from ig_captioner.tools import launchers
from tests import helpers
from tests.conftest import REPO

# Overrides a shell would mangle without quoting: spaces, braces, quotes, a $ and a glob.
OVERRIDES = ("--config.data.name=a b", '--config.mesh={"data": 2, "fsdp": -1}',
             "--config.note=it's $HOME *")
TRAIN = ("ig_captioner.train", "--config=configs/demo.py:runlocal", *OVERRIDES,
         "--workdir=gs://bucket/run")
EVAL = ("ig_captioner.evaluate", *TRAIN[1:], "--once")
JOB = launchers.Job("run", (TRAIN, EVAL))


def _launcher(kind, **values):
  return launchers.Launcher(kind, values)


def test_tpu_vm_copies_installs_and_runs_the_same_command_on_every_worker():
  tpu = _launcher("tpu_vm", tpu_name="pod", zone="us-central2-b", project="proj",
                  env=["TFDS_DATA_DIR=gs://b/tfds dir"])
  archive, scp, install = tpu.setup().commands
  assert archive[:2] == ["bash", "-c"] and "git ls-files" in archive[2]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  for command in (scp, install):
    assert {"--zone=us-central2-b", "--worker=all", "--project=proj"} <= set(command)
  assert install[5] == "pod" and "launch/venv.sh" in install[6] and "jax[tpu]==" in install[6]

  (ssh,) = tpu.submit(JOB).commands
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in ssh
  script = ssh[6].removeprefix("--command=")
  assert script.startswith("cd ig_captioner && ") and script.endswith(" > logs/run.log 2>&1 "
                                                                       "< /dev/null &")
  inner = shlex.split(script)[shlex.split(script).index("-c") + 1]  # What bash -c runs.
  assert "export TFDS_DATA_DIR='gs://b/tfds dir'" in inner
  assert helpers.shell_programs(inner.split("&& export TFDS_DATA_DIR='gs://b/tfds dir' &&")[1]) == [
      list(TRAIN), list(EVAL)]

  foreground = _launcher("tpu_vm", tpu_name="pod", zone="z", foreground=True).submit(JOB)
  script = foreground.commands[0][6].removeprefix("--command=")
  assert "nohup" not in script and helpers.shell_programs(script.split(" && ", 2)[2]) == [
      list(TRAIN), list(EVAL)]


def test_tpu_vm_script_dry_run_prints_the_gcloud_commands():
  out = subprocess.run(
      ["bash", "launch/tpu_vm.sh", "pod", "us-central2-b", "configs/demo.py", "gs://b/run",
       "--evaluate", "--source=https://example.com/ig.git", "--", *OVERRIDES],
      cwd=REPO, env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True, check=True)
  commands = [shlex.split(line.removeprefix("(dry run) $ "))
              for line in out.stdout.splitlines() if line.startswith("(dry run) $ ")]
  assert [c[:5] for c in commands] == [["gcloud", "compute", "tpus", "tpu-vm", "ssh"]] * 2
  assert all("--worker=all" in c for c in commands)
  assert "git clone https://example.com/ig.git ig_captioner" in commands[0][6]
  run = shlex.split(commands[1][6])
  assert helpers.shell_programs(run[run.index("-c") + 1].split(" && ", 1)[1])[0] == [
      "ig_captioner.train", "--config=configs/demo.py", *OVERRIDES, "--workdir=gs://b/run"]
  assert "Would submit run with the tpu_vm launcher" in out.stdout


def test_xpk_renders_one_workload_running_the_job():
  xpk = _launcher("xpk", cluster="c1", zone="us-central2-b", project="p", num_slices=2,
                  tpu_type="v5litepod-16", docker_image="gcr.io/p/ig:1", xpk_dry_run=True)
  (command,) = xpk.submit(JOB).commands
  assert command[:3] == ["xpk", "workload", "create"] and command[-1] == "--dry-run"
  assert {"--cluster=c1", "--workload=run", "--tpu-type=v5litepod-16", "--num-slices=2",
          "--docker-image=gcr.io/p/ig:1", "--project=p", "--zone=us-central2-b"} < set(command)
  (flag,) = [c for c in command if c.startswith("--command=")]
  assert helpers.shell_programs(flag.removeprefix("--command=")) == [list(TRAIN), list(EVAL)]
  base = _launcher("xpk", cluster="c1", zone="z", project="p", tpu_type="v4-8",
                   base_docker_image="python:3.11").submit(JOB).commands[0]
  assert f"--script-dir={REPO}" in base and "--base-docker-image=python:3.11" in base
  assert "pip install --quiet -e . 'jax[tpu]==" in base[-1]


def test_slurm_script_runs_one_process_per_gpu_under_srun(tmp_path):
  slurm = _launcher("slurm", nodes=4, gpus_per_node=8, partition="gpu", time="2:00:00",
                    slurm_log_dir=str(tmp_path / "logs"), sbatch_arg=["--mem=0"],
                    env=["XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true"])
  plan = slurm.submit(JOB)
  ((path, script),) = plan.files.items()
  assert plan.commands == [["sbatch", path]] and path == str(tmp_path / "logs" / "run.sbatch")
  header = [l for l in script.splitlines() if l.startswith("#SBATCH")]
  assert header == [
      "#SBATCH --job-name=run", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8",
      "#SBATCH --gpus-per-task=1", f"#SBATCH --output={tmp_path}/logs/%x-%j.out",
      f"#SBATCH --error={tmp_path}/logs/%x-%j.err", f"#SBATCH --chdir={REPO}",
      "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00", "#SBATCH --mem=0"]
  assert script.startswith("#!/bin/bash\n") and "export JAX_LOCAL_DEVICE_IDS=0\n" in script
  (tmp_path / "job.sbatch").write_text(script)
  subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")], check=True)

  # Run it with a fake srun that records what each step would start.
  fake = tmp_path / "bin" / "srun"
  fake.parent.mkdir()
  fake.write_text('#!/bin/bash\nprintf "%s\\0" "$@" >> "$SRUN_LOG"\nprintf "\\n" >> "$SRUN_LOG"\n'
                  'echo "$XLA_FLAGS $JAX_LOCAL_DEVICE_IDS" >> "$SRUN_LOG.env"\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  log = tmp_path / "srun.log"
  subprocess.run(["bash", str(tmp_path / "job.sbatch")], cwd=tmp_path, check=True,
                 env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
                      "SRUN_LOG": str(log)})
  steps = [step.split("\0") for step in log.read_text().split("\0\n")[:-1]]
  assert steps == [["--kill-on-bad-exit=1", "--gpu-bind=per_task:1", "python", "-m", *program]
                   for program in (TRAIN, EVAL)]
  assert (tmp_path / "srun.log.env").read_text().splitlines() == [
      "--xla_gpu_enable_latency_hiding_scheduler=true 0"] * 2

  setup = slurm.setup().commands
  assert setup[0][:2] == ["bash", "-c"] and "jax[cuda12]==" in setup[0][2]
  assert _launcher("slurm", setup="none").setup().commands == []


def test_slurm_script_dry_run_prints_the_script_and_writes_nothing(tmp_path):
  out = subprocess.run(
      ["bash", "launch/slurm.sh", "configs/demo.py", "/shared/run", "--nodes=2",
       "--gpus_per_node=4", f"--slurm_log_dir={tmp_path}/logs", "--evaluate", "--",
       *OVERRIDES], cwd=REPO, env={**os.environ, "DRY_RUN": "1"}, capture_output=True,
      text=True, check=True).stdout
  assert "#SBATCH --ntasks-per-node=4" in out and "#SBATCH --gpus-per-task=1" in out
  assert f"(dry run) $ sbatch {tmp_path}/logs/run.sbatch" in out
  assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("kind, values, message", [
    ("kubernetes", {}, "unknown launcher 'kubernetes': choose one of local, tpu_vm, xpk, slurm"),
    ("tpu_vm", {"zone": "z"}, "the tpu_vm launcher needs --tpu_name"),
    ("xpk", {"zone": "z", "project": "p", "tpu_type": "v4-8", "docker_image": "i"},
     "the xpk launcher needs --cluster"),
    ("xpk", {"cluster": "c", "zone": "z", "project": "p", "tpu_type": "v4-8"},
     "needs one of --docker_image"),
    ("slurm", {"cluster": "c"}, "--cluster is an option of the xpk launcher, not of slurm"),
    ("local", {"env": ["A=1"]}, "--env is an option of the tpu_vm and xpk and slurm launcher"),
    ("slurm", {"env": ["NO_VALUE"]}, "--env=NO_VALUE: give KEY=VALUE"),
    ("slurm", {"gpus_per_node": 0}, "must be at least 1"),
    ("slurm", {"colour": "red"}, "unknown launcher option --colour"),
])
def test_bad_options_are_refused_naming_the_fix(kind, values, message):
  with pytest.raises(launchers.LaunchError, match=message.replace("(", r"\(").replace(")", r"\)")):
    launchers.Launcher(kind, values)


def test_cli_errors_are_one_line_and_a_relative_workdir_is_refused_for_remote_hosts():
  def cli(*args):
    return subprocess.run([sys.executable, "-m", "ig_captioner.tools.launchers", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)
  relative = cli("slurm", "--config=configs/demo.py", "--workdir=runs/a", "--dry_run")
  assert relative.returncode == 2 and relative.stderr.startswith("error: --workdir=runs/a is "
                                                                 "relative")
  bad = cli("slurm", "--config=c", "--workdir=/a", "--dry_run", "--", "--seed=1")
  assert bad.returncode == 2 and "arguments after -- are config overrides" in bad.stderr
  missing = cli("tpu_vm", "--config=c", "--workdir=gs://b/a", "--zone=z")
  assert missing.returncode == 2 and "needs --tpu_name" in missing.stderr


def test_job_names_suit_every_launcher_and_stay_distinct():
  assert launchers.job_name("demo", "ig-captioner seed=0") == "demo-ig-captioner-seed-0"
  assert launchers.job_name("0.5", "x") == "ig-0-5-x"
  long = [launchers.job_name("ig-study", f"noisy-mu-lambda=0.3-text-only-{i} seed=2")
          for i in range(2)]
  assert long[0] != long[1] and all(len(n) <= 40 and n[0].isalpha() for n in long)

