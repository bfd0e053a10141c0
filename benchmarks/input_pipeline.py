"""Input-pipeline throughput per host process, for planning how many host cores feed a chip.

    python -m benchmarks.input_pipeline [--images 512] [--batch 64]

The same web-like pool (JPEGs of 384 x 288 pixels, captions of about a dozen words) is written
in three layouts and read by this codebase's readers, each doing the paper config's per-example
work (`configs/ig_b16_laion.py`: decode, resize to 224 px, tokenise to 64 tokens, normalise):
- parquet shards (img2dataset's `--output_format parquet`), through the trainer's own pipeline
  (`train_mixture.train_loader`: grain, `web_shards`, batching);
- webdataset tars (`--output_format webdataset`), through the same pipeline;
- ArrayRecord files (`shards_to_array_record`; the format TFDS's array_record data sources read),
  random access through grain's `ArrayRecordDataSource` and the same per-example functions.
Each is timed after a warm-up batch, in one process with no worker processes (`num_workers=0`,
one shard stream), so images per CPU-second of this process is the work of one host core. The
last table divides what one chip consumes at the paper config's planned step time by that: the
host cores that keep one chip fed. The chips' figures are the planner's
(`python -m ig_captioner.tools.plan`, docs/planning.md) at 40% MFU, the batches that fit:
v5e:4x4 at 64 images per chip, 0.103 s a step; v4:2x2x4 at 128 per chip, 0.148 s.
"""

import argparse
import glob
import io
import json
import os
import tempfile
import time

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import measure
from ig_captioner import config_lib
from ig_captioner.data import image_ops
from ig_captioner.data import array_records
from ig_captioner.data import shards_to_array_record
from ig_captioner.data import tar_samples
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import train_mixture
from ig_captioner.data import web_shards

# (topology, images per chip, planned step seconds at 40% MFU): docs/planning.md, 2026-11-25.
CHIPS = (("TPU v5e (v5e:4x4, batch 1024)", 64, 0.103),
         ("TPU v4 (v4:2x2x4, batch 2048)", 128, 0.148))
WORDS = ("photo", "of", "a", "dog", "cat", "red", "car", "on", "the", "beach", "with", "blue",
         "sky", "house", "tree", "city", "night", "person", "holding", "cup", "coffee", "table")


