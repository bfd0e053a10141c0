"""MetaCLIP curation of a raw pool of img2dataset shards (`metaclip.py`), as an Apache Beam
pipeline: the same command on this machine (Beam's DirectRunner, the default) or on Dataflow,
Flink or Spark (Beam's usual options). It runs in its own environment (launch/curation_venv.sh).

    PY=$(bash launch/curation_venv.sh)
    $PY -m ig_captioner.data.curate --shards='pool/{00000..00099}.tar' \\
        --metadata=metadata.json --output=DIR [--threshold=20000] [--seed=0] \\
        [--output_format=parquet|array_record] [--image_column=jpg --text_column=txt] \\
        [--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp ...]

`--shards` takes what `config.data.shards` takes (paths, globs, `{a..b}` ranges; local or
`gs://`); `--metadata` one entry a line, or MetaCLIP's `metadata.json`. DIR gets:

    curation.json     what this curation is (a later run into DIR must be the same one)
    summary.json      pairs read, matched and kept; skips per reason; head and tail entries
    entry_counts.tsv  COUNT<TAB>ENTRY for every entry, in the metadata's order
    keep_list.tsv     the kept pairs (`keep_lists.py`), for `config.data.keep_list`
    shards/           with --output_format: each input shard's kept pairs (`pool_shards.py`)

Stages: each shard's usable pairs matched against the entries (`pool_shards.read_pairs`,
`metaclip.EntryMatcher`; the entries reach every stage as one side input); per-entry counts, one
global combine; balanced sampling with the counts as a side input; the outputs. A remote
runner's workers get this package and launch/curation_requirements.txt (staged as
`--setup_file`) unless the options say otherwise.
"""

import argparse
import collections
import difflib
import hashlib
import json
import os
import sys
import zlib

import apache_beam as beam
from apache_beam.options import pipeline_options
import ml_collections
import numpy as np

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.data import concept_counts
from ig_captioner.data import curation_staging
from ig_captioner.data import keep_lists
from ig_captioner.data import metaclip
from ig_captioner.data import pool_shards
from ig_captioner.data import records
from ig_captioner.data import shard_files

CURATION, KEEP_LIST, SHARDS_DIR = "curation.json", "keep_list.tsv", "shards"
ENTRY_COUNTS, SUMMARY = concept_counts.ENTRY_COUNTS, concept_counts.SUMMARY
FORMAT = "ig_captioner curation 1"
_TOP_ENTRIES = 20  # Head and tail entries the summary names.


