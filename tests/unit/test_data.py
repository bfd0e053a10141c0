"""The embedded data set, its tokenizer, the input pipeline, and data errors."""

import io
import os
import shutil

import jax
import numpy as np
import pytest
import sentencepiece as spm

from ig_captioner import token_ids
from ig_captioner.data import digits_captions
from ig_captioner.data import pipeline
from ig_captioner.data import records
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import train_mixture
from tests import helpers


def _all(source, key):
  return [source[i][key] for i in range(len(source))]


def test_splits_are_disjoint_and_eval_splits_balanced(runlocal_config):
  data = runlocal_config.data
  splits = ("train", "validation", "zeroshot", "retrieval")
  ids = {split: set(_all(sources.open_split(data, split), "image_id")) for split in splits}
  for i, a in enumerate(splits):
    for b in splits[i + 1:]:
      assert not ids[a] & ids[b], (a, b)
  for split, per_class in (("zeroshot", data.holdout_per_class),
                           ("validation", data.validation_per_class),
                           ("retrieval", data.retrieval_per_class)):
    labels = _all(sources.open_split(data, split), "label")
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
  assert sources.class_names(data) == list(digits_captions.CLASS_NAMES)


def test_records_carry_all_their_captions(runlocal_config):
  retrieval = sources.open_split(runlocal_config.data, "retrieval")
  for i in (0, 57):
    record = retrieval[i]
    name = digits_captions.CLASS_NAMES[record["label"]]
    assert [c.decode() for c in record["captions"]] == [
        t.format(name) for t in digits_captions.CAPTION_TEMPLATES]
    assert record["caption"] == record["captions"][0]
  train_record = sources.open_split(runlocal_config.data, "train")[3]
  assert [c.decode() for c in train_record["captions"]] == [train_record["caption"].decode()]


def test_images_are_the_real_upsampled_digits(runlocal_config):
  from sklearn import datasets as sk_datasets
  digits = sk_datasets.load_digits()
  record = sources.open_split(runlocal_config.data, "zeroshot")[7]
  assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
  np.testing.assert_array_equal(record["image"], digits_captions.upsample(
      digits.images[record["image_id"]]))
  assert record["label"] == digits.target[record["image_id"]]


def test_class_prior_is_zipf():
  probs = digits_captions.class_probabilities(1.0, seed=0)
  ranked = np.sort(probs)[::-1]
  np.testing.assert_allclose(ranked / ranked[0], 1.0 / np.arange(1, 11))
  np.testing.assert_allclose(digits_captions.class_probabilities(0.0, seed=0), 0.1)
  assert not np.array_equal(probs, digits_captions.class_probabilities(1.0, seed=1))


def test_train_captions_follow_the_prior_and_noise(runlocal_config):
  data = runlocal_config.data
  source = sources.open_split(data, "train")
  n = len(source)
  assert n == data.num_train_examples
  labels = np.array(_all(source, "label"))
  names = digits_captions.CLASS_NAMES
  named = np.array([names.index(next(w for w in c.decode().split() if w in names))
                    for c in _all(source, "caption")])
  prior = digits_captions.class_probabilities(data.prior_exponent, data.seed)
  # Image classes: multinomial(n, prior); every count within 4.5 standard deviations.
  counts = np.bincount(labels, minlength=10)
  assert np.all(np.abs(counts - n * prior) <= 4.5 * np.sqrt(n * prior * (1 - prior)) + 1)
  # A caption names its image's class with probability (1 - q) + q * sum(prior^2).
  q = data.caption_noise
  p_match = (1 - q) + q * np.sum(prior ** 2)
  assert abs(np.mean(named == labels) - p_match) <= 4.5 * np.sqrt(p_match * (1 - p_match) / n)


def test_tokenizer_layout_and_errors(runlocal_config):
  tok = sources.tokenizer(runlocal_config.data)
  tokens = tok.encode("a handwritten seven", 8)
  n = int((tokens != 0).sum())
  assert tokens[0] == token_ids.BOS_ID and tokens[n - 1] == token_ids.EOS_ID
  assert (tokens[n:] == 0).all()
  assert tok.decode(tokens) == "a handwritten seven"
  with pytest.raises(ValueError, match="max_text_len"):
    tok.encode("a handwritten seven " * 5, 8, strict=True)
  assert len(tok.encode("a handwritten seven " * 5, 8)) == 8


def test_train_batches_are_normalized_and_shaped(runlocal_config):
  tok = sources.tokenizer(runlocal_config.data)
  batch = next(iter(train_mixture.train_loader(runlocal_config, tok)))
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["tokens"].shape == (16, runlocal_config.model.max_text_len)
  np.testing.assert_array_equal(batch["target_mask"], batch["tokens"][:, 1:] != 0)


