"""The MetaCLIP curation pipeline (`python -m ig_captioner.data.curate`, Apache Beam's local
runner, in its own environment) end to end: its kept set and entry counts equal a plain-Python
MetaCLIP's on a Zipf pool of parquet and tar shards with corrupt records; the same set whatever
the parallelism and shard order; the embedded digits' captions curated, and training reading
exactly the kept pairs through the keep-list; a different curation refused in the same output;
the pipeline built for Dataflow, Flink and Spark from their usual options, offline."""

import glob
import io
import json
import os
import subprocess

import grain
import ml_collections
import numpy as np
from PIL import Image
import pyarrow.parquet as pq
import pytest

from ig_captioner.data import array_records
from ig_captioner.data import concept_counts
from ig_captioner.data import digits_captions
from ig_captioner.data import web_shards
from tests.curation_pools import entry_counts
from tests.curation_pools import index_jpeg
from tests.curation_pools import jpeg_index
from tests.curation_pools import keep_list
from tests.curation_pools import reference_curation
from tests.curation_pools import REPO
from tests.curation_pools import run_curation
from tests.curation_pools import write_parquet
from tests.curation_pools import write_tar
from tests.curation_pools import zipf_captions

VOCABULARY = ["photo", "dog", "red", "car", "tree", "beach", "sky", "blue", "house", "cat",
              "city", "night", "cup", "table", "river", "bird", "lamp", "road", "snow", "boat"]
# Entries: words, phrases, one with a capital (case is kept), one never matched; a repeat, a
# blank line and surrounding spaces, which the metadata reader drops.
METADATA = VOCABULARY[:16] + ["red car", "blue sky", "Photo", "dog,", "unmatched entry",
                              "photo", "", "  tree house  "]
THRESHOLD = 30


