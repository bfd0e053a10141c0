"""Web-scale image-text shards (img2dataset's parquet layout): complete and deterministic reads,
exact resumption, the split over processes, corrupt records and unreadable shards skipped and
counted, the ArrayRecord converter, the tokenizer, and a short training run."""

import glob
import io
import json
import os

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ig_captioner import errors
from ig_captioner.data import prepare
from ig_captioner.data import shard_files
from ig_captioner.data import array_records
from ig_captioner.data import shards_to_array_record
from ig_captioner.data import skip_counts
from ig_captioner.data import sources
from ig_captioner.data import train_mixture
from ig_captioner.data import web_shards
from tests.conftest import load_config_module
from tests.fake_bucket import fake_bucket
from tests import web_shard_files
from tests.web_shard_files import NUM_SHARDS, ROWS, write_shards as _write_shards


def _data(shards, **overrides) -> ml_collections.ConfigDict:
  shards = shards if isinstance(shards, (str, list)) else str(shards)  # A path: its text.
  data = ml_collections.ConfigDict(dict(name="web_shards", shards=shards, cycle_length=2,
                                        shuffle_window=5, shuffle_seed=0))
  data.update(overrides)
  return data


def _texts(records) -> list[str]:
  return [r["text"] for r in records]


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory):
  directory = tmp_path_factory.mktemp("clean")
  return str(directory / "*.parquet"), _write_shards(directory)


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corrupt")
  return str(directory / "*.parquet"), _write_shards(directory, corrupt=True)


def test_one_epoch_holds_every_record_once_with_its_image_in_a_seeded_order(clean_shards):
  pattern, usable = clean_shards
  records, counts = web_shards.load(_data(pattern), num_epochs=1)
  first = list(records)
  assert sorted(_texts(first)) == sorted(usable)
  for record in first:
    assert record["image"].shape == (8, 8, 3) and record["image"].dtype == np.uint8
    assert abs(float(record["image"].mean()) - usable[record["text"]]) < 3  # Its own image.
  assert _texts(list(web_shards.load(_data(pattern), num_epochs=1)[0])) == _texts(first)
  other_seed = _texts(list(web_shards.load(_data(pattern, shuffle_seed=1), num_epochs=1)[0]))
  assert other_seed != _texts(first) and sorted(other_seed) == sorted(usable)
  assert counts.totals() == {"corrupt_records": 0, "unreadable_shards": 0}


