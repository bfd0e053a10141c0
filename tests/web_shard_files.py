"""img2dataset-style parquet shards for the web-shard tests (unit and end to end)."""

import io
import os

import ml_collections
import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq

from ig_captioner.data import prepare
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
