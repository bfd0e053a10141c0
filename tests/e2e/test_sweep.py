"""The main job's path: the sweep runner trains and evaluates runs end to end (both evaluator
types, plain-orbax checkpoints) in separate processes and prints the comparison table."""

import json
import pathlib
import subprocess


from ig_captioner import metric_files
from ig_captioner.tools import sweep_tables
from tests.conftest import load_config_module
from tests.e2e.test_families import check_family_outputs
from tests.conftest import DEMO_SWEEP_RUNS, REPO


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


def test_sweep_runs_every_model_and_prints_the_comparison(demo_sweep, data_dir):
  # Three runs of the six (the others' families are run end to end in tests/e2e/test_families.py).
  workdir, cmd, out = demo_sweep
  workdir = pathlib.Path(workdir)
  held_out = _tables(out)["held-out splits `zeroshot` and `retrieval`"]
  assert list(held_out) == ["standard captioner, alpha=0", "standard captioner, alpha=1",
                            "IG captioner, alpha=0", "IG captioner, alpha=1", "CLIP"]

  def cell(value):
    return f"{100 * value:.1f}"

  for run, label in (("standard-captioner", "standard captioner"),
                     ("ig-captioner", "IG captioner")):
    (row,) = metric_files.read_jsonl(metric_files.jsonl_path(str(workdir / run), "eval"))
    assert row["step"] == 6
    for alpha in (0, 1):
      assert held_out[f"{label}, alpha={alpha}"] == [
          cell(row[f"zeroshot/digits/acc1_alpha{alpha:.1f}"]),
          cell(row[f"retrieval/digits_retrieval/i2t_r1_alpha{alpha:.1f}"]),
          cell(row["retrieval/digits_retrieval/t2i_r1"])]
  (row,) = metric_files.read_jsonl(metric_files.jsonl_path(str(workdir / "clip"), "eval"))
  assert held_out["CLIP"] == [cell(row["zeroshot/digits/acc1"]),
                              cell(row["retrieval/digits_retrieval/i2t_r1"]),
                              cell(row["retrieval/digits_retrieval/t2i_r1"])]
  summary = json.loads((workdir / sweep_tables.SUMMARY).read_text())
  assert [s["label"] for s in summary] == list(DEMO_SWEEP_RUNS)
  assert summary[2]["metrics"] == row
  for run, family in (("ig-captioner", "captioner"), ("clip", "clip")):
    config = load_config_module("demo").get_config(f"runlocal,family={family}")
    config.data.data_dir = data_dir
    check_family_outputs(workdir / run, family, config)

  # Rerunning reuses finished runs: no trainer or evaluator is started again.
  again = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
  assert "ig_captioner.train" not in again and "ig_captioner.evaluate" not in again
  assert _tables(again) == _tables(out)
