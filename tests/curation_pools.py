"""What the curation tests share: raw pools in img2dataset's layouts (parquet shards, webdataset
tars) whose images name their pair, a plain-Python MetaCLIP written from the paper (no Beam, no
Aho-Corasick: loops), and the pipeline run in its own environment (tests/conftest.py's
`curation_python`)."""

import fractions
import hashlib
import io
import json
import os
import subprocess

import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq

from ig_captioner.data import tar_samples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BITS, _BLOCK = 16, 4  # An image is a 4 x 4 grid of black or white 4-pixel blocks: 16 bits.


# ----------------------------------------------------------------------------- Images ---
def index_jpeg(index: int) -> bytes:
  """A 16 x 16 JPEG whose blocks spell `index` in binary (it survives JPEG's loss)."""
  bits = [(index >> b) & 1 for b in range(_BITS)]
  grid = np.array(bits, np.uint8).reshape(4, 4) * 255
  image = np.kron(grid, np.ones((_BLOCK, _BLOCK), np.uint8))
  out = io.BytesIO()
  Image.fromarray(np.stack([image] * 3, -1)).save(out, "JPEG", quality=95)
  return out.getvalue()


def jpeg_index(image_HxWx3: np.ndarray) -> int:
  """The index `index_jpeg` spelled in a decoded image."""
  blocks = image_HxWx3[..., 0].reshape(4, _BLOCK, 4, _BLOCK).mean(axis=(1, 3)) > 128
  return sum(int(bit) << b for b, bit in enumerate(blocks.reshape(-1)))


# ------------------------------------------------------------------------------ Pools ---
def write_parquet(path: str, rows: list[dict], with_keys: bool = True,
                  row_group_size: int = 64) -> None:
  """rows ({'key', 'caption', 'jpg'}) as an img2dataset parquet shard (optionally keyless)."""
  columns = {"url": [f"https://example.com/{r['key']}.jpg" for r in rows],
             "caption": pa.array([r["caption"] for r in rows], pa.string()),
             "jpg": pa.array([r["jpg"] for r in rows], pa.binary()),
             "status": ["success" if r["jpg"] else "failed_to_download" for r in rows]}
  if with_keys:
    columns = {"key": [r["key"] for r in rows], **columns}
  pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def write_tar(path: str, rows: list[dict]) -> None:
  """rows ({'key', 'caption': str or bytes, 'jpg': bytes or None}) as a webdataset tar."""
  samples = []
  for r in rows:
    caption = r["caption"].encode() if isinstance(r["caption"], str) else r["caption"]
    sample = {tar_samples.KEY: r["key"], "txt": caption,
              "json": json.dumps({"key": r["key"], "status": "success"}).encode()}
    if r["jpg"] is not None:
      sample["jpg"] = r["jpg"]
    samples.append(sample)
  tar_samples.write(path, samples)


def zipf_captions(count: int, vocabulary: list[str], seed: int) -> list[str]:
  """Captions of 3-7 words drawn from `vocabulary` by Zipf frequencies (exponent 1.3), some
  with a capital, a comma or a full stop."""
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.3
  captions = []
  for _ in range(count):
    words = [vocabulary[i] for i in rng.choice(len(vocabulary), rng.integers(3, 8), p=p / p.sum())]
    if rng.random() < 0.2:
      words[0] = words[0].capitalize()
    if rng.random() < 0.3:
      words[1] += ","
    captions.append(" ".join(words) + ("." if rng.random() < 0.3 else ""))
  return captions


# -------------------------------------------------------------------------- Reference ---
def reference_curation(pairs: list[tuple[str, str, str]], metadata_lines: list[str],
                       threshold: int, seed: int) -> tuple[set, dict]:
  """MetaCLIP's Algorithm 1 (arXiv:2309.16671) in plain loops: ((shard, key) of the kept pairs,
  {entry: count}) of `pairs` (shard, key, caption). The draw of entry e for key k is the one
  the curation documents (`ig_captioner/data/metaclip.py`): blake2b-64 of 'seed\\nk\\ne'."""
  entries = []
  for line in metadata_lines:
    if line.strip() and line.strip() not in entries:
      entries.append(line.strip())

  def spaced(text):
    text = f" {text} "
    for punctuation in [",", ".", ";", ":", "?", "!", "`"]:
      text = text.replace(punctuation, f" {punctuation} ")
    for white in ["\t", "\n", "\r"]:
      text = text.replace(white, " ")
    return text

  matched = {}
  for shard, key, caption in pairs:
    found = [e for e in entries if f" {e} " in spaced(caption)]
    if found:
      matched[(shard, key)] = found
  count = {e: 0 for e in entries}
  for found in matched.values():
    for e in found:
      count[e] += 1
  kept = set()
  for (shard, key), found in matched.items():
    for e in found:
      digest = hashlib.blake2b(f"{seed}\n{key}\n{e}".encode(), digest_size=8).digest()
      u = fractions.Fraction(int.from_bytes(digest, "big"), 2 ** 64)
      if u < fractions.Fraction(threshold, max(count[e], threshold)):
        kept.add((shard, key))
        break
  return kept, count


# --------------------------------------------------------------------------- Pipeline ---
def run_curation(python: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
  """`python -m ig_captioner.data.curate FLAGS` in the curation environment."""
  proc = subprocess.run([python, "-m", "ig_captioner.data.curate", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def keep_list(path: str) -> set[tuple[str, str]]:
  """(shard, key) of every line of a keep-list file."""
  with open(path, encoding="utf-8") as f:
    return {tuple(line.rstrip("\n").split("\t")) for line in f if not line.startswith("#")}


def entry_counts(path: str) -> dict[str, int]:
  with open(path, encoding="utf-8") as f:
    return {entry: int(count) for count, entry in (l.rstrip("\n").split("\t", 1) for l in f)}
