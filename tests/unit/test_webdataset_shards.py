"""webdataset tar shards (img2dataset's `--output_format webdataset` layout) as web shards:
complete and deterministic reads, exact resumption from a byte offset, the split over
processes, corrupt members and unreadable shards skipped and counted, the tokenizer sample and
the ArrayRecord converter."""

import glob
import io
import json
import os
import re
import tarfile

import jax
import ml_collections
import numpy as np
import pytest

from ig_captioner.data import records
from ig_captioner.data import shard_files
from ig_captioner.data import shards_to_array_record
from ig_captioner.data import skip_counts
from ig_captioner.data import tar_samples
from ig_captioner.data import web_shards
from tests.fake_bucket import fake_bucket
from tests.web_shard_files import NUM_SHARDS, ROWS, write_tar_shards


def _data(shards, **overrides) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict(dict(name="web_shards", shards=str(shards), cycle_length=2,
                                        shuffle_window=5, shuffle_seed=0))
  data.update(overrides)
  return data


def _texts(rows) -> list[str]:
  return [r["text"] for r in rows]


@pytest.fixture(scope="module")
def clean_tars(tmp_path_factory):
  directory = tmp_path_factory.mktemp("clean_tars")
  return str(directory / "*.tar"), write_tar_shards(directory)