def test_epochs_repeat_in_another_order(clean_shards):
  pattern, usable = clean_shards
  records = iter(web_shards.load(_data(pattern, shuffle_window=0))[0])
  epochs = [_texts(next(records) for _ in range(len(usable))) for _ in range(3)]
  assert all(sorted(e) == sorted(usable) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1


def test_corrupt_records_and_a_truncated_shard_are_skipped_and_counted(corrupt_shards, caplog):
  pattern, usable = corrupt_shards
  records, counts = web_shards.load(_data(pattern), num_epochs=1)
  assert sorted(_texts(records)) == sorted(usable)
  assert len(usable) == NUM_SHARDS * ROWS - ROWS - 2
  assert counts.snapshot() == {web_shards.BAD_IMAGE: 1, web_shards.NO_TEXT: 1,
                               skip_counts.UNREADABLE_SHARD: 1}
  assert (counts.corrupt_records, counts.unreadable_shards) == (2, 1)
  warnings = caplog.text
  assert "row 2 of row group 0 of" in warnings and "00001.parquet" in warnings
  assert "row 0 of row group 1" in warnings  # Row 4: the second row group's first.
  assert "00002.parquet, which cannot be read" in warnings


def test_no_usable_record_anywhere_is_a_clear_error(tmp_path):
  for s in range(2):
    (tmp_path / f"{s}.parquet").write_bytes(b"PAR1 not really")
  with pytest.raises(sources.DataError, match="none of the 2 shards of this process"):
    list(web_shards.load(_data(tmp_path / "*.parquet"))[0])
  pq.write_table(pa.table({"caption": ["a", "b"], "jpg": [b"junk", b""]}),
                 str(tmp_path / "2.parquet"))
  with pytest.raises(sources.DataError, match="none of the 3 shards"):
    list(web_shards.load(_data(tmp_path / "*.parquet"))[0])
  with pytest.raises(sources.DataError, match=r"no column \['image'\].*image_column"):
    list(web_shards.load(_data(tmp_path / "2.parquet", image_column="image"))[0])
  with pytest.raises(sources.DataError, match="no file matches"):
    web_shards.load(_data(tmp_path / "*.nothing"))


def test_a_restored_iterator_continues_exactly(corrupt_shards):
  pattern, _ = corrupt_shards
  dataset = web_shards.load(_data(pattern))[0]
  straight = iter(dataset)
  expected = _texts(next(straight) for _ in range(60))  # Three epochs and more.
  for k in (0, 7, 23):
    first = iter(dataset)
    for _ in range(k):
      next(first)
    resumed = iter(web_shards.load(_data(pattern))[0])
    resumed.set_state(json.loads(json.dumps(first.get_state())))  # As a checkpoint stores it.
    assert _texts(next(resumed) for _ in range(60 - k)) == expected[k:], k


def test_shards_are_split_over_processes(clean_shards, monkeypatch):
  pattern, usable = clean_shards
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  seen = []
  for index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    assert shard_files.process_shards(shard_files.shard_paths(_data(pattern))) == [
        p for i, p in enumerate(sorted(glob.glob(pattern))) if i % 2 == index]
    seen.append(_texts(web_shards.load(_data(pattern), num_epochs=1)[0]))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(usable)
  monkeypatch.setattr(jax, "process_count", lambda: 5)
  with pytest.raises(errors.ConfigError, match="4 shards cannot feed 5 processes"):
    web_shards.load(_data(pattern))


def test_shard_lists_take_paths_globs_and_ranges(clean_shards):
  pattern, _ = clean_shards
  directory = os.path.dirname(pattern)
  listed = sorted(glob.glob(pattern))
  assert shard_files.shard_paths(_data(f"{directory}/{{00001..00003}}.parquet")) == listed[1:]
  assert shard_files.shard_paths(_data([listed[2], pattern])) == [listed[2]] + [
      p for p in listed if p != listed[2]]
  assert shard_files.shard_paths(_data(f"{listed[3]}, {listed[0]}")) == [listed[3], listed[0]]
  with pytest.raises(errors.ConfigError, match="config.data.shards is empty"):
    shard_files.shard_paths(_data(""))


def test_shards_and_the_conversion_in_a_bucket(tmp_path):
  usable = _write_shards(tmp_path / "bucket" / "laion")
  with fake_bucket(str(tmp_path)):
    records, _ = web_shards.load(_data("gs://bucket/laion/*.parquet"), num_epochs=1)
    assert sorted(_texts(records)) == sorted(usable)
    written, _ = shards_to_array_record.convert("gs://bucket/laion/{00000..00003}.parquet",
                                                "gs://bucket/converted")
  assert written == len(usable)
  assert sorted(os.listdir(tmp_path / "bucket" / "converted")) == [
      f"{s:05d}.array_record" for s in range(NUM_SHARDS)]


def test_array_record_conversion_round_trips(corrupt_shards, tmp_path, capsys):
  pattern, usable = corrupt_shards
  written, counts = shards_to_array_record.convert(pattern, str(tmp_path))
  assert written == len(usable) and counts.corrupt_records == 2
  assert counts.unreadable_shards == 1
  files = sorted(glob.glob(str(tmp_path / "*.array_record")))
  assert [os.path.basename(f) for f in files] == [f"{s:05d}.array_record" for s in (0, 1, 3)]
  source = grain.sources.ArrayRecordDataSource(files)
  assert len(source) == len(usable)
  read = {}
  for i in np.random.default_rng(0).permutation(len(source)):  # Random access.
    image_bytes, text = array_records.decode_record(source[int(i)])
    read[text] = float(np.asarray(Image.open(io.BytesIO(image_bytes))).mean())
  assert sorted(read) == sorted(usable)
  assert all(abs(read[t] - usable[t]) < 3 for t in usable)


@pytest.fixture(scope="module")
def laion_web_config(corrupt_shards, tmp_path_factory):
  """The paper config's data on the corrupt test shards, tokenizer prepared; tiny model."""
  return web_shard_files.laion_web_config(
      corrupt_shards[0], str(tmp_path_factory.mktemp("tok") / "web.model"))


def test_prepare_trains_the_tokenizer_from_the_shards_captions(laion_web_config, tmp_path):
  tokenizer = sources.tokenizer(laion_web_config.data)
  assert tokenizer.has_reserved_ids
  assert tokenizer.decode(tokenizer.encode("photo 3 number 5", 12)) == "photo 3 number 5"
  missing = laion_web_config.data.copy_and_resolve_references()
  missing.tokenizer = str(tmp_path / "absent.model")
  with pytest.raises(sources.DataError, match="ig_captioner.data.prepare"):
    sources.tokenizer(missing)
  missing.tokenizer = None
  with pytest.raises(errors.ConfigError, match="config.data.tokenizer is unset"):
    sources.tokenizer(missing)
  with pytest.raises(errors.ConfigError, match="config.data.tokenizer is unset"):
    prepare.prepare(missing)


def test_clips_tokenizer_on_web_shards_is_read_not_trained(laion_web_config, tmp_path,
                                                           monkeypatch):
  """LiT on web shards with a converted CLIP's tokenizer: `clip_bpe` names CLIP's BPE, which
  preparation must not train into a file of that name."""
  monkeypatch.chdir(tmp_path)
  data = laion_web_config.data.copy_and_resolve_references()
  data.tokenizer = "clip_bpe"
  assert prepare.prepare(data) == "clip_bpe"
  assert not (tmp_path / "clip_bpe").exists()
  tokenizer = sources.tokenizer(data)
  assert tokenizer.encode("a photo", 5).tolist() == [49406, 320, 1125, 49407, 0]


def test_train_batches_resume_exactly_and_report_skips(laion_web_config):
  config = laion_web_config
  tokenizer = sources.tokenizer(config.data)
  loader = train_mixture.train_loader(config, tokenizer)
  straight = iter(loader)
  expected = [next(straight) for _ in range(6)]
  batch = expected[0]
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1 and batch["image"].max() <= 1
  assert batch["tokens"].shape == (8, 12) and batch["tokens"].dtype == np.int32
  assert batch["target_mask"].shape == (8, 11)
  texts = {tokenizer.decode(t) for b in expected for t in b["tokens"]}
  assert texts <= {f"photo {s} number {r}" for s in range(NUM_SHARDS) for r in range(ROWS)}
  counts = loader.skip_counts["train"]  # 3 epochs read: each epoch skips the 2 again.
  assert counts.corrupt_records >= 4 and counts.unreadable_shards == 1
  first = iter(train_mixture.train_loader(config, tokenizer))
  for _ in range(2):
    next(first)
  resumed = iter(train_mixture.train_loader(config, tokenizer))
  resumed.set_state(json.loads(json.dumps(first.get_state())))
  for want in expected[2:]:
    got = next(resumed)
    for key in ("image", "tokens", "target_mask"):
      np.testing.assert_array_equal(got[key], want[key])


def test_a_mixture_with_web_shards_and_a_tfds_source(laion_web_config, data_dir):
  config = laion_web_config.copy_and_resolve_references()
  digits = load_config_module("ig_b16_laion").get_config("runlocal").data
  digits.data_dir = data_dir
  config.data.mixture = ml_collections.ConfigDict(dict(
      web=dict(weight=0.5), digits=dict(weight=0.5, data=digits.to_dict())))
  tokenizer = sources.tokenizer(config.data)
  batches = iter(train_mixture.train_loader(config, tokenizer))
  texts = [tokenizer.decode(t) for _ in range(4) for t in next(batches)["tokens"]]
  assert sum(t.startswith("photo") for t in texts) == len(texts) // 2  # Exact proportions.
