"""A short training run on web shards logs what the reader skipped."""

import pytest

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
