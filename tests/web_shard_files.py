"""img2dataset-style shards for the web-shard tests (unit and end to end): parquet, and
webdataset tars in img2dataset's exact layout."""

import io
import json
import os
import tarfile

import ml_collections
import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq

from ig_captioner.data import prepare
from ig_captioner.data import tar_samples
from tests.conftest import load_config_module

NUM_SHARDS, ROWS = 4, 6


def jpeg(gray: int) -> bytes:
  out = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), gray, np.uint8)).save(out, "JPEG", quality=95)
  return out.getvalue()


def write_shards(directory, corrupt: bool = False) -> dict[str, int]:
  """NUM_SHARDS shards of ROWS rows (columns as img2dataset writes them), row groups of 4;
  returns {caption: gray level of its image} of the usable rows. `corrupt`: shard 1 row 2 has
  a damaged JPEG and row 4 an empty caption, and shard 2 is cut in half (unreadable)."""
  os.makedirs(directory, exist_ok=True)
  usable = {}
  for s in range(NUM_SHARDS):
    captions = [f"photo {s} number {r}" for r in range(ROWS)]
    grays = [8 * (s * ROWS + r) + 20 for r in range(ROWS)]
    images = [jpeg(g) for g in grays]
    if corrupt and s == 1:
      images[2] = images[2][:len(images[2]) // 2]  # A truncated JPEG.
      captions[4] = "  "
    pq.write_table(pa.table({
        "key": [f"{s:05d}{r:04d}" for r in range(ROWS)],
        "url": [f"https://example.com/{s}/{r}.jpg" for r in range(ROWS)],
        "caption": captions, "jpg": images, "status": ["success"] * ROWS,
    }), os.path.join(directory, f"{s:05d}.parquet"), row_group_size=4)
    if corrupt and s == 2:
      path = os.path.join(directory, f"{s:05d}.parquet")
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
      continue
    usable.update((c, g) for c, g in zip(captions, grays) if c.strip())
  if corrupt:
    del usable["photo 1 number 2"]
  return usable


def write_tar_shards(directory, corrupt: bool = False) -> dict[str, int]:
  """NUM_SHARDS webdataset shards `{00000..00003}.tar` of ROWS samples as img2dataset's
  `--output_format webdataset` writes them: per sample the members `KEY.jpg`, `KEY.json`,
  `KEY.txt` (KEY: shard and sample numbers, 5 + 4 digits), beside each tar its metadata
  `.parquet` and `_stats.json`; returns {caption: gray level} of the usable samples.
  `corrupt`: shard 1 sample 2 has a damaged JPEG and sample 4 a blank caption; shard 2 is not a
  tar; shard 3 sample 1 has no image member, sample 3 a caption that is not UTF-8, and the tar
  is cut inside sample 5 (its samples before the cut are read)."""
  os.makedirs(directory, exist_ok=True)
  usable = {}
  for s in range(NUM_SHARDS):
    path = os.path.join(directory, f"{s:05d}.tar")
    captions = [f"photo {s} number {r}".encode() for r in range(ROWS)]
    grays = [8 * (s * ROWS + r) + 20 for r in range(ROWS)]
    images = [jpeg(g) for g in grays]
    skip = set()
    if corrupt and s == 1:
      images[2] = images[2][:len(images[2]) // 2]
      captions[4] = b"  "
      skip |= {2, 4}
    if corrupt and s == 3:
      images[1] = None
      captions[3] = b"photo \xff\xfe broken"
      skip |= {1, 3, 5}
    samples = []
    for r in range(ROWS):
      key = f"{s:05d}{r:04d}"
      meta = {"url": f"https://example.com/{s}/{r}.jpg", "key": key, "status": "success",
              "caption": captions[r].decode("utf-8", "replace"), "width": 8, "height": 8}
      samples.append({tar_samples.KEY: key, "json": json.dumps(meta).encode(),
                      "txt": captions[r], **({} if images[r] is None else {"jpg": images[r]})})
    tar_samples.write(path, samples)
    pq.write_table(pa.table({"key": [f"{s:05d}{r:04d}" for r in range(ROWS)]}),
                   os.path.join(directory, f"{s:05d}.parquet"))
    with open(os.path.join(directory, f"{s:05d}_stats.json"), "w", encoding="utf-8") as f:
      json.dump({"count": ROWS, "successes": ROWS}, f)
    if corrupt and s == 2:
      with open(path, "wb") as f:
        f.write(b"not a tar at all " * 64)
      continue
    if corrupt and s == 3:
      with tarfile.open(path) as tar:  # Cut inside the last sample's first member.
        cut = tar.getmember(f"{s:05d}{ROWS - 1:04d}.jpg").offset_data + 100
      with open(path, "r+b") as f:
        f.truncate(cut)
    usable.update((c.decode(), g) for r, (c, g) in enumerate(zip(captions, grays))
                  if r not in skip)
  return usable


def laion_web_config(shards: str, tokenizer_path: str) -> ml_collections.ConfigDict:
  """The paper config's data (web shards) on the test shards `shards` (a glob), its tokenizer
  prepared at `tokenizer_path`; the runlocal model, no evaluators, batch 8."""
  config = load_config_module("ig_b16_laion").get_config("runlocal")
  config.data = load_config_module("ig_b16_laion").get_config().data
  config.data.update(dict(shards=shards, cycle_length=2, shuffle_window=8, num_workers=0,
                          tokenizer_vocab_size=60, tokenizer=tokenizer_path))
  config.evals = ml_collections.ConfigDict()
  config.batch_size = 8
  prepare.prepare(config.data)
  return config
