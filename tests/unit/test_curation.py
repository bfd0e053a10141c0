"""Keep-lists (`keep_lists.py`) read by the web-shard reader: only the listed pairs of parquet
(keyed or not) and tar shards, passed-over pairs not counted as corrupt, unlisted shards never
opened, an exact resume; malformed keep-lists refused. And the curation command's bad inputs,
in its own environment: each a one-line error, nothing written."""

import json
import os
import subprocess

import ml_collections
import pytest

from ig_captioner import errors
from ig_captioner.data import keep_lists
from ig_captioner.data import skip_counts
from ig_captioner.data import web_shards
from tests.curation_pools import index_jpeg
from tests.curation_pools import jpeg_index
from tests.curation_pools import REPO
from tests.curation_pools import write_parquet
from tests.web_shard_files import write_shards
from tests.web_shard_files import write_tar_shards

KEPT_ROWS = (0, 3, 4)  # Across a row-group boundary (the test shards' groups hold 4 rows).


def _data(shards: str, keep_list: str | None, **overrides) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict(dict(name="web_shards", shards=shards, cycle_length=2,
                                        shuffle_window=4, shuffle_seed=0, keep_list=keep_list))
  data.update(overrides)
  return data


def _write_keep_list(path, lines: list[str]) -> str:
  path.write_text("# a keep-list\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
  """{kind: (shard glob, keep-list, expected texts)}: keyed parquet, a keyless parquet (keys
  SHARD#ROW) and corrupt tars whose unreadable shard 2 the keep-list leaves out."""
  directory = tmp_path_factory.mktemp("keep_list_pools")
  write_shards(directory / "parquet")
  write_tar_shards(directory / "tar", corrupt=True)
  os.makedirs(directory / "keyless")
  rows = [dict(key="", caption=f"keyless {r}", jpg=index_jpeg(r)) for r in range(10)]
  write_parquet(str(directory / "keyless" / "00000.parquet"), rows, with_keys=False,
                row_group_size=4)
  out = {}
  lines = [keep_lists.line(f"{s:05d}.parquet", f"{s:05d}{r:04d}") for s in range(4)
           for r in KEPT_ROWS]
  out["parquet"] = (str(directory / "parquet" / "*.parquet"),
                    _write_keep_list(directory / "parquet.tsv", lines),
                    [f"photo {s} number {r}" for s in range(4) for r in KEPT_ROWS])
  lines = [keep_lists.line("00000.parquet", keep_lists.row_key("00000.parquet", r))
           for r in (1, 3, 4, 9)]
  out["keyless"] = (str(directory / "keyless" / "*.parquet"),
                    _write_keep_list(directory / "keyless.tsv", lines),
                    [f"keyless {r}" for r in (1, 3, 4, 9)])
  # Shard 1 sample 2's image does not decode: listed, it is skipped and counted as corrupt.
  lines = [keep_lists.line(f"{s:05d}.tar", f"{s:05d}{r:04d}") for s in (0, 1, 3) for r in (0, 2)]
  out["tar"] = (str(directory / "tar" / "*.tar"),
                _write_keep_list(directory / "tar.tsv", lines),
                [f"photo {s} number {r}" for s in (0, 1, 3) for r in (0, 2) if (s, r) != (1, 2)])
  return out


@pytest.mark.parametrize("kind", ["parquet", "keyless", "tar"])
def test_the_reader_reads_exactly_the_listed_pairs(pools, kind, caplog):
  shards, keep_list, expected = pools[kind]
  records, counts = web_shards.load(_data(shards, keep_list), num_epochs=1)
  texts = [r["text"] for r in records]
  assert sorted(texts) == sorted(expected)
  if kind == "keyless":  # Each text with its own image: rows are numbered as the curation does.
    records = web_shards.load(_data(shards, keep_list), num_epochs=1)[0]
    assert all(jpeg_index(r["image"]) == int(r["text"].split()[1]) for r in records)
  # Passed-over pairs are not corrupt. Of the tars, the unlisted shard 2 (not a tar) is never
  # opened; shard 3 is read to where it is cut, as without a keep-list.
  assert counts.totals() == ({"corrupt_records": 1, "unreadable_shards": 1,
                              web_shards.BAD_IMAGE: 1, skip_counts.UNREADABLE_SHARD: 1}
                             if kind == "tar" else {"corrupt_records": 0, "unreadable_shards": 0})
  assert "00002.tar" not in caplog.text
  unfiltered = [r["text"] for r in web_shards.load(_data(shards, None), num_epochs=1)[0]]
  assert set(expected) < set(unfiltered)
  # The captions the tokenizer and the concept counts read: the listed pairs' (images are not
  # decoded there, so the tars' listed pair with a corrupt image is among them).
  listed = expected + (["photo 1 number 2"] if kind == "tar" else [])
  assert sorted(web_shards.sample_texts(_data(shards, keep_list), 1000)) == sorted(listed)
  assert web_shards.sample_texts(_data(shards, keep_list), 2) == web_shards.sample_texts(
      _data(shards, keep_list), 1000)[:2]


@pytest.mark.parametrize("kind", ["parquet", "tar"])
def test_a_restored_iterator_continues_exactly_with_a_keep_list(pools, kind):
  shards, keep_list, _ = pools[kind]
  dataset = web_shards.load(_data(shards, keep_list))[0]
  straight = iter(dataset)
  expected = [next(straight)["text"] for _ in range(40)]  # Several epochs.
  for k in (1, 5, 13):
    first = iter(dataset)
    for _ in range(k):
      next(first)
    state = json.loads(json.dumps(first.get_state()))  # As a checkpoint stores it.
    resumed = iter(web_shards.load(_data(shards, keep_list))[0])
    resumed.set_state(state)
    assert [next(resumed)["text"] for _ in range(40 - k)] == expected[k:], k


def test_malformed_or_foreign_keep_lists_are_clear_errors(pools, tmp_path):
  shards = pools["parquet"][0]
  cases = {
      "no tab": (_write_keep_list(tmp_path / "a.tsv", ["00000.parquet 000000000"]),
                 "line 2 of the keep-list .* is not 'SHARD<TAB>KEY'"),
      "another pool": (_write_keep_list(tmp_path / "b.tsv", ["99999.tar\t1"]),
                       "names none of the shards of config.data.shards .*'99999.tar'"),
      "missing": (str(tmp_path / "none.tsv"), "config.data.keep_list=.* does not exist"),
  }
  (tmp_path / "c.tsv").write_bytes(b"00000.parquet\t\xff\xfe\n")
  cases["not UTF-8"] = (str(tmp_path / "c.tsv"), "is not UTF-8 text")
  for name, (path, message) in cases.items():
    with pytest.raises(errors.ConfigError, match=message):
      web_shards.load(_data(shards, path))
    del name


# ------------------------------------------------------------------------- Bad inputs ---
_DRIVER = """
import contextlib, io, json, sys
from ig_captioner.data import curate
results = []
for argv in json.loads(sys.argv[1]):
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    try:
      curate.main(argv)
      code = 0
    except SystemExit as e:
      code = e.code
  results.append([code, stderr.getvalue()])
print(json.dumps(results))
"""


def test_bad_inputs_are_one_line_errors_that_write_nothing(curation_python, tmp_path):
  pool = tmp_path / "pool"
  write_shards(pool)
  (tmp_path / "other").mkdir()
  write_shards(tmp_path / "other")
  (tmp_path / "garbage").mkdir()
  (tmp_path / "garbage" / "00000.tar").write_bytes(b"not a tar " * 100)
  (tmp_path / "garbage" / "00001.parquet").write_bytes(b"PAR1 nor a parquet file")
  (tmp_path / "gz").mkdir()
  (tmp_path / "gz" / "00000.tar.gz").write_bytes(b"")
  files = {"empty.txt": b"\n  \n", "latin1.txt": "photo\ncaf\u00e9\n".encode("latin-1"),
           "dict.json": b'{"photo": 1}', "good.txt": b"photo\nnumber\n"}
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "notes.txt").write_text("mine")
  shards = f"--shards={pool}/*.parquet"
  good = f"--metadata={tmp_path / 'good.txt'}"
  new = f"--output={tmp_path / 'new'}"
  cases = [
      ([shards, f"--metadata={tmp_path / 'empty.txt'}", new], "holds no entry"),
      ([shards, f"--metadata={tmp_path / 'latin1.txt'}", new], "is not UTF-8 text (line 2"),
      ([shards, f"--metadata={tmp_path / 'dict.json'}", new], "is not a JSON list of strings"),
      ([shards, good, f"--output={tmp_path / 'full'}"], "is not empty and holds no curation"),
      ([shards, good, f"--output={tmp_path}"], "holds input shards"),
      ([shards, good, new, "--text_column=alt"], "has no column ['alt']"),
      ([f"--shards={tmp_path}/missing/*.tar", good, new], "no file matches"),
      ([shards, good, new, "--threshold=0"], "--threshold=0 must be >= 1"),
      ([shards, good, new, "--treshold=5"], "unknown flag --treshold: did you mean --threshold"),
      ([f"--shards={pool}/*.parquet,{tmp_path}/other/*.parquet", good, new],
       "several shards of --shards are named '00000.parquet'"),
      ([f"--shards={tmp_path}/gz/*.tar.gz", good, new], "is a compressed tar"),
      ([shards, new], "--metadata is required"),
      # Shards that hold no usable pair (neither is a tar or a parquet file): counted, then one
      # error once every shard was read.
      ([f"--shards={tmp_path}/garbage/*", good, f"--output={tmp_path / 'g'}"],
       f"no shard of --shards={tmp_path}/garbage/* holds a usable pair (skipped: "
       "{'unreadable_shards': 2})"),
  ]
  proc = subprocess.run([curation_python, "-c", _DRIVER, json.dumps([c for c, _ in cases])],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for (argv, message), (code, stderr) in zip(cases, json.loads(proc.stdout.splitlines()[-1])):
    lines = [l for l in stderr.strip().splitlines() if not l.startswith("WARNING:")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (argv, stderr)
    assert message in lines[0], (message, lines[0])
  assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "full") == ["notes.txt"]
  assert sorted(os.listdir(pool)) == [f"{s:05d}.parquet" for s in range(4)]

