"""Corrupt data stops the trainer before its first step, naming the records and the fix."""

import os
import shutil

import pytest

from ig_captioner import checkpointing
from ig_captioner import metric_files
from ig_captioner import train
from ig_captioner.data import prepare
from ig_captioner.data import sources
from tests import helpers


def _corrupt_copy(runlocal_config, data_dir, tmp_path, split):
  shutil.copytree(data_dir, tmp_path / "tfds")
  runlocal_config.data.data_dir = str(tmp_path / "tfds")
  path = sources.get(runlocal_config.data).prepared_builder().data_path
  (record_file,) = [f for f in os.listdir(path) if f"{split}.array_record" in f]
  helpers.corrupt_middle_third(path / record_file)


def test_corrupt_record_stops_the_trainer_before_its_first_step(runlocal_config, data_dir,
                                                                 tmp_path):
  _corrupt_copy(runlocal_config, data_dir, tmp_path, "train")
  with pytest.raises(sources.DataError, match=r"split 'train' .* has unreadable records \d+.*"
                                              r"Nothing was trained.*prepare it again"):
    train.train(runlocal_config, str(tmp_path / "run"))
  assert not os.path.exists(metric_files.jsonl_path(str(tmp_path / "run"), "train"))
  assert checkpointing.Checkpointer(str(tmp_path / "run"), read_only=True).all_steps() == []
  with pytest.raises(sources.DataError, match="has unreadable records"):  # And `--verify`.
    prepare.prepare(runlocal_config.data, verify=True)
