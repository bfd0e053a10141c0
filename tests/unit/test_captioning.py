"""Caption metrics against independent implementations of their definitions on a hand-built
case, and the captioning evaluator end to end on the embedded data."""

import collections
import math

import jax
import numpy as np
import pytest

from ig_captioner import errors
from ig_captioner import models
from ig_captioner import sharding
from ig_captioner.data import sources
from ig_captioner.evaluators import caption_metrics
from ig_captioner.evaluators import caption_generation
from tests import helpers

CANDIDATES = ["a cat sits on the mat", "A dog runs, in the park!", "two birds"]
REFERENCES = [["a cat is sitting on the mat", "there is a cat on the mat"],
              ["a dog running in a park", "the dog runs in the park", "a brown dog"],
              ["two small birds on a branch", "birds sitting together"]]


def _ngrams(words, n):
  return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def cider_d(candidates, references, sigma=6.0):
  """CIDEr-D as Vedantam et al. (2015) define it: per n (1-4), 10 x the mean over references of
  a Gaussian length penalty x sum_g min(g(c), g(s)) g(s) / (|g(c)| |g(s)|), with g the n-gram
  counts weighted by log(images / images whose references hold the n-gram); mean over n."""
  cands = [caption_metrics.normalize(c).split() for c in candidates]
  refs = [[caption_metrics.normalize(r).split() for r in rs] for rs in references]
  total = 0.0
  for n in range(1, 5):
    df = collections.Counter(g for rs in refs for g in set().union(*(_ngrams(r, n) for r in rs)))

    def weights(words, n=n, df=df):
      return {g: c * math.log(len(refs) / df[g]) if df[g] else c * math.log(len(refs))
              for g, c in _ngrams(words, n).items()}

    for cand, rs in zip(cands, refs):
      gc = weights(cand)
      norm_c = math.sqrt(sum(v * v for v in gc.values()))
      for ref in rs:
        gr = weights(ref)
        norm_r = math.sqrt(sum(v * v for v in gr.values()))
        dot = sum(min(v, gr.get(g, 0.0)) * gr.get(g, 0.0) for g, v in gc.items())
        sim = dot / (norm_c * norm_r) if norm_c and norm_r else 0.0
        penalty = math.exp(-((len(cand) - len(ref)) ** 2) / (2 * sigma ** 2))
        total += 10.0 * penalty * sim / len(rs) / len(cands) / 4
  return total


def bleu4(candidates, references):
  """Corpus BLEU-4 (Papineni et al., 2002): clipped n-gram precisions summed over the corpus,
  their geometric mean, a brevity penalty against the closest reference lengths."""
  cands = [caption_metrics.normalize(c).split() for c in candidates]
  refs = [[caption_metrics.normalize(r).split() for r in rs] for rs in references]
  correct, guessed = [0] * 4, [0] * 4
  cand_len = ref_len = 0
  for cand, rs in zip(cands, refs):
    cand_len += len(cand)
    ref_len += min((abs(len(r) - len(cand)), len(r)) for r in rs)[1]
    for n in range(1, 5):
      counts = _ngrams(cand, n)
      most = collections.Counter()
      for r in rs:
        most |= _ngrams(r, n)
      correct[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
      guessed[n - 1] += max(len(cand) - n + 1, 0)
  log_precision = sum(math.log(c / g) for c, g in zip(correct, guessed)) / 4
  return math.exp(log_precision + min(0.0, 1 - ref_len / cand_len))


def test_caption_metrics_match_independent_implementations():
  scores = caption_metrics.score(CANDIDATES, REFERENCES)
  assert scores["cider_d"] == pytest.approx(cider_d(CANDIDATES, REFERENCES), rel=1e-6)
  assert scores["bleu4"] == pytest.approx(bleu4(CANDIDATES, REFERENCES), rel=1e-4)
  # A perfect candidate scores higher than any other.
  perfect = caption_metrics.score([r[0] for r in REFERENCES], REFERENCES)
  assert perfect["cider_d"] > scores["cider_d"] and perfect["bleu4"] > scores["bleu4"]


def test_normalize_lowercases_and_drops_punctuation():
  assert caption_metrics.normalize("  A Dog, running!  in the PARK.") == (
      "a dog running in the park")


def test_captioning_evaluator_reports_cider_and_bleu(runlocal_config):
  config = runlocal_config
  config.evals = {"captions": caption_generation.default_config(
      batch_size=32, alphas=(0.0, 1.0), beam_size=2, prefixes=("caption",))}
  built = helpers.jitted(models.build(config.model))
  params = helpers.random_params(built, scale=1.0)
  mesh = sharding.make_mesh(config.eval_mesh)
  evaluator = caption_generation.Evaluator("captions", config.evals.captions, config,
                                           built.predict_fns, mesh,
                                           sources.tokenizer(config.data))
  metrics = evaluator.run(jax.device_put(params))
  stems = ("captioning/captions/caption_prefix",)
  assert set(metrics) == {f"{stem}/{m}_alpha{a}" for stem in stems
                          for m in ("cider_d", "bleu4", "words") for a in (0.0, 1.0)}
  assert all(np.isfinite(v) and v >= 0 for v in metrics.values())
  assert all(0 <= metrics[f"{s}/bleu4_alpha{a}"] <= 1 for s in stems for a in (0.0, 1.0))
  assert metrics["captioning/captions/caption_prefix/words_alpha0.0"] > 0


def test_captioning_needs_a_caption_family(runlocal_config):
  config = runlocal_config
  config.model = helpers.tiny_two_towers_config()
  built = helpers.jitted(models.build(config.model))
  with pytest.raises(errors.ConfigError, match="caption_generation.*cross_kv"):
    caption_generation.Evaluator("captions", caption_generation.default_config(), config,
                                 built.predict_fns, sharding.make_mesh(config.eval_mesh), None)
