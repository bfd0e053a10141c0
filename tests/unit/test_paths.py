"""Cloud paths: every file the trainer, evaluator, sweep and data preparation touch goes through
`ig_captioner.paths` (etils.epath), checked in the source; and the writers work on a fake bucket
with an object store's rules (no append, no rename)."""

import ast
import json
import os

from etils import epath
import ml_collections
import pytest

from ig_captioner import checkpointing
from ig_captioner import metric_files
from ig_captioner import metric_writing
from ig_captioner import paths
from ig_captioner.tools import sweep_tables
from ig_captioner import train
from ig_captioner.data import tokenizer as tokenizer_lib
from tests.fake_bucket import fake_bucket

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "ig_captioner")

# Calls that reach the local file system directly, and the modules allowed to make them.
FILE_CALLS = ("open", "os.path.", "os.replace", "os.rename", "os.remove", "os.unlink",
              "os.makedirs", "os.mkdir", "os.listdir", "os.scandir", "os.walk", "os.stat",
              "shutil.", "glob.", "pathlib.")
ALLOWED = {
    "paths.py": "the abstraction itself (local paths made absolute)",
    "console.py": "the package's own directory, to shorten tracebacks",
    "data/imagenet_metadata.py": "data files shipped inside the package",
    "config_lib.py": "config files are Python modules, imported from local disk",
    "__init__.py": "the machine's PCI devices and device files, to see whether a TPU or a GPU is "
                   "attached before jax looks (never data or outputs)",
    "tools/launchers.py": "the launching machine's own files (repository, batch scripts), read and "
                    "written without the package's dependencies",
    "convert/model_files.py": "the converters' presets files, shipped inside the package",
    "data/clip_bpe.py": "CLIP's merges file, shipped inside the package",
    "convert/__main__.py": "the default config's place in the repository",
    "data/curation_staging.py": "the launching machine's checkout, packaged for a curation's "
                                "remote workers",
    "convert/workdir.py": "on local disks, a staging directory renamed into place (remote "
                          "workdirs are written through paths)",
}


def _dotted(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f"{_dotted(node.value)}.{node.attr}"
  return ""


def test_no_file_io_bypasses_the_path_abstraction():
  offenders = []
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      relative = os.path.relpath(os.path.join(root, name), PACKAGE)
      if not name.endswith(".py") or relative in ALLOWED:
        continue
      with open(os.path.join(root, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Call):
          called = _dotted(node.func)
          if called == "open" or any(called.startswith(c) for c in FILE_CALLS if c != "open"):
            offenders.append(f"{relative}:{node.lineno} {called}()")
  assert not offenders, ("file I/O outside ig_captioner.paths (use paths.path(...) or "
                         f"paths.join/write_atomic): {offenders}")


def test_writers_work_in_a_bucket(tmp_path):
  local_bucket = tmp_path / "bucket"
  with fake_bucket(str(tmp_path)):
    workdir = "gs://bucket/run"
    assert paths.is_remote(workdir) and paths.resolve(workdir) == workdir
    assert paths.join(workdir, "tb", "train") == "gs://bucket/run/tb/train"

    metrics = metric_files.jsonl_path(workdir, "train")
    writer = metric_writing.JsonLinesWriter(metrics)
    writer.write_scalars(1, {"loss": 2.0})
    writer.write_scalars(2, {"loss": 1.5})
    writer.close()
    again = metric_writing.JsonLinesWriter(metrics)  # A resumed run goes on after the rows.
    again.write_row({"step": 3, "loss": 1.0})
    assert [r["step"] for r in metric_files.read_jsonl(metrics)] == [1, 2, 3]
    metric_files.repair(metrics, after_step=2)
    assert [r["step"] for r in metric_files.read_jsonl(metrics)] == [1, 2]

    sweep_tables.write_summary(paths.join(workdir, sweep_tables.SUMMARY), [("run", {"acc": 0.5})])
    train._write_config(ml_collections.ConfigDict({"seed": 3}), workdir)
    checkpointing.check_writable(checkpointing.directory(workdir))

    (local_bucket / "tok.model").write_bytes(b"not a model")
    with pytest.raises(Exception):  # Read from the bucket, then refused by SentencePiece.
      tokenizer_lib.Tokenizer.from_file("gs://bucket/tok.model")
    with pytest.raises(tokenizer_lib.TokenizerNotFoundError, match="gs://bucket/none.model"):
      tokenizer_lib.Tokenizer.from_file("gs://bucket/none.model")

  run = local_bucket / "run"
  assert [json.loads(l)["step"] for l in (run / "train_metrics.jsonl").read_text().splitlines()
          ] == [1, 2]
  assert json.loads((run / "summary.json").read_text()) == [{"label": "run",
                                                             "metrics": {"acc": 0.5}}]
  assert json.loads((run / "config.json").read_text())["seed"] == 3
  assert (run / "checkpoints").is_dir() and not list((run / "checkpoints").iterdir())
  assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_the_fake_bucket_refuses_what_a_bucket_cannot_do(tmp_path):
  with fake_bucket(str(tmp_path)):
    epath.Path("gs://b/x").parent.mkdir(parents=True, exist_ok=True)
    epath.Path("gs://b/x").write_text("1")
    with pytest.raises(AssertionError, match="append"):
      epath.Path("gs://b/x").open("a")
    with pytest.raises(AssertionError, match="rename"):
      epath.Path("gs://b/x").replace("gs://b/y")
    assert [str(p) for p in epath.Path("gs://b").glob("*")] == ["gs://b/x"]


def test_local_paths_are_absolute_and_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert paths.resolve("~/a") == os.path.join(str(tmp_path), "a")
  assert paths.resolve("rel/b") == os.path.join(str(tmp_path), "rel", "b")
  paths.write_atomic("out.txt", "x")
  paths.write_atomic("out.txt", "y")  # Replaces; no temporary file left.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
  assert (tmp_path / "out.txt").read_text() == "y"
  with pytest.raises(TypeError):  # Fails while writing: the old content stays, no leftovers.
    paths.write_atomic("out.txt", 5)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
  assert (tmp_path / "out.txt").read_text() == "y"
