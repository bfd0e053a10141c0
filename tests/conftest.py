"""Test setup: 8 fake CPU devices (set before jax is imported) and a tiny prepared data set."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs on CPU devices; with libtpu installed (the planner's extra) jax would probe for
# a TPU in every process and log about not finding one.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import glob  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.util  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_module(name: str):
  """Imports configs/<name>.py the way ml_collections' config flags do."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}",
                                                os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests need XLA_FLAGS to give 8 CPU devices before jax import"


CONFIG_NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs",
                                                                                "*.py")))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding the data (and tokenizer) of every config's runlocal variant."""
  from ig_captioner.data import prepare  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tfds"))
  for name in CONFIG_NAMES:
    config = load_config_module(name).get_config("runlocal")
    config.data.data_dir = path
    prepare.prepare(config.data)
  return path


@pytest.fixture
def runlocal_config(data_dir):
  """The demo config's runlocal variant, reading the session's prepared data."""
  config = load_config_module("demo").get_config("runlocal")
  config.data.data_dir = data_dir
  return config


# The runs of the demo sweep that the sweep's test and the notebooks share.
DEMO_SWEEP_RUNS = ("standard captioner", "IG captioner", "CLIP")


@pytest.fixture(scope="session")
def demo_sweep(data_dir, tmp_path_factory) -> tuple[str, list[str], str]:
  """(workdir, command, printed output) of the demo sweep's runlocal variant over
  DEMO_SWEEP_RUNS (trained and evaluated once per session, ~1 min)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("demo_sweep"))
  cmd = [sys.executable, "-m", "ig_captioner.tools.sweep", "--config=configs/demo.py:runlocal",
         f"--workdir={workdir}", f"--set=config.data.data_dir={data_dir}"]
  cmd += [f"--only={label}" for label in DEMO_SWEEP_RUNS]
  out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  return workdir, cmd, out
