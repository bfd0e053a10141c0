"""Test setup, before jax is imported: 8 fake CPU devices, compiled programs cached for the
session, fast compiles; and the session's shared data and runs (prepared data, the demo sweep).
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs on CPU devices; with libtpu installed (the planner's extra) jax would probe for
# a TPU in every process and log about not finding one.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's programs are tiny: compiling them costs more than running them, so XLA's backend
# (LLVM) optimisations are off, as jax_disable_most_optimizations does it; the HLO passes, and
# so what is computed, are unchanged. IG_CAPTIONER_TEST_OPTIMIZED=1 compiles as users do.
if not os.environ.get("IG_CAPTIONER_TEST_OPTIMIZED"):
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Every program compiled once per session: tests compile the same programs again and again (a
# new jit of the same function and shapes), and so do the trainers and evaluators the tests
# start as subprocesses and the pytest-xdist workers, which all inherit this environment.
# IG_CAPTIONER_TEST_CACHE=DIR keeps the cache across sessions (a faster edit-test loop).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = os.environ.get("IG_CAPTIONER_TEST_CACHE")
  if not _cache:
    _cache = tempfile.mkdtemp(prefix="ig_captioner_tests_jax_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import contextlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import fcntl  # pylint: disable=wrong-import-position
import glob  # pylint: disable=wrong-import-position
import importlib.util  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position

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


def _shared_root(tmp_path_factory) -> str:
  """A directory every pytest-xdist worker of this session sees (the workers' common parent)."""
  base = tmp_path_factory.getbasetemp()
  return str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


@contextlib.contextmanager
def _built_once(tmp_path_factory, name: str):
  """Yields (directory, result or None) under a lock shared by the session's workers: the first
  worker finds None, builds into the directory and stores the result (a JSON value) with
  `_store`; the others wait for it and read that result."""
  root = _shared_root(tmp_path_factory)
  with open(os.path.join(root, f"{name}.lock"), "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(root, name)
    done = os.path.join(root, f"{name}.json")
    if os.path.exists(done):
      with open(done, encoding="utf-8") as f:
        yield path, json.load(f)
    else:
      os.makedirs(path, exist_ok=True)
      yield path, None


def _store(tmp_path_factory, name: str, result) -> None:
  with open(os.path.join(_shared_root(tmp_path_factory), f"{name}.json"), "w",
            encoding="utf-8") as f:
    json.dump(result, f)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding the data (and tokenizer) of every config's runlocal variant,
  prepared once per session (shared by the pytest-xdist workers)."""
  from ig_captioner.data import prepare  # pylint: disable=g-import-not-at-top
  with _built_once(tmp_path_factory, "tfds") as (path, result):
    if result is None:
      for name in CONFIG_NAMES:
        config = load_config_module(name).get_config("runlocal")
        config.data.data_dir = path
        prepare.prepare(config.data)
      _store(tmp_path_factory, "tfds", path)
  return path


@pytest.fixture(scope="session")
def trained_runlocal(data_dir, tmp_path_factory) -> str:
  """The workdir of the demo's runlocal captioner trained by the command-line trainer (6 steps,
  checkpoints 3 and 6), once per session and shared by the workers: read it, or copy it first
  to change it."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  with _built_once(tmp_path_factory, "trained_runlocal") as (workdir, result):
    if result is None:
      proc = subprocess.run([sys.executable, "-m", "ig_captioner.train",
                             "--config=configs/demo.py:runlocal",
                             f"--config.data.data_dir={data_dir}", f"--workdir={workdir}"],
                            cwd=REPO, capture_output=True, text=True, check=False)
      assert proc.returncode == 0, proc.stderr[-3000:]
      _store(tmp_path_factory, "trained_runlocal", workdir)
  return workdir


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
  DEMO_SWEEP_RUNS (trained and evaluated once per session, ~1 min; shared by the workers)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  with _built_once(tmp_path_factory, "demo_sweep") as (workdir, result):
    if result is None:
      cmd = [sys.executable, "-m", "ig_captioner.tools.sweep",
             "--config=configs/demo.py:runlocal", f"--workdir={workdir}",
             f"--set=config.data.data_dir={data_dir}"]
      cmd += [f"--only={label}" for label in DEMO_SWEEP_RUNS]
      out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
      result = [workdir, cmd, out]
      _store(tmp_path_factory, "demo_sweep", result)
  return tuple(result)


@pytest.fixture(scope="session")
def curation_python() -> str:
  """The python of the curation's own environment, created (or reused) by
  launch/curation_venv.sh; the tests needing it skip, saying why, if it cannot be created."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  try:
    proc = subprocess.run(["bash", "launch/curation_venv.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
  except subprocess.TimeoutExpired:
    pytest.skip("the curation environment (launch/curation_venv.sh) took over 15 minutes")
  if proc.returncode:
    pytest.skip("the curation environment (launch/curation_venv.sh) could not be created: "
                + (proc.stderr.strip().splitlines() or ["no message"])[-1])
  return proc.stdout.strip().splitlines()[-1]