def _pool(num_images: int, seed: int = 0) -> list[tuple[bytes, str]]:
  """JPEGs (quality 90) of smooth random colour fields with noise, and random captions."""
  rng = np.random.default_rng(seed)
  pool = []
  for i in range(num_images):
    low = rng.uniform(0, 255, (9, 12, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(low).resize((384, 288), Image.BICUBIC), np.float32)
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    caption = " ".join(rng.choice(WORDS, size=rng.integers(8, 16))) + f" {i}"
    pool.append((out.getvalue(), caption))
  return pool


def _write(pool, directory: str, num_shards: int = 4) -> dict[str, str]:
  """The pool as parquet shards, webdataset tars and ArrayRecord files; their shard patterns."""
  per_shard = -(-len(pool) // num_shards)
  for s in range(num_shards):
    part = pool[s * per_shard:(s + 1) * per_shard]
    keys = [f"{s:05d}{r:04d}" for r in range(len(part))]
    pq.write_table(pa.table({"key": keys, "caption": [c for _, c in part],
                             "jpg": [j for j, _ in part]}),
                   os.path.join(directory, f"{s:05d}.parquet"), row_group_size=64)
    tar_samples.write(os.path.join(directory, f"{s:05d}.tar"), (
        {tar_samples.KEY: k, "jpg": j, "txt": c.encode(),
         "json": json.dumps({"key": k, "caption": c}).encode()} for k, (j, c) in zip(keys, part)))
  records_dir = os.path.join(directory, "array_record")
  shards_to_array_record.convert(os.path.join(directory, "*.parquet"), records_dir)
  return {"parquet": os.path.join(directory, "*.parquet"),
          "webdataset": os.path.join(directory, "*.tar"),
          "array_record": os.path.join(records_dir, "*.array_record")}


def _web_config(shards: str, tokenizer: str, batch: int) -> ml_collections.ConfigDict:
  """The paper config's data on `shards`, read in this process by one shard stream."""
  _, config = config_lib.load_file("configs/ig_b16_laion.py")
  config.data.update(dict(shards=shards, tokenizer=tokenizer, cycle_length=1, num_workers=0,
                          shuffle_window=0))
  config.evals = ml_collections.ConfigDict()
  config.batch_size = batch
  return config


class _ArrayRecordExample(grain.transforms.Map):
  """An ArrayRecord record as the trainer's pipeline makes an example: decoded, resized,
  tokenised."""

  def __init__(self, tokenizer, image_size: int, max_len: int):
    self._tokenizer, self._image_size, self._max_len = tokenizer, image_size, max_len

  def map(self, record):
    image_bytes, text = array_records.decode_record(record)
    image, text, _ = web_shards.check_row({"jpg": image_bytes, "caption": text}, "jpg", "caption",
                                          self._image_size)
    return {"image": image, "tokens": self._tokenizer.encode(text, self._max_len)}


def _normalised(batch: dict) -> dict:
  return dict(batch, image=image_ops.normalize_images(batch["image"]))


def _array_record_batches(pattern: str, tokenizer, config, batch: int):
  """Random access, in this thread as the trainer reads map data sets locally (no read
  threads: their prefetching would hide the work from the timing)."""
  source = grain.sources.ArrayRecordDataSource(sorted(glob.glob(pattern)))
  examples = grain.MapDataset.source(source).shuffle(seed=0).repeat().map(_ArrayRecordExample(
      tokenizer, config.model.image_size, config.model.max_text_len))
  return iter(examples.batch(batch).map(_normalised).to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def _rate(batches, batch: int, num_batches: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process) over `num_batches`, after
  one warm-up batch."""
  next(batches)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    out = next(batches)
  assert out["image"].shape[1:3] == (224, 224) and out["image"].dtype == np.float32
  images = batch * num_batches
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--batch", type=int, default=64)
  args = parser.parse_args()
  peak = measure.matmul_peak(jnp.float32)
  print(f"matmul peak (2048^3, this run): {peak / 1e9:.0f} GFLOP/s f32; {os.cpu_count()} cores")
  with tempfile.TemporaryDirectory() as directory:
    patterns = _write(_pool(args.images), directory)
    tokenizer_path = os.path.join(directory, "tokenizer.model")
    config = _web_config(patterns["parquet"], tokenizer_path, args.batch)
    config.data.tokenizer_vocab_size = 64
    web_shards.prepare_tokenizer(config.data)
    tokenizer = tokenizer_lib.from_setting(tokenizer_path)
    num_batches = max(2, 2 * args.images // args.batch)  # About two passes over the pool.
    rates = {}
    for name in ("parquet", "webdataset"):
      config.data.shards = patterns[name]
      batches = iter(train_mixture.train_loader(config, tokenizer))
      rates[name] = _rate(batches, args.batch, num_batches)
    rates["array_record"] = _rate(_array_record_batches(patterns["array_record"], tokenizer,
                                                        config, args.batch),
                                  args.batch, num_batches)
  fastest = max(cpu for _, cpu in rates.values())
  print(f"\n## per process, {args.images} images of 384x288 -> 224 px, batch {args.batch}")
  print("| source | images/s | images per CPU-second | x fastest |")
  print("|---|---|---|---|")
  for name, (wall, cpu) in rates.items():
    print(f"| {name} | {wall:.0f} | {cpu:.0f} | {cpu / fastest:.2f} |")
  print("\n## host cores that feed one chip (the planner's step time at 40% MFU)")
  print("| chip | images/s per chip | " + " | ".join(rates) + " |")
  print("|---|---|" + "---|" * len(rates))
  for chip, per_chip, step_s in CHIPS:
    consumed = per_chip / step_s
    print(f"| {chip} | {consumed:.0f} | " +
          " | ".join(f"{consumed / cpu:.1f}" for _, cpu in rates.values()) + " |")


if __name__ == "__main__":
  main()