class CurationOptions(pipeline_options.PipelineOptions):
  """The curation's own flags; every other flag is Beam's."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--shards", help="The raw pool: parquet or tar shards; paths, globs or "
                        "{a..b} ranges, comma-separated; local or gs://.")
    parser.add_argument("--metadata", help="Metadata entries: one a line, or a .json list.")
    parser.add_argument("--output", help="Directory of the curation's outputs.")
    parser.add_argument("--threshold", type=int, default=metaclip.DEFAULT_THRESHOLD,
                        help="MetaCLIP's t: entries matched more often are sub-sampled to it.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampling's draws.")
    parser.add_argument("--output_format", choices=("none",) + pool_shards.OUTPUT_FORMATS,
                        default="none", help="Also write the kept pairs as shards.")
    parser.add_argument("--image_column", default=None,
                        help="Image column (tar: member extension); default img2dataset's jpg.")
    parser.add_argument("--text_column", default=None, help="Caption column (tar: member "
                        "extension); default img2dataset's caption (tar: txt).")


# ---------------------------------------------------------------------------- The plan ---
class Plan:
  """What one curation reads and writes, checked before any pipeline is built."""

  def __init__(self, options: CurationOptions):
    for flag in ("shards", "metadata", "output"):
      if not getattr(options, flag):
        raise errors.ConfigError(f"--{flag} is required (python -m ig_captioner.data.curate "
                                 "--shards=... --metadata=... --output=DIR)")
    if options.threshold < 1:
      raise errors.ConfigError(f"--threshold={options.threshold} must be >= 1")
    self.shards = shard_files.shard_paths(ml_collections.ConfigDict(dict(shards=options.shards)))
    names = collections.Counter(keep_lists.shard_name(s) for s in self.shards)
    repeated = [n for n, k in names.items() if k > 1]
    if repeated:
      raise errors.ConfigError(f"several shards of --shards are named {repeated[0]!r}: a "
                               "keep-list names shards by file name, so they must differ")
    compressed = [s for s in self.shards if shard_files.is_tar(s) and not s.endswith(".tar")]
    if compressed:
      raise errors.ConfigError(f"shard {compressed[0]} is a compressed tar: the shard readers "
                               "take uncompressed .tar shards (img2dataset's default)")
    self.entries = metaclip.read_entries(options.metadata)
    self.output = paths.resolve(options.output)
    self.threshold, self.seed = options.threshold, options.seed
    self.image_column, self.text_column = options.image_column, options.text_column
    self.output_format = None if options.output_format == "none" else options.output_format
    self._check_columns()
    self.manifest = dict(
        format=FORMAT, shards=options.shards, shard_count=len(self.shards),
        shard_names_sha256=_sha256("\n".join(sorted(names))),
        metadata=options.metadata, metadata_sha256=_sha256("\n".join(self.entries)),
        entries=len(self.entries), threshold=self.threshold, seed=self.seed,
        image_column=self.image_column, text_column=self.text_column,
        output_format=self.output_format)

  def __getstate__(self):  # Pickled into the stages: small (the entries are a side input).
    return dict(self.__dict__, entries=None, shards=None)

  def packed_entries(self) -> bytes:
    """The entries as one compressed blob (500k strings pickle, and are sized, slowly)."""
    return zlib.compress(json.dumps(self.entries).encode("utf-8"), 1)

  def _check_columns(self) -> None:
    """DataError now, not from a worker, if the first readable parquet shard lacks a column."""
    for path in self.shards:
      if not shard_files.is_tar(path):
        try:
          names = shard_files.parquet_file(path).schema_arrow.names
        except Exception:  # pylint: disable=broad-except  # Counted as unreadable when read.
          continue
        wanted = pool_shards.columns(path, self.image_column, self.text_column)
        missing = [c for c in wanted if c not in names]
        if missing:
          raise records.DataError(f"shard {path} has no column {missing}; its columns are "
                                  f"{names}: set --image_column / --text_column")
        return

  def check_output(self) -> None:
    """ConfigError unless the output directory is new, empty, or holds this same curation; a
    curation never writes where its input shards are."""
    inside = [s for s in self.shards if paths.resolve(s).startswith(self.output.rstrip("/") + "/")]
    if inside:
      raise errors.ConfigError(f"--output={self.output} holds input shards ({inside[0]}): a "
                               "curation never writes over its input; choose another directory")
    output = paths.path(self.output)
    written = {paths.join(self.output, n) for n in (CURATION, SUMMARY, ENTRY_COUNTS, KEEP_LIST)}
    if paths.resolve(self.manifest["metadata"]) in written:
      raise errors.ConfigError(f"--metadata={self.manifest['metadata']} is a file the curation "
                               "writes: a curation never writes over its input")
    if not output.exists():
      return
    if not output.is_dir():
      raise errors.ConfigError(f"--output={self.output} is a file: it names a directory")
    if (output / CURATION).exists():
      held = json.loads((output / CURATION).read_text())
      changed = [f"{k}: {held.get(k)!r} there, {v!r} here" for k, v in self.manifest.items()
                 if k not in ("shards", "metadata") and held.get(k) != v]
      if changed:
        raise errors.ConfigError(f"--output={self.output} holds another curation ("
                                 f"{'; '.join(changed)}): choose another directory or delete it")
    elif any(output.iterdir()):
      raise errors.ConfigError(f"--output={self.output} is not empty and holds no curation: "
                               "choose a new or empty directory")


def _sha256(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ Stages ---
STATS, MATCHED = "stats", "matched"


def _unpacked(packed_entries: bytes) -> list[str]:
  return json.loads(zlib.decompress(packed_entries))


class _MatchShard(beam.DoFn):
  """shard path -> (path, key, matched entry indices) of each pair matching an entry; its
  counts ({pairs, matched, skip reason: n}) to the STATS output."""

  def __init__(self, plan: Plan):
    super().__init__()
    self._plan = plan
    self._matcher = None  # Built at the first shard (from the side input), then reused.

  def process(self, path: str, packed_entries: bytes):
    if self._matcher is None:
      self._matcher = metaclip.EntryMatcher(_unpacked(packed_entries))
    pairs, counts = pool_shards.read_pairs(path, self._plan.image_column, self._plan.text_column)
    for key, caption in pairs:
      matched = self._matcher.match(caption)
      if matched:
        counts[MATCHED] += 1
        yield path, key, matched
    yield beam.pvalue.TaggedOutput(STATS, dict(counts))


class _EntryCounts(beam.CombineFn):
  """(path, key, entry indices) -> the number of pairs matching each entry (an array)."""

  def __init__(self, num_entries: int):
    super().__init__()
    self._num_entries = num_entries

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, counts, pair):
    counts.update(pair[2])
    return counts

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for counts in accumulators:
      merged.update(counts)
    return merged

  def extract_output(self, counts):
    out = np.zeros(self._num_entries, np.int64)  # One object, cheap for Beam's caches to size.
    out[list(counts)] = list(counts.values())
    return out


class _SumCounts(beam.CombineFn):
  """{name: n} dicts -> their sum."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, total, counts):
    total.update(counts)
    return total

  def merge_accumulators(self, accumulators):
    return sum(accumulators, collections.Counter())

  def extract_output(self, total):
    return dict(total)


