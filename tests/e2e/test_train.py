"""The trainer end to end: runs, resumes exactly, checkpoints portably, stops on NaN, checks
config."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import metric_files
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner import train
from ig_captioner import train_state
from ig_captioner.data import sources
from ig_captioner.data import tfds_source
from ig_captioner.data import train_mixture
from tests import helpers
from tests.conftest import load_config_module


def _params_np(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def test_runlocal_trains_logs_and_checkpoints(runlocal_config, trained_runlocal):
  workdir = trained_runlocal  # The command-line trainer's run of this config.
  rows = metric_files.read_jsonl(metric_files.jsonl_path(workdir, "train"))
  assert [r["step"] for r in rows] == [2, 4, 6]
  for key in ("loss", "ce_with_image", "ce_text_only", "info_gain_per_token", "grad_norm",
              "learning_rate", "steps_per_sec", "examples_per_sec", "tflops_per_device", "mfu"):
    assert all(np.isfinite(r[key]) and r[key] >= 0 for r in rows), key
  # Throughput: examples = steps x batch; achieved TFLOP/s against one peak (measured once).
  for r in rows:
    assert r["examples_per_sec"] == pytest.approx(r["steps_per_sec"] * runlocal_config.batch_size)
    assert 0 < r["mfu"] < 1
  peaks = [r["tflops_per_device"] / r["mfu"] for r in rows]
  assert max(peaks) == pytest.approx(min(peaks), rel=1e-6)
  np.testing.assert_allclose([r["loss"] for r in rows],
                             [r["ce_with_image"] + r["ce_text_only"] for r in rows], rtol=1e-5)
  assert rows[-1]["loss"] < rows[0]["loss"]
  steps = checkpointing.Checkpointer(workdir, read_only=True).all_steps()
  assert steps == [3, 6] and steps[-1] == runlocal_config.total_steps
  assert os.listdir(os.path.join(workdir, "tb", "train"))  # TensorBoard event file.
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["objective"]["text_only_weight"] == 1.0


def test_resume_gives_same_params_and_data_order(runlocal_config, trained_runlocal, tmp_path):
  # The data order part: a restored grain iterator continues exactly where it stopped.
  tokenizer = sources.tokenizer(runlocal_config.data)
  uninterrupted = iter(train_mixture.train_loader(runlocal_config, tokenizer))
  expected = [next(uninterrupted)["tokens"] for _ in range(5)]
  first = iter(train_mixture.train_loader(runlocal_config, tokenizer))
  for _ in range(3):
    next(first)
  resumed = iter(train_mixture.train_loader(runlocal_config, tokenizer))
  resumed.set_state(first.get_state())
  for want in expected[3:]:
    np.testing.assert_array_equal(next(resumed)["tokens"], want)

  # The trainer part: stop two steps after the step-3 checkpoint (as a kill would), restart,
  # compare with one straight run (the session's, by the command-line trainer).
  straight = ocp.StandardCheckpointer().restore(
      os.path.join(trained_runlocal, "checkpoints", "6", "params"))
  train.train(runlocal_config, str(tmp_path / "resumed"), stop_at_step=5)
  assert checkpointing.Checkpointer(str(tmp_path / "resumed"), read_only=True).all_steps() == [3]
  resumed_state = train.train(runlocal_config, str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, _params_np(resumed_state),
               jax.tree.map(np.asarray, straight))
  rows = metric_files.read_jsonl(metric_files.jsonl_path(str(tmp_path / "resumed"), "train"))
  straight_rows = metric_files.read_jsonl(metric_files.jsonl_path(trained_runlocal, "train"))
  # Rows 4 and 5, logged after the checkpoint, were dropped and logged again: each step once.
  assert [r["step"] for r in rows] == [r["step"] for r in straight_rows] == [2, 4, 6]
  assert rows[-1]["loss"] == straight_rows[-1]["loss"]  # Same batches at steps 5 and 6.


def test_checkpoint_restores_onto_another_mesh_and_with_plain_orbax(runlocal_config, tmp_path):
  runlocal_config.mesh.update(data=1, fsdp=8, tensor=1)
  runlocal_config.model.update(encoder="mu/8", decoder="mu")  # Widths divisible by 8 and 4.
  state = train.train(runlocal_config, str(tmp_path))
  saved = _params_np(state)

  model = models.build(runlocal_config.model)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, tensor=4)))
  abstract, _ = train_state.abstract_params_and_shardings(model.init_params, mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  restored = ckpt.restore_params(6, abstract, runlocal_config)
  kernel = restored["decoder"]["block0"]["mlp"]["fc1"]["kernel"]
  assert kernel.sharding.mesh.shape == mesh.shape
  assert {s.data.shape for s in kernel.addressable_shards} == {(64, 32)}  # Split 4 ways on mlp.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)

  # Without this package: a fresh interpreter that imports orbax alone.
  script = textwrap.dedent(f"""
      import sys, numpy as np, orbax.checkpoint as ocp
      path = {str(tmp_path / "checkpoints" / "6" / "params")!r}
      params = ocp.StandardCheckpointer().restore(path)
      kernel = np.asarray(params["decoder"]["block0"]["mlp"]["fc1"]["kernel"])
      np.save({str(tmp_path / "kernel.npy")!r}, kernel)
      assert "ig_captioner" not in sys.modules
  """)
  subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path),
                 env=dict(os.environ, PYTHONPATH=""))
  np.testing.assert_array_equal(np.load(tmp_path / "kernel.npy"),
                                saved["decoder"]["block0"]["mlp"]["fc1"]["kernel"])


def test_incompatible_checkpoint_is_refused_clearly(runlocal_config, tmp_path):
  train.train(runlocal_config, str(tmp_path), stop_at_step=3)
  runlocal_config.model.decoder = "mu"
  with pytest.raises(checkpointing.CheckpointError, match="different model.*decoder"):
    train.train(runlocal_config, str(tmp_path))


def test_corrupt_checkpoint_names_the_fix_and_following_it_resumes(runlocal_config, tmp_path):
  train.train(runlocal_config, str(tmp_path))
  ckpt_dir = tmp_path / "checkpoints"
  for data_file in (ckpt_dir / "6" / "params" / "d").iterdir():  # Bit rot in the array data.
    helpers.corrupt_middle_third(data_file)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"step 6 .* could not be read.*DATA_LOSS.*mv .* resumes from step 3"):
    train.train(runlocal_config, str(tmp_path))
  (tmp_path / "unreadable_checkpoints").mkdir()
  (ckpt_dir / "6").rename(tmp_path / "unreadable_checkpoints" / "6")
  state = train.train(runlocal_config, str(tmp_path))
  assert int(state.step) == 6
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).all_steps() == [3, 6]


@pytest.mark.parametrize("checkpoint_every,kept", [
    (1, r"last good checkpoint \(step 1\) .* is kept"),
    (100, r"No checkpoint had been written yet")])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(runlocal_config, tmp_path,
                                                              checkpoint_every, kept):
  # Warmup gives update 1 a learning rate of 0 (a good state); update 2's huge rate makes the
  # params overflow, which must stop training before that state is checkpointed.
  runlocal_config.optimizer.update(learning_rate=1e38, warmup_steps=2, clip_norm=1e38)
  runlocal_config.update(checkpoint_every=checkpoint_every, log_every=100)
  with pytest.raises(train.NonFiniteLossError, match=rf"at step 2.*{kept}"):
    train.train(runlocal_config, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  if checkpoint_every == 100:
    assert ckpt.all_steps() == []
    return
  assert ckpt.all_steps() == [1]
  model = models.build(runlocal_config.model)
  abstract, _ = train_state.abstract_params_and_shardings(
      model.init_params, sharding.make_mesh(runlocal_config.mesh))
  params = ckpt.restore_params(1, abstract, runlocal_config)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("field,value,match", [
    ("total_steps", 0, "config.total_steps=0"),
    ("batch_size", 12, "batch_size=12 is not divisible"),
    ("objective.text_only_weight", -1.0, "config.objective.text_only_weight=-1.0"),
    ("objective.name", "clip",
     r"config.objective.name='clip' is unknown; known: \['cappa', 'captioning'"),
    ("evals.digits.type", "detection", "config.evals.digits.type='detection' is unknown"),
    ("optimizer.learning_rate", 0.0, "config.optimizer.learning_rate"),
    ("optimizer.warmup_steps", 6, "config.optimizer.warmup_steps"),
    ("data.prior_exponent", -0.5, "config.data.prior_exponent"),
    ("model.vocab_size", 16, "raise the latter"),
    ("mesh.tensor", 3, "not divisible"),
    ("evals.digits.alphas", (), "config.evals.digits.alphas"),
])
def test_bad_config_values_give_clear_errors(runlocal_config, tmp_path, field, value, match):
  *parents, leaf = field.split(".")
  node = runlocal_config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    train.train(runlocal_config, str(tmp_path))


def test_missing_embedded_data_is_prepared_on_first_use(runlocal_config, tmp_path, capsys):
  runlocal_config.data.data_dir = str(tmp_path / "empty")
  state = train.train(runlocal_config, str(tmp_path / "wd"))
  assert int(state.step) == runlocal_config.total_steps
  assert "Preparing digits_captions under " + str(tmp_path / "empty") in capsys.readouterr().out
  assert (sources.get(runlocal_config.data).prepared_builder().data_path /
          tfds_source.TOKENIZER_FILENAME).exists()


def test_missing_data_set_that_needs_source_files_says_how_to_prepare(runlocal_config,
                                                                       tmp_path):
  runlocal_config.data.name = "mnist"  # Built from downloaded files: never prepared implicitly.
  runlocal_config.data.data_dir = str(tmp_path / "empty")
  with pytest.raises(sources.DataError, match="not prepared.*ig_captioner.data.prepare"):
    train.train(runlocal_config, str(tmp_path / "wd"))


def test_profile_of_chosen_steps_is_written_for_tensorboard(runlocal_config, tmp_path):
  runlocal_config.profile = ml_collections.ConfigDict(dict(start_step=2, num_steps=2))
  train.train(runlocal_config, str(tmp_path))
  traces = glob.glob(str(tmp_path / "tb" / "profile" / "plugins" / "profile" / "*" /
                         "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  # The profile plugin's input format (an XSpace): planes, and the two traced steps marked.
  data = jax.profiler.ProfileData.from_file(traces[0])
  names = [event.name for plane in data.planes for line in plane.lines for event in line.events]
  assert names.count("train") == 2, sorted(set(names))[:20]


def test_gradient_accumulation_gives_the_full_batch_update_and_resumes_exactly(runlocal_config,
                                                                              tmp_path):
  runlocal_config.total_steps = 4
  full = _params_np(train.train(runlocal_config, str(tmp_path / "full")))
  runlocal_config.grad_accum_steps = 2  # Microbatches of 8 over the 8 devices' batch axis.
  accumulated = train.train(runlocal_config, str(tmp_path / "accumulated"))
  # Attention key biases are left out: their gradient is 0 in exact arithmetic (a softmax does
  # not change when every logit of a query moves alike), so Adam turns rounding noise of ~1e-9
  # into full-size steps of either sign in any two runs that sum in different orders. Adam's
  # per-element scaling also magnifies the rounding of near-zero gradient entries: 1e-5 after 4
  # steps (the gradients themselves: tests/unit/test_grad_accumulation.py, to 1e-5 relative).
  compared = 0
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(full),
                               jax.tree.leaves(_params_np(accumulated))):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" not in name:
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=name)
      compared += 1
  assert compared > 20
  rows = metric_files.read_jsonl(metric_files.jsonl_path(str(tmp_path / "full"), "train"))
  accumulated_rows = metric_files.read_jsonl(
      metric_files.jsonl_path(str(tmp_path / "accumulated"), "train"))
  np.testing.assert_allclose([r["loss"] for r in accumulated_rows], [r["loss"] for r in rows],
                             rtol=1e-5)
  # Stopped and resumed with accumulation: the same params as without the stop.
  train.train(runlocal_config, str(tmp_path / "resumed"), stop_at_step=2)
  resumed = train.train(runlocal_config, str(tmp_path / "resumed"))
  for want, got in zip(jax.tree.leaves(_params_np(accumulated)),
                       jax.tree.leaves(_params_np(resumed))):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("family,objective,steps,match", [
    ("captioner", {}, 3, "must be a positive integer dividing"),
    ("captioner", dict(text_only_fraction=0.5), 2, "text_only_fraction < 1 takes the first"),
    ("clip", {}, 2, "'softmax_contrastive' couples every example of the batch")])
def test_gradient_accumulation_that_cannot_be_exact_is_refused(family, objective, steps,
                                                                match):
  config = load_config_module("demo").get_config(f"runlocal,family={family}")
  config.objective.update(objective)
  config.grad_accum_steps = steps
  with pytest.raises(errors.ConfigError, match=match):
    experiment.validate(config)
