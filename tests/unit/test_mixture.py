"""Train mixtures and prefix conditioning: the prefix token is never scored, the mixture follows
its weights with each source's style, text and prefix, resumes mid-epoch exactly, splits over
processes; evaluation reports each test prefix."""

import jax
import numpy as np

from ig_captioner import models
from ig_captioner import token_ids
from ig_captioner.data import sources
from ig_captioner.data import records
from ig_captioner.data import train_mixture
from ig_captioner.scoring import likelihood
from tests import helpers
from tests.conftest import load_config_module
from tests.unit.test_objective import numpy_sequence_logprob

CAPTION, CLASSIFICATION = (token_ids.PREFIX_IDS[k] for k in ("caption", "classification"))


def test_the_prefix_token_is_never_scored():
  model = helpers.jitted(models.build(helpers.tiny_model_config()))
  params = helpers.random_params(model)
  tokens = helpers.random_tokens(np.random.default_rng(0), 4, 8, 32)
  with_prefix = np.concatenate([tokens[:, :1], np.full((4, 1), CAPTION, np.int32),
                                tokens[:, 1:-1]], axis=1)  # [BOS, <caption>, pieces..., EOS].
  inputs, targets = likelihood.inputs_and_targets(with_prefix)
  logits = np.asarray(model.predict_fns["decode"](params, inputs, None))
  ours = np.asarray(likelihood.sequence_logprob(logits, targets))
  # Reference: numpy log-probs of everything after the prefix (BOS and prefix given).
  np.testing.assert_allclose(ours, numpy_sequence_logprob(logits[:, 1:], targets[:, 1:]),
                             rtol=1e-5)
  assert not np.allclose(ours, numpy_sequence_logprob(logits, np.where(
      targets == CAPTION, 9, targets)))  # Scoring the prefix position would change it.
  mask = token_ids.scored_targets(with_prefix)
  assert not mask[:, 0].any() and mask[:, 1].all()


def _prefix_config(data_dir, weights=(0.75, 0.25)):
  config = load_config_module("prefix").get_config("runlocal,prefix")
  config.data.data_dir = data_dir
  config.data.mixture.captions.weight, config.data.mixture.labels.weight = weights
  return config


def test_mixture_follows_its_weights_with_each_sources_style_text_and_prefix(data_dir):
  config = _prefix_config(data_dir)
  tokenizer = sources.tokenizer(config.data)
  batches = [batch for _, batch in zip(range(20), train_mixture.train_loader(config, tokenizer))]
  tokens = np.concatenate([b["tokens"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])
  prefixes = tokens[:, 1]
  assert set(prefixes) == {CAPTION, CLASSIFICATION}
  assert abs(np.mean(prefixes == CAPTION) - 0.75) <= 0.02  # grain mixes in exact proportions.
  brightness = images.mean(axis=(1, 2, 3))  # Caption images: a light digit on black...
  assert (brightness[prefixes == CAPTION] < 0).all()
  assert (brightness[prefixes == CLASSIFICATION] > 0).all()  # ...labels: inverted.
  label_texts = {tokenizer.decode(t) for t in tokens[prefixes == CLASSIFICATION]}
  allowed = {t.format(c) for t in config.data.mixture.labels.templates
             for c in sources.class_names(config.data)}
  assert label_texts <= allowed and len(label_texts) > 5
  assert not np.concatenate([b["target_mask"] for b in batches])[:, 0].any()


def test_mixture_resumes_mid_epoch_exactly(data_dir):
  config = _prefix_config(data_dir)
  tokenizer = sources.tokenizer(config.data)
  first = iter(train_mixture.train_loader(config, tokenizer))
  for _ in range(7):
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(3)]
  resumed = iter(train_mixture.train_loader(config, tokenizer))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in ("image", "tokens", "target_mask"):
      np.testing.assert_array_equal(got[key], want[key])


def test_processes_read_disjoint_shards_reshuffled_every_epoch(monkeypatch):
  num_records, num_processes = 60, 3
  epochs = []
  for p in range(num_processes):
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    monkeypatch.setattr(jax, "process_count", lambda: num_processes)
    shard = records.shuffled_shard(list(range(num_records)), seed=0)
    epochs.append([shard[i] for i in range(2 * num_records // num_processes)])  # Two epochs.
  shards = [set(e) for e in epochs]
  assert sorted(x for s in shards for x in s) == list(range(num_records))  # Disjoint, complete.
  for epoch in epochs:  # Each epoch visits the whole shard, reshuffled.
    half = len(epoch) // 2
    assert sorted(epoch[:half]) == sorted(epoch[half:]) and epoch[:half] != epoch[half:]