class _Balance(beam.DoFn):
  """(path, key, entry indices) -> (path, key) if balanced sampling keeps the pair."""

  def __init__(self, plan: Plan):
    super().__init__()
    self._plan = plan
    self._entries = None  # Unpacked from the side input at the first pair.

  def process(self, pair, counts, packed_entries: bytes):
    if self._entries is None:
      self._entries = _unpacked(packed_entries)
    path, key, matched = pair
    entries = self._entries
    if metaclip.is_kept(key, ((entries[i], int(counts[i])) for i in matched),
                        self._plan.threshold, self._plan.seed):
      yield path, key


class _WriteShard(beam.DoFn):
  """(shard path, kept keys) -> the shard's kept pairs written to DIR/shards/."""

  def __init__(self, plan: Plan):
    super().__init__()
    self._output = paths.join(plan.output, SHARDS_DIR)
    self._format, self._columns = plan.output_format, (plan.image_column, plan.text_column)

  def process(self, path_and_keys):
    path, keys = path_and_keys
    paths.path(self._output).mkdir(parents=True, exist_ok=True)
    yield pool_shards.write_kept(path, set(keys), self._output, self._format, *self._columns)


def _keep_list_line(path_and_key) -> str:
  return keep_lists.line(keep_lists.shard_name(path_and_key[0]), path_and_key[1])


def summarize(manifest: dict, entries: list[str], counts: list[int], stats: dict,
              kept: int) -> dict:
  """summary.json's content."""
  threshold = manifest["threshold"]
  total = sum(counts)
  by_count = sorted((-c, e) for e, c in zip(entries, counts) if c)

  def entry(count, text):
    return dict(entry=text, count=count,
                keep_probability=metaclip.keep_probability(count, threshold))
  return dict(
      threshold=threshold, seed=manifest["seed"], shards=manifest["shard_count"],
      pairs_in=stats.get(pool_shards.PAIRS, 0), pairs_matched=stats.get(MATCHED, 0),
      pairs_kept=kept,
      skipped={k: v for k, v in sorted(stats.items()) if k not in (pool_shards.PAIRS, MATCHED)},
      entries=len(entries), entries_matched=len(by_count),
      head_entries=sum(1 for c in counts if c > threshold),
      # MetaCLIP's t_to_p: the share of all matches that entries below t make.
      tail_share_of_matches=sum(c for c in counts if c < threshold) / total if total else 0.0,
      top_entries=[entry(-c, e) for c, e in by_count[:_TOP_ENTRIES]],
      rarest_matched_entries=[entry(-c, e) for c, e in by_count[::-1][:_TOP_ENTRIES]])


def _write_summary(unused, plan: Plan, packed_entries: bytes, counts, stats, kept) -> dict:
  entries, counts = _unpacked(packed_entries), counts.tolist()
  lines = "".join(f"{c}\t{e}\n" for e, c in zip(entries, counts))
  paths.write_atomic(paths.join(plan.output, ENTRY_COUNTS), lines)
  summary = summarize(plan.manifest, entries, counts, stats, kept)
  paths.write_atomic(paths.join(plan.output, SUMMARY), json.dumps(summary, indent=1) + "\n")
  return summary