def test_eval_batches_cover_every_image_once(runlocal_config):
  batches = list(pipeline.labeled_batches(runlocal_config.data, "validation", 32, 64))
  assert all(b["image"].shape == (64, 32, 32, 3) for b in batches)
  valid = np.concatenate([b["valid"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[valid]
  assert valid.sum() == 200
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]),
                                np.where(valid, np.arange(len(valid)), -1))
  np.testing.assert_array_equal(labels, _all(sources.open_split(runlocal_config.data,
                                                                  "validation"), "label"))


def _as_process(monkeypatch, index: int, count: int):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


def test_processes_split_each_eval_batch(runlocal_config, monkeypatch):
  whole = list(pipeline.labeled_batches(runlocal_config.data, "validation", 32, 64))
  per_process = []
  for p in range(2):
    _as_process(monkeypatch, p, 2)
    per_process.append(list(pipeline.labeled_batches(runlocal_config.data, "validation", 32, 64)))
  assert len(per_process[0]) == len(per_process[1]) == len(whole)
  for b, batch in enumerate(whole):
    for key in ("image", "label", "valid", "index"):
      np.testing.assert_array_equal(
          np.concatenate([per_process[0][b][key], per_process[1][b][key]]), batch[key])


def test_bad_values_are_named():
  with pytest.raises(ValueError, match="prior_exponent"):
    digits_captions.make_config(prior_exponent=-1)
  with pytest.raises(ValueError, match="caption_noise"):
    digits_captions.make_config(caption_noise=1.0)
  with pytest.raises(ValueError, match="holdout_per_class"):
    digits_captions.make_config(holdout_per_class=160, validation_per_class=20)


def test_config_can_name_an_existing_sentencepiece_model(runlocal_config, tmp_path):
  own = sources.tokenizer(runlocal_config.data)
  path = tmp_path / "shared_vocab.model"
  path.write_bytes(open(own.source, "rb").read())
  runlocal_config.data.tokenizer = str(path)
  named = sources.tokenizer(runlocal_config.data)
  assert named.source == str(path)
  np.testing.assert_array_equal(named.encode("a handwritten two", 12),
                                own.encode("a handwritten two", 12))


def test_sentencepiece_model_with_other_special_ids_is_refused(tmp_path):
  model = io.BytesIO()  # SentencePiece's defaults: unk=0, bos=1, eos=2, no pad.
  sentences = ["a handwritten two", "the digit six"] * 50
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences),
                                 model_writer=model, vocab_size=30, minloglevel=2,
                                 hard_vocab_limit=False)
  with pytest.raises(ValueError, match=r"\(pad, bos, eos\) ids \(-1, 1, 2\).*needs \(0, 1, 2\)"):
    tokenizer_lib.Tokenizer(model.getvalue())


def test_missing_tokenizer_file_is_named(runlocal_config, tmp_path):
  runlocal_config.data.tokenizer = str(tmp_path / "nope.model")
  with pytest.raises(FileNotFoundError, match="nope.model"):
    sources.tokenizer(runlocal_config.data)


def test_corrupt_record_names_the_record_and_the_fix(runlocal_config, data_dir, tmp_path):
  shutil.copytree(data_dir, tmp_path / "tfds")
  runlocal_config.data.data_dir = str(tmp_path / "tfds")
  path = sources.get(runlocal_config.data).prepared_builder().data_path
  (record_file,) = [f for f in os.listdir(path) if "zeroshot.array_record" in f]
  helpers.corrupt_middle_third(path / record_file)
  with pytest.raises(sources.DataError, match="record .* could not be read.*prepare it again"):
    source = sources.open_split(runlocal_config.data, "zeroshot")
    for i in range(len(source)):
      source[i]


def test_garbage_tokenizer_file_is_named_with_the_fix(runlocal_config, tmp_path):
  path = tmp_path / "garbage.model"
  path.write_bytes(b"this is not a SentencePiece model" * 10)
  runlocal_config.data.tokenizer = str(path)
  with pytest.raises(tokenizer_lib.TokenizerError,
                     match=rf"tokenizer {path} is not a readable SentencePiece model.*"
                           "set config.data.tokenizer"):
    sources.tokenizer(runlocal_config.data)


def test_verified_splits_are_not_read_again_until_their_files_change(runlocal_config,
                                                                     monkeypatch):
  reads = []
  monkeypatch.setattr(records.CheckedSource, "unreadable",
                      lambda self, indices: reads.append(len(indices)) or [])
  sources.verify_split(runlocal_config.data, "zeroshot")  # Passed when the data was prepared.
  assert reads == []
  sources.verify_split(runlocal_config.data, "zeroshot", force=True)
  assert sum(reads) == 500  # Every record once.
