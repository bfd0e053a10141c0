"""Short training runs on web shards (parquet, webdataset tars) log what the reader skipped,
and resume exactly."""

import jax
import numpy as np
import pytest

from ig_captioner import checkpointing
from ig_captioner import metric_files
from ig_captioner import train
from tests import web_shard_files
from tests.web_shard_files import write_shards as _write_shards


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corrupt")
  return str(directory / "*.parquet"), _write_shards(directory, corrupt=True)


@pytest.fixture(scope="module")
def laion_web_config(corrupt_shards, tmp_path_factory):
  """The paper config's data on the corrupt test shards, tokenizer prepared; tiny model."""
  return web_shard_files.laion_web_config(
      corrupt_shards[0], str(tmp_path_factory.mktemp("tok") / "web.model"))


def test_training_on_web_shards_runs_and_logs_the_skips(laion_web_config, tmp_path):
  state = train.train(laion_web_config, str(tmp_path))
  assert int(state.step) == laion_web_config.total_steps
  last = metric_files.read_jsonl(metric_files.jsonl_path(str(tmp_path), "train"))[-1]
  assert last["data_skipped/train/unreadable_shards"] == 1  # The truncated file.
  assert last["data_skipped/train/corrupt_records"] >= 2  # The bad image and the empty caption.


def test_training_on_webdataset_tars_resumes_bit_identical_and_logs_the_skips(tmp_path_factory):
  """img2dataset's webdataset layout: a run stopped after its first checkpoint and restarted
  ends with the params of a straight run (the reader resumes from its byte offsets)."""
  directory = tmp_path_factory.mktemp("corrupt_tars")
  web_shard_files.write_tar_shards(directory, corrupt=True)
  config = web_shard_files.laion_web_config(
      str(directory / "*.tar"), str(tmp_path_factory.mktemp("tok") / "web.model"))
  config.total_steps, config.checkpoint_every = 6, 3
  straight = train.train(config, str(tmp_path_factory.mktemp("straight")))
  workdir = str(tmp_path_factory.mktemp("resumed"))
  train.train(config, workdir, stop_at_step=5)
  assert checkpointing.Checkpointer(workdir, read_only=True).all_steps() == [3]
  resumed = train.train(config, workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(straight.params))
  last = metric_files.read_jsonl(metric_files.jsonl_path(workdir, "train"))[-1]
  assert last["data_skipped/train/unreadable_shards"] == 2  # Not a tar; cut inside a sample.
  assert last["data_skipped/train/corrupt_records"] >= 4  # Image bad or missing, text too.
