"""Every family trained and evaluated end to end (both evaluator types, checkpoints that restore
with plain orbax), and CapPa's resume bit-identical."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ig_captioner import checkpointing
from ig_captioner import evaluate
from ig_captioner import metric_files
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import train
from ig_captioner import train_state
from tests.conftest import load_config_module
from tests.e2e.test_evaluate import retrieval_names
from tests.e2e.test_evaluate import zeroshot_names

CAPTIONING, EMBEDDING = ("captioner", "cappa", "coca"), ("clip", "siglip", "coca")


def check_family_outputs(run_dir, family: str, config) -> None:
  """Both evaluator types ran with the family's scorings (embeddings, caption likelihoods or
  both), and its final checkpoint restores with plain orbax to what our (digest-checking)
  restore gives."""
  (row,) = metric_files.read_jsonl(metric_files.jsonl_path(str(run_dir), "eval"))
  names = set()
  if family in EMBEDDING:
    names |= zeroshot_names("digits") | zeroshot_names("digits_val") | retrieval_names(False)
  if family in CAPTIONING:
    names |= (zeroshot_names("digits", (0.0, 0.5, 1.0))
              | zeroshot_names("digits_val", (0.0, 0.5, 1.0)) | retrieval_names(True))
  assert set(row) - {"step"} == names
  assert all(0.0 <= v <= 1.0 for k, v in row.items() if k != "step")
  step = row["step"]
  plain = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(step) / "params")
  model = models.build(config.model)
  abstract, _ = train_state.abstract_params_and_shardings(
      model.init_params, sharding.make_mesh(config.mesh))
  ours = checkpointing.Checkpointer(str(run_dir), read_only=True).restore_params(
      step, abstract, config)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, plain),
               jax.tree.map(np.asarray, jax.device_get(ours)))


@pytest.fixture(scope="module")
def trained_family(data_dir, tmp_path_factory):
  """family -> (config, workdir of its demo runlocal run), each trained once in this module."""
  runs = {}

  def get(family: str):
    if family not in runs:
      config = load_config_module("demo").get_config(f"runlocal,family={family}")
      config.data.data_dir = data_dir
      workdir = tmp_path_factory.mktemp(family)
      train.train(config, str(workdir))
      runs[family] = config, workdir
    return runs[family]
  return get


@pytest.mark.parametrize("family", ["siglip", "coca", "cappa"])
def test_family_trains_evaluates_and_restores(family, trained_family):
  """(The captioner and CLIP run through the sweep in tests/e2e/test_sweep.py.)"""
  config, workdir = trained_family(family)
  evaluate.evaluate(config, str(workdir), step=6)
  check_family_outputs(workdir, family, config)


def test_cappa_resume_is_bit_identical(trained_family, tmp_path):
  config, straight = trained_family("cappa")
  train.train(config, str(tmp_path / "resumed"), stop_at_step=4)
  resumed = train.train(config, str(tmp_path / "resumed"))
  straight_params = ocp.StandardCheckpointer().restore(straight / "checkpoints" / "6" / "params")
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.tree.map(np.asarray, straight_params))
