"""MetaCLIP substring matching speed in image-text pairs (captions) per second on one core,
against a metadata list of MetaCLIP's size (500k entries).

    PY=$(bash launch/curation_venv.sh)
    $PY -m benchmarks.curation_matching [--entries 500000] [--pipeline_pairs 200000]

Synthetic data shaped like MetaCLIP's (offline: its metadata.json is not here): a vocabulary of
word-like strings with Zipf frequencies; entries are unigrams (20%), bigrams (50%) and 2-4 word
titles (30%), as WordNet synsets, Wikipedia unigrams, bigrams and titles make up MetaCLIP's list;
captions are 6-18 words of the same vocabulary with some punctuation and capitals, as alt-text
is. Timed in this one process (one core): the automaton's build, `metaclip.EntryMatcher.match`
(spacing plus Aho-Corasick), matching plus the balanced-sampling draws of every matched entry
(the pipeline's per-pair work after reading), and the plain `entry in caption` loop over all
entries (the per-entry definition) on a few captions, for the speed-up. `--pipeline_pairs N`
also times the whole curation (`python -m ig_captioner.data.curate`, Beam's DirectRunner in this
process) on N such pairs in 8 parquet shards (1-byte images: the curation reads, never decodes
them): pairs per second of wall time and per CPU-second of this process. The machine's f32
matmul peak (`measure.matmul_peak`), measured in the same run, says which machine it was.
"""

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import jax.numpy as jnp

from benchmarks import measure
from ig_captioner.data import curate
from ig_captioner.data import metaclip


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = set()
  while len(words) < size:
    length = int(rng.integers(3, 11))
    words.add("".join(rng.choice(letters, length)))
  return sorted(words)


def _zipf_words(vocabulary: list[str], count: int, rng: np.random.Generator) -> list[str]:
  ranks = np.minimum(rng.zipf(1.1, count), len(vocabulary)) - 1
  return [vocabulary[r] for r in ranks]


def synthetic(num_entries: int, num_captions: int, seed: int = 0):
  """(entries, captions) shaped like MetaCLIP's metadata and web alt-text."""
  rng = np.random.default_rng(seed)
  vocabulary = _vocabulary(max(num_entries // 5, 1000), rng)
  entries = list(dict.fromkeys(vocabulary[:num_entries // 5]))
  while len(entries) < num_entries:
    n = 2 if rng.random() < 0.625 else int(rng.integers(2, 5))
    entries.append(" ".join(_zipf_words(vocabulary, n, rng)))
    if len(entries) % 50_000 == 0:
      entries = list(dict.fromkeys(entries))
  entries = list(dict.fromkeys(entries))[:num_entries]
  captions = []
  for _ in range(num_captions):
    words = _zipf_words(vocabulary, int(rng.integers(6, 19)), rng)
    words[0] = words[0].capitalize()
    captions.append(" ".join(words) + rng.choice([".", "", "!", ", photo."]))
  return entries, captions


def pairs_per_second(fn, captions: list[str], repeats: int = 3) -> float:
  """Best of `repeats` passes over `captions`."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for caption in captions:
      fn(caption)
    best = min(best, time.perf_counter() - start)
  return len(captions) / best


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def pipeline_pairs_per_second(entries: list[str], captions: list[str], threshold: int
                              ) -> dict:
  """The whole local curation of `captions` in 8 parquet shards: pairs/s of wall time and of
  CPU time."""
  with tempfile.TemporaryDirectory() as scratch:
    for s, part in enumerate(np.array_split(np.array(captions, object), 8)):
      keys = [f"{s:05d}{r:05d}" for r in range(len(part))]
      pq.write_table(pa.table({"key": keys, "caption": list(part), "jpg": [b"x"] * len(part)}),
                     os.path.join(scratch, f"{s:05d}.parquet"))
    with open(os.path.join(scratch, "metadata.txt"), "w", encoding="utf-8") as f:
      f.write("\n".join(entries))
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    _, summary = curate.curate([f"--shards={scratch}/*.parquet",
                                f"--metadata={scratch}/metadata.txt",
                                f"--output={scratch}/out", f"--threshold={threshold}"])
    wall, used = time.perf_counter() - start, _cpu_seconds() - start_cpu
  return dict(pipeline_pairs=summary["pairs_in"], pipeline_kept=summary["pairs_kept"],
              pipeline_wall_s=round(wall, 1),
              pipeline_pairs_per_s=round(summary["pairs_in"] / wall),
              pipeline_pairs_per_cpu_s=round(summary["pairs_in"] / used))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--entries", type=int, default=500_000)
  parser.add_argument("--captions", type=int, default=20_000)
  parser.add_argument("--threshold", type=int, default=metaclip.DEFAULT_THRESHOLD)
  parser.add_argument("--pipeline_pairs", type=int, default=0,
                      help="Also time the whole local curation on this many pairs.")
  parser.add_argument("--json", help="Also write the figures to this file.")
  args = parser.parse_args()
  entries, captions = synthetic(args.entries, args.captions + args.pipeline_pairs)
  captions, pool = captions[:args.captions], captions[args.captions:]
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  start = time.perf_counter()
  matcher = metaclip.EntryMatcher(entries)
  build_s = time.perf_counter() - start
  automaton_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
  matched = [matcher.match(c) for c in captions]
  counts = np.bincount([i for m in matched for i in m], minlength=len(entries))

  def match_and_balance(caption):
    metaclip.is_kept(caption, ((entries[i], int(counts[i])) for i in matcher.match(caption)),
                     args.threshold, 0)

  naive_captions = captions[:20]
  spaced_entries = [f" {e} " for e in entries]

  def naive(caption):
    text = metaclip.spaced(caption)
    return [i for i, e in enumerate(spaced_entries) if e in text]
  assert all(naive(c) == matcher.match(c) for c in naive_captions[:5])
  figures = dict(
      entries=len(entries), captions=len(captions), automaton_build_s=round(build_s, 2),
      automaton_mib=round(automaton_mib), mean_entries_matched=float(np.mean(
          [len(m) for m in matched])),
      match_pairs_per_s=round(pairs_per_second(matcher.match, captions)),
      match_and_balance_pairs_per_s=round(pairs_per_second(match_and_balance, captions)),
      naive_loop_pairs_per_s=round(pairs_per_second(naive, naive_captions, repeats=1), 2))
  figures["speedup_over_naive"] = round(figures["match_pairs_per_s"]
                                        / figures["naive_loop_pairs_per_s"])
  figures["matmul_peak_gflops_f32"] = round(measure.matmul_peak(jnp.float32) / 1e9)
  figures["cpu_count"] = os.cpu_count()
  if args.pipeline_pairs:
    figures.update(pipeline_pairs_per_second(entries, pool, args.threshold))
  print("| measure (one core) | value |\n|---|---|")
  for name, value in figures.items():
    print(f"| {name} | {value} |")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  main()