@pytest.fixture(scope="module")
def corrupt_tars(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corrupt_tars")
  return str(directory / "*.tar"), write_tar_shards(directory, corrupt=True)


def test_samples_group_members_by_key_as_img2dataset_wrote_them(clean_tars):
  pattern, usable = clean_tars
  path = sorted(glob.glob(pattern))[1]
  rows = list(tar_samples.TarSamples(path))
  assert [r[tar_samples.KEY] for r in rows] == [f"00001{r:04d}" for r in range(ROWS)]
  assert all(set(r) == {tar_samples.KEY, "jpg", "json", "txt"} for r in rows)
  assert json.loads(rows[3]["json"])["caption"] == rows[3]["txt"].decode() == "photo 1 number 3"
  assert tar_samples.split_name("a.b/000010003.seg.png") == ("a.b/000010003", "seg.png")
  assert len(usable) == NUM_SHARDS * ROWS


def test_one_epoch_holds_every_sample_once_with_its_image_in_a_seeded_order(clean_tars):
  pattern, usable = clean_tars
  records_, counts = web_shards.load(_data(pattern), num_epochs=1)
  first = list(records_)
  assert sorted(_texts(first)) == sorted(usable)
  for record in first:
    assert abs(float(record["image"].mean()) - usable[record["text"]]) < 3  # Its own image.
  assert _texts(list(web_shards.load(_data(pattern), num_epochs=1)[0])) == _texts(first)
  other_seed = _texts(list(web_shards.load(_data(pattern, shuffle_seed=1), num_epochs=1)[0]))
  assert other_seed != _texts(first) and sorted(other_seed) == sorted(usable)
  assert counts.totals() == {"corrupt_records": 0, "unreadable_shards": 0}


def test_corrupt_members_and_bad_shards_are_skipped_counted_and_named(corrupt_tars, caplog):
  pattern, usable = corrupt_tars
  records_, counts = web_shards.load(_data(pattern), num_epochs=1)
  assert sorted(_texts(records_)) == sorted(usable)
  assert len(usable) == NUM_SHARDS * ROWS - 2 - ROWS - 3
  assert counts.snapshot() == {web_shards.BAD_IMAGE: 1, web_shards.NO_TEXT: 2,
                               web_shards.NO_IMAGE: 1, skip_counts.UNREADABLE_SHARD: 2}
  warnings = caplog.text
  assert "sample '000010002'" in warnings  # The damaged JPEG, named by its key.
  assert "sample '000030001'" in warnings and "no 'jpg' in ['json', 'txt']" in warnings
  assert "'txt' is not UTF-8 text" in warnings
  assert "00002.tar, which cannot be read" in warnings  # Not a tar.
  assert "00003.tar, which cannot be read" in warnings  # Cut inside its last sample.


def test_a_restored_iterator_continues_exactly_from_a_byte_offset(corrupt_tars):
  pattern, _ = corrupt_tars
  dataset = web_shards.load(_data(pattern))[0]
  straight = iter(dataset)
  expected = _texts(next(straight) for _ in range(60))  # Three epochs and more.
  for k in (0, 5, 23):
    first = iter(dataset)
    for _ in range(k):
      next(first)
    state = json.loads(json.dumps(first.get_state()))  # As a checkpoint stores it.
    if k == 23:  # Mid-shard: a tar's position is a byte offset.
      assert re.search(r'"offset": [1-9]', json.dumps(state))
    resumed = iter(web_shards.load(_data(pattern))[0])
    resumed.set_state(state)
    assert _texts(next(resumed) for _ in range(60 - k)) == expected[k:], k


def test_a_shard_resumes_by_seeking_not_by_reading_it_again(clean_tars, monkeypatch):
  path = sorted(glob.glob(clean_tars[0]))[0]
  samples = tar_samples.TarSamples(path)
  next(samples), next(samples)
  state = samples.get_state()
  assert state["offset"] > 0
  opened_at = []
  real_open = tarfile.open

  def spy(*args, fileobj=None, **kwargs):
    opened_at.append(fileobj.tell())
    return real_open(*args, fileobj=fileobj, **kwargs)
  resumed = tar_samples.TarSamples(path)
  monkeypatch.setattr(tarfile, "open", spy)
  resumed.set_state(state)
  assert [r[tar_samples.KEY] for r in resumed] == [f"00000{r:04d}" for r in range(2, ROWS)]
  assert opened_at == [state["offset"]]
  assert resumed.get_state() == {"offset": None}


def test_shards_are_split_over_processes(clean_tars, monkeypatch):
  pattern, usable = clean_tars
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  seen = []
  for index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    seen.append(_texts(web_shards.load(_data(pattern), num_epochs=1)[0]))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(usable)


def test_tokenizer_sample_and_array_record_conversion_read_tars(corrupt_tars, tmp_path):
  pattern, usable = corrupt_tars
  texts = web_shards.sample_texts(_data(pattern), 10_000)
  assert set(texts) >= set(usable) and len(texts) == len(set(texts))
  written, counts = shards_to_array_record.convert(pattern, str(tmp_path))
  assert written == len(usable) and counts.corrupt_records == 4
  assert sorted(os.listdir(tmp_path)) == [f"{s:05d}.array_record" for s in (0, 1, 3)]


def test_compressed_tars_and_no_usable_sample_are_clear_errors(tmp_path):
  (tmp_path / "00000.tar.gz").write_bytes(b"")
  with pytest.raises(records.DataError, match="compressed tar.*uncompressed .tar shards"):
    list(web_shards.load(_data(tmp_path / "*.tar.gz"))[0])
  with tarfile.open(tmp_path / "00001.tar", "w") as tar:
    info = tarfile.TarInfo("000010000.png")
    info.size = 3
    tar.addfile(info, io.BytesIO(b"png"))
  with pytest.raises(records.DataError, match="none of the 1 shards"):
    list(web_shards.load(_data(tmp_path / "00001.tar"))[0])


def test_tars_in_a_bucket_are_read_resumed_and_written(tmp_path):
  usable = write_tar_shards(tmp_path / "bucket" / "laion")
  with fake_bucket(str(tmp_path)):
    pattern = "gs://bucket/laion/{00000..00003}.tar"
    records_, _ = web_shards.load(_data(pattern), num_epochs=1)
    assert sorted(_texts(records_)) == sorted(usable)
    samples = tar_samples.TarSamples("gs://bucket/laion/00001.tar")
    next(samples)
    resumed = tar_samples.TarSamples("gs://bucket/laion/00001.tar")
    resumed.set_state(samples.get_state())
    assert [r[tar_samples.KEY] for r in resumed] == [f"00001{r:04d}" for r in range(1, ROWS)]
    tar_samples.write("gs://bucket/out/00000.tar", [{tar_samples.KEY: "k", "txt": b"a cat"}])
  assert tarfile.open(tmp_path / "bucket" / "out" / "00000.tar").getnames() == ["k.txt"]


def test_shard_formats_follow_the_suffix():
  assert shard_files.is_tar("gs://b/00001.tar") and not shard_files.is_tar("a/00001.parquet")
  assert shard_files.default_columns("x.tar") == ("jpg", "txt")
  assert shard_files.default_columns("x.parquet") == ("jpg", "caption")
  assert web_shards.columns(("png", None), "x.tar") == ("png", "txt")
  assert np.array_equal(np.array(shard_files.start_state("x.tar")["offset"]), 0)