def build(pipeline: beam.Pipeline, plan: Plan) -> None:
  """Adds the curation's stages to `pipeline`."""
  entries = beam.pvalue.AsSingleton(
      pipeline | "Entries" >> beam.Create([plan.packed_entries()]))
  shards = (pipeline | "Shards" >> beam.Create(plan.shards)
            | "Spread shards" >> beam.Reshuffle())
  read = shards | "Read and match" >> beam.ParDo(_MatchShard(plan), entries).with_outputs(
      STATS, main="matched")
  matched = read.matched
  counts = matched | "Count entries" >> beam.CombineGlobally(_EntryCounts(len(plan.entries)))
  kept = matched | "Balance" >> beam.ParDo(
      _Balance(plan), beam.pvalue.AsSingleton(counts), entries)
  header = (f"{keep_lists.COMMENT} keep-list of the curation in {plan.output} (threshold "
            f"{plan.threshold}, seed {plan.seed}): SHARD<TAB>KEY")
  _ = (kept | "Keep-list lines" >> beam.Map(_keep_list_line)
       | "Write keep-list" >> beam.io.WriteToText(
           paths.join(plan.output, KEEP_LIST), shard_name_template="", header=header))
  stats = read[STATS] | "Sum stats" >> beam.CombineGlobally(_SumCounts())
  total_kept = kept | "Count kept" >> beam.combiners.Count.Globally()
  _ = (pipeline | "Once" >> beam.Create([None]) | "Write summary" >> beam.Map(
      _write_summary, plan, entries, *(beam.pvalue.AsSingleton(p) for p in (
          counts, stats, total_kept))))
  if plan.output_format:
    _ = (kept | "By shard" >> beam.GroupByKey()
         | "Write shards" >> beam.ParDo(_WriteShard(plan)))


# ------------------------------------------------------------------------------- Entry ---
def pipeline_for(argv: list[str]) -> tuple[beam.Pipeline, Plan]:
  """The curation pipeline of command-line `argv` (its flags and Beam's), built, not run."""
  options = pipeline_options.PipelineOptions(argv)
  _refuse_misspelt_flags(argv)
  plan = Plan(options.view_as(CurationOptions))
  plan.check_output()
  curation_staging.stage_package(options)
  pipeline = beam.Pipeline(options=options)
  build(pipeline, plan)
  return pipeline, plan


def _refuse_misspelt_flags(argv: list[str]) -> None:
  """ConfigError for a flag close to one of the curation's (Beam only warns of unknown flags)."""
  parser = argparse.ArgumentParser()
  CurationOptions._add_argparse_args(parser)  # pylint: disable=protected-access  # Beam's hook.
  ours = [f"--{name}" for name in vars(parser.parse_args([]))]
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--") and name not in ours:
      close = difflib.get_close_matches(name, ours, n=1, cutoff=0.85)
      if close:
        raise errors.ConfigError(f"unknown flag {name}: did you mean {close[0]}?")


def curate(argv: list[str]) -> tuple[Plan, dict]:
  """Runs the curation of `argv` to its end; returns its plan and summary."""
  pipeline, plan = pipeline_for(argv)
  paths.path(plan.output).mkdir(parents=True, exist_ok=True)
  paths.write_atomic(paths.join(plan.output, CURATION),
                     json.dumps(plan.manifest, indent=1) + "\n")
  pipeline.run().wait_until_finish()
  summary = json.loads(paths.path(paths.join(plan.output, SUMMARY)).read_text())
  if not summary["pairs_in"]:
    raise records.DataError(f"no shard of --shards={plan.manifest['shards']} holds a usable "
                            f"pair (skipped: {summary['skipped']}); check the shards and "
                            "--image_column / --text_column")
  return plan, summary


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  try:
    plan, summary = curate(argv)
  except errors.UserError as e:
    if os.environ.get("IG_CAPTIONER_VERBOSE"):
      raise
    sys.stderr.write(f"\nerror: {e}\n")
    sys.exit(1)
  print(f"Kept {summary['pairs_kept']} of {summary['pairs_in']} pairs "
        f"({summary['pairs_matched']} matched an entry; skipped: {summary['skipped']}): "
        f"{plan.output}/{KEEP_LIST}")


if __name__ == "__main__":
  main()