@pytest.fixture(scope="module")
def zipf_pool(tmp_path_factory):
  """(shard glob, metadata file, usable pairs [(shard, key, caption)]): 2 keyed parquet shards,
  a keyless one (row groups of 16), 2 tars, a file that is not a tar and a truncated parquet;
  unusable records: blank and missing captions, a missing or empty image, a caption that is not
  UTF-8."""
  directory = tmp_path_factory.mktemp("zipf_pool")
  captions = iter(zipf_captions(5 * 120, VOCABULARY, seed=0))
  usable = []
  for s in range(5):
    name = f"{s:05d}.{'tar' if s >= 3 else 'parquet'}"
    rows = [dict(key=f"{s:05d}{r:04d}", caption=next(captions), jpg=index_jpeg(s * 1000 + r))
            for r in range(120)]
    if s == 0:
      rows[3]["caption"], rows[5]["caption"], rows[7]["jpg"], rows[9]["jpg"] = "  ", None, None, b""
    if s == 3:
      rows[2]["jpg"], rows[4]["caption"] = None, b"a red \xff\xfe car"
    if s == 2:
      write_parquet(str(directory / name), rows, with_keys=False, row_group_size=16)
      for r, row in enumerate(rows):
        row["key"] = f"{name}#{r}"
    elif s < 3:
      write_parquet(str(directory / name), rows)
    else:
      write_tar(str(directory / name), rows)
    usable += [(name, row["key"], row["caption"]) for row in rows
               if isinstance(row["caption"], str) and row["caption"].strip() and row["jpg"]]
  (directory / "00005.tar").write_bytes(b"not a tar at all " * 64)
  write_parquet(str(directory / "00006.parquet"), rows)
  with open(directory / "00006.parquet", "r+b") as f:
    f.truncate(os.path.getsize(directory / "00006.parquet") // 2)
  metadata = directory / "metadata.txt"
  metadata.write_text("\n".join(METADATA) + "\n", encoding="utf-8")
  return str(directory / "0000*"), str(metadata), usable


@pytest.fixture(scope="module")
def zipf_curation(zipf_pool, curation_python, tmp_path_factory):
  shards, metadata, _ = zipf_pool
  output = str(tmp_path_factory.mktemp("zipf_curation") / "out")
  run_curation(curation_python, f"--shards={shards}", f"--metadata={metadata}",
               f"--output={output}", f"--threshold={THRESHOLD}", "--seed=7",
               "--output_format=parquet")
  return output


def test_kept_set_and_counts_equal_the_papers_algorithm_in_plain_python(zipf_pool,
                                                                        zipf_curation):
  _, metadata, usable = zipf_pool
  with open(metadata, encoding="utf-8") as f:
    expected_kept, expected_counts = reference_curation(usable, f.read().splitlines(),
                                                        THRESHOLD, seed=7)
  assert keep_list(os.path.join(zipf_curation, "keep_list.tsv")) == expected_kept
  assert entry_counts(os.path.join(zipf_curation, "entry_counts.tsv")) == expected_counts
  # The pool exercises both regimes: head entries sub-sampled, tail entries kept whole.
  assert max(expected_counts.values()) > 5 * THRESHOLD
  assert 0 < min(c for c in expected_counts.values() if c) < THRESHOLD
  assert expected_counts["Photo"] > 0 and expected_counts["unmatched entry"] == 0
  summary = json.load(open(os.path.join(zipf_curation, "summary.json"), encoding="utf-8"))
  assert summary["pairs_in"] == len(usable) and summary["pairs_kept"] == len(expected_kept)
  assert summary["skipped"] == {"empty_text": 3, "missing_image": 3, "unreadable_shards": 2}
  assert summary["head_entries"] == sum(c > THRESHOLD for c in expected_counts.values())
  assert summary["top_entries"][0]["entry"] == max(expected_counts, key=expected_counts.get)
  # Curated shards: each input shard's kept pairs, in its order, with their images.
  written = sorted(glob.glob(os.path.join(zipf_curation, "shards", "*.parquet")))
  assert [os.path.basename(p) for p in written] == [f"{s:05d}.parquet" for s in range(5)]
  for path in written:
    shard = int(os.path.basename(path)[:5])
    images = pq.read_table(path).column("jpg").to_pylist()
    assert [jpeg_index(_decoded(j)) for j in images] == sorted(
        _index(name, key) for name, key in expected_kept if name.startswith(f"{shard:05d}."))


def _index(shard_name: str, key: str) -> int:
  """The index its image spells, of the zipf pool's pair `key` of shard `shard_name`."""
  shard, _, row = key.partition("#")
  return int(shard_name[:5]) * 1000 + int(row) if row else int(key[:5]) * 1000 + int(key[5:])


def _decoded(jpeg: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_same_kept_set_whatever_the_parallelism_and_shard_order(zipf_pool, zipf_curation,
                                                                curation_python, tmp_path):
  shards, metadata, _ = zipf_pool
  reversed_list = ",".join(sorted(glob.glob(shards), reverse=True))
  common = [f"--metadata={metadata}", f"--threshold={THRESHOLD}", "--seed=7"]
  run_curation(curation_python, f"--shards={reversed_list}", *common,
               f"--output={tmp_path / 'parallel'}", "--direct_num_workers=3",
               "--direct_running_mode=multi_threading")
  first = keep_list(os.path.join(zipf_curation, "keep_list.tsv"))
  assert keep_list(str(tmp_path / "parallel" / "keep_list.tsv")) == first
  assert (entry_counts(str(tmp_path / "parallel" / "entry_counts.tsv"))
          == entry_counts(os.path.join(zipf_curation, "entry_counts.tsv")))
  # A different curation (another seed) into the same directory is refused.
  refused = run_curation(curation_python, f"--shards={shards}", *common[:2], "--seed=8",
                         f"--output={tmp_path / 'parallel'}", check=False)
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines()[-1] == (
      f"error: --output={tmp_path / 'parallel'} holds another curation (seed: 7 there, 8 here): "
      "choose another directory or delete it")


# ------------------------------------------------------- The embedded data's captions ---
def test_digits_captions_curated_and_training_reads_exactly_the_kept_pairs(
    curation_python, tmp_path):
  """The digits data's captions (its phrasings, its long-tailed class prior) in webdataset
  tars; metadata: the class names and some caption words. The curated set is the reference's,
  the ArrayRecord output holds exactly it, and the web-shard reader given the keep-list reads
  exactly it from the raw tars (passed-over pairs are not counted as corrupt)."""
  rng = np.random.default_rng(0)
  prior = digits_captions.class_probabilities(prior_exponent=1.5, seed=0)
  pairs = []
  for s in range(3):
    rows = []
    for r in range(200):
      name = digits_captions.CLASS_NAMES[rng.choice(10, p=prior)]
      template = digits_captions.CAPTION_TEMPLATES[rng.integers(len(
          digits_captions.CAPTION_TEMPLATES))]
      rows.append(dict(key=f"{s:05d}{r:04d}", caption=template.format(name),
                       jpg=index_jpeg(s * 1000 + r)))
    write_tar(str(tmp_path / f"{s:05d}.tar"), rows)
    pairs += [(f"{s:05d}.tar", row["key"], row["caption"]) for row in rows]
  metadata = list(digits_captions.CLASS_NAMES) + ["handwritten", "photo", "paper form"]
  (tmp_path / "metadata.txt").write_text("\n".join(metadata), encoding="utf-8")
  output = tmp_path / "curated"
  run_curation(curation_python, f"--shards={tmp_path}/{{00000..00002}}.tar",
               f"--metadata={tmp_path / 'metadata.txt'}", f"--output={output}",
               "--threshold=40", "--output_format=array_record")
  expected, counts = reference_curation(pairs, metadata, threshold=40, seed=0)
  assert keep_list(str(output / "keep_list.tsv")) == expected
  assert max(counts.values()) > 3 * 40 and 0 < min(c for c in counts.values() if c) < 40
  # The concept counts of the language-prior report: the curation's (the pipeline's matching)
  # equal the reference's and concept_counts' own MetaCLIP matching.
  names = list(digits_captions.CLASS_NAMES)
  from_curation, total = concept_counts.read_curation(str(output), names)
  assert total == len(pairs) and from_curation.tolist() == [counts[n] for n in names]
  in_process = concept_counts.count([c for _, _, c in pairs], names, matching="metaclip")
  assert in_process[0].tolist() == from_curation.tolist()
  expected_indices = sorted(int(key[:5]) * 1000 + int(key[5:]) for _, key in expected)
  captions = {int(key[:5]) * 1000 + int(key[5:]): c for _, key, c in pairs}

  source = grain.sources.ArrayRecordDataSource(sorted(glob.glob(str(output / "shards" / "*"))))
  stored = [array_records.decode_record(source[i]) for i in range(len(source))]
  assert sorted(jpeg_index(_decoded(image)) for image, _ in stored) == expected_indices
  assert all(captions[jpeg_index(_decoded(image))] == text for image, text in stored)

  data = ml_collections.ConfigDict(dict(
      name="web_shards", shards=f"{tmp_path}/*.tar", cycle_length=2, shuffle_seed=0,
      keep_list=str(output / "keep_list.tsv")))
  records, skipped = web_shards.load(data, num_epochs=1)
  read = [(jpeg_index(r["image"]), r["text"]) for r in records]
  assert sorted(i for i, _ in read) == expected_indices
  assert all(captions[i] == text for i, text in read)
  assert skipped.totals() == {"corrupt_records": 0, "unreadable_shards": 0}


# ------------------------------------------------------------------- Remote runners ---
_BUILD = """
import json, sys
from apache_beam.options import pipeline_options
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import portable_runner
from ig_captioner.data import curate
base, out = sys.argv[1:4], {}
runners = dict(
    dataflow=["--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
              "--temp_location=gs://my-bucket/tmp", "--dry_run=True"],
    flink=["--runner=FlinkRunner", "--flink_master=flink-host:8081"],
    spark=["--runner=SparkRunner", "--spark_master_url=spark://spark-host:7077"])
for name, flags in runners.items():
  pipeline, plan = curate.pipeline_for(base + flags)
  if name == "dataflow":
    pipeline.run()  # --dry_run: the job is built, with its staged files, and not submitted.
    proto = pipeline.runner.proto_pipeline
  else:
    proto = portable_runner.PortableRunner.get_proto_pipeline(pipeline, pipeline.options)
  setup_file = pipeline.options.view_as(pipeline_options.SetupOptions).setup_file
  out[name] = dict(
      runner=type(pipeline.runner).__name__,
      transforms=sorted({t.unique_name.split("/")[0]
                         for t in proto.components.transforms.values()}),
      staged=sorted(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
          d.role_payload).staged_name for e in proto.components.environments.values()
                    for d in e.dependencies),
      worker_setup=open(setup_file).read())
print(json.dumps(out))
"""


def test_the_pipeline_builds_for_dataflow_flink_and_spark_offline(zipf_pool, curation_python,
                                                                  tmp_path):
  """Each runner from its usual options alone: the graph, and the files staged for its
  workers (this package and the curation's requirements, not the trainer's pins)."""
  shards, metadata, _ = zipf_pool
  proc = subprocess.run(
      [curation_python, "-c", _BUILD, f"--shards={shards}", f"--metadata={metadata}",
       f"--output={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  built = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {b["runner"] for b in built.values()} == {"DataflowRunner", "FlinkRunner",
                                                     "SparkRunner"}
  for runner in built.values():
    assert {"Read and match", "Count entries", "Balance", "Write keep-list",
            "Write summary"} <= set(runner["transforms"])
    assert "workflow.tar.gz" in runner["staged"]
    assert "apache-beam[gcp]==2.77.0" in runner["worker_setup"]
    assert "pyarrow==26" not in runner["worker_setup"]
  assert not os.path.exists(tmp_path / "out")  # Built, not run.
