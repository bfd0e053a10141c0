"""The notebooks (notebooks/): every .py/.ipynb pair agrees and is stored without outputs, with
its Colab badge; every notebook runs top to bottom in a fresh kernel on its seconds-long
parameters (`manage.QUICK_ENV`) and shows its figures; what they print agrees with the
evaluator. Needs the `notebooks` extra, which `launch/tests.sh` installs."""

import importlib.util
import json
import pathlib
import re
import shutil

import pytest

from ig_captioner import inference
from ig_captioner import metric_files
from tests.conftest import REPO

pytest.importorskip("nbclient", reason="the notebooks extra is not installed: "
                    "pip install -e '.[notebooks]' (launch/tests.sh does)")
pytest.importorskip("jupytext", reason="pip install -e '.[notebooks]'")

NOTEBOOKS = ("quickstart", "language_prior", "comparing_families", "planning_a_pod_run",
             "public_checkpoints")


def _manage():
  spec = importlib.util.spec_from_file_location("manage", pathlib.Path(REPO, "notebooks",
                                                                      "manage.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


manage = _manage()


def test_every_pair_agrees_is_stripped_and_has_its_badge():
  assert manage.names() == sorted(NOTEBOOKS)
  for name in NOTEBOOKS:
    assert manage.problems(name) == []


def test_the_check_catches_drift_outputs_and_a_lone_file(tmp_path):
  for suffix in (".py", ".ipynb"):
    shutil.copy(manage.DIRECTORY / f"quickstart{suffix}", tmp_path)
  assert manage.problems("quickstart", tmp_path) == []

  py = tmp_path / "quickstart.py"
  py.write_text(py.read_text().replace("top_k=3", "top_k=4"))
  assert any("disagree" in p for p in manage.problems("quickstart", tmp_path))

  ipynb = tmp_path / "quickstart.ipynb"
  notebook = json.loads(ipynb.read_text())
  code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
  code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello"}]
  code["source"] = "".join(code["source"]).replace(manage.REPOSITORY, "someone/else")
  ipynb.write_text(json.dumps(notebook))
  found = manage.problems("quickstart", tmp_path)
  assert any("holds outputs" in p for p in found)
  assert any("no set-up cell cloning" in p for p in found)

  ipynb.unlink()
  assert manage.names(tmp_path) == ["quickstart"]
  (problem,) = manage.problems("quickstart", tmp_path)
  assert "quickstart.ipynb" in problem and "missing" in problem


@pytest.fixture(scope="module")
def notebook_env(demo_sweep, data_dir, tmp_path_factory) -> dict:
  """The notebooks' parameters: seconds-long, reading the session's data and demo sweep."""
  return {**manage.QUICK_ENV, "IG_NOTEBOOK_DEMO_DIR": demo_sweep[0],
          "IG_NOTEBOOK_WORKDIR": str(tmp_path_factory.mktemp("notebooks")),
          "TFDS_DATA_DIR": data_dir}


def _text(notebook) -> str:
  return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                 for o in c.get("outputs", ()) if o.get("output_type") == "stream")


def _run(name: str, env: dict):
  notebook = manage.execute(name, env, timeout=600)
  assert manage.images(notebook, manage.PICTURE_TAG), f"{name}: its README figure is missing"
  return notebook


def test_quickstart_trains_classifies_and_captions(notebook_env):
  notebook = _run("quickstart", notebook_env)
  assert len(manage.images(notebook)) == 1
  text = _text(notebook)
  assert re.search(r"alpha=0: top-1 [\d.]+% of 500 images", text)
  assert re.search(r"alpha=1: top-1 [\d.]+% of 500 images", text)
  assert (pathlib.Path(notebook_env["IG_NOTEBOOK_WORKDIR"]) / "quickstart" / "checkpoints"
          / "6").is_dir()


def test_language_prior_agrees_with_the_evaluator(notebook_env):
  notebook = _run("language_prior", notebook_env)
  assert len(manage.images(notebook)) == 3
  text = _text(notebook)
  for label, run in (("standard captioner", "standard-captioner"),
                     ("IG captioner", "ig-captioner")):
    (row,) = metric_files.read_jsonl(metric_files.jsonl_path(
        str(pathlib.Path(notebook_env["IG_NOTEBOOK_DEMO_DIR"]) / run), "eval"))
    printed = re.search(rf"{label}: alpha=0 ([\d.]+)%, alpha=1 ([\d.]+)%", text)
    assert printed, text[-2000:]
    assert printed.group(1) == f"{100 * row['zeroshot/digits/acc1_alpha0.0']:.1f}"
    assert printed.group(2) == f"{100 * row['zeroshot/digits/acc1_alpha1.0']:.1f}"


def test_comparing_families_draws_the_sweep(notebook_env):
  notebook = _run("comparing_families", notebook_env)
  assert len(manage.images(notebook)) == 2
  # The run list is the shared sweep's: nothing was trained in the notebook.
  assert "ig_captioner.train" not in _text(notebook)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="the planner needs libtpu: pip install -e '.[planner]' (.ci/run does)")
def test_planning_a_pod_run(notebook_env):
  notebook = _run("planning_a_pod_run", notebook_env)
  assert "v5e:2x2: 4 x TPU v5e" in _text(notebook)


def test_public_checkpoints_converts_and_scores_with_both_priors(notebook_env):
  """Offline: the tiny random-weight CoCa fixture, converted and IG-scored; what it prints is
  what the inference API gives on that converted run."""
  notebook = _run("public_checkpoints", notebook_env)
  text = _text(notebook)
  run_dir = pathlib.Path(notebook_env["IG_NOTEBOOK_WORKDIR"]) / "public_checkpoints" / "run"
  run = inference.load_run(str(run_dir))
  run.config.data.data_dir = notebook_env["TFDS_DATA_DIR"]  # The notebook's, by environment.
  assert run.family == "coca" and f"coca: {run.config.converted_from.num_params:,}" in text
  task = run.task("digits")
  texts = [t.format(c) for c in task.class_names[:3] for t in task.templates[:1]]
  for prior in ("no_image", "null_image"):
    printed = re.search(rf"log P\(t\) by {prior}: (.*)", text).group(1)
    assert printed == ", ".join(f"{t!r} {p:.1f}"
                                for t, p in zip(texts, run.prior(texts, source=prior)))
  for prior in ("no_image", "null_image"):
    for alpha in (0, 1):
      assert re.search(rf"prior {prior}, alpha={alpha}: top-1 [\d.]+% of \d+ images", text)
