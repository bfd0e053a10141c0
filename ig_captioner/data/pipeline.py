"""grain input pipelines: a sharded, deterministic, checkpointable train loader and eval batches.

Each process reads only its shard (`ShardByJaxProcess`) and yields its *local* slice of the
global batch; `sharding.global_batch_from_local` assembles the global arrays.
"""

from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib


def resize_image(image_HxWxC: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 image -> uint8 RGB image_size x image_size (bilinear resize only if needed)."""
  if image_HxWxC.ndim == 2:
    image_HxWxC = image_HxWxC[..., None]
  if image_HxWxC.shape[-1] == 1:
    image_HxWxC = np.repeat(image_HxWxC, 3, axis=-1)
  if image_HxWxC.shape[:2] != (image_size, image_size):
    image_HxWxC = np.asarray(Image.fromarray(image_HxWxC).resize((image_size, image_size),
                                                                 Image.BILINEAR))
  return image_HxWxC


def normalize_images(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1]; applied to whole batches (one vectorized op)."""
  return images_uint8.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


class Preprocess(grain.transforms.Map):
  """Record -> {'image': uint8 HxWx3 at the model's size, 'tokens': int32 T}."""

  def __init__(self, data_config, image_size: int, max_text_len: int,
               tokenizer: tokenizer_lib.Tokenizer):
    self._image_key = data_config.image_key
    self._text_key = data_config.text_key
    self._image_size = image_size
    self._max_text_len = max_text_len
    self._tokenizer = tokenizer

  def map(self, record):
    text = record[self._text_key]
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return {
        "image": resize_image(record[self._image_key], self._image_size),
        "tokens": self._tokenizer.encode(text, self._max_text_len),
    }


class RandomShift(grain.transforms.RandomMap):
  """Translates the image by up to `max_shift` pixels per axis, filling with black (0)."""

  def __init__(self, max_shift: int):
    self._max_shift = max_shift

  def random_map(self, element, rng: np.random.Generator):
    if self._max_shift:
      dy, dx = rng.integers(-self._max_shift, self._max_shift + 1, size=2)
      image = element["image"]
      shifted = np.zeros_like(image)
      h, w = image.shape[:2]
      shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
          image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
      element = dict(element, image=shifted)
    return element


class NormalizeBatch(grain.transforms.Map):
  def map(self, batch):
    return dict(batch, image=normalize_images(batch["image"]))


def local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")
  return global_batch_size // jax.process_count()


def train_sampler(num_records: int, seed: int) -> grain.samplers.IndexSampler:
  """Endless seeded shuffle of this process's shard of the records (disjoint across processes)."""
  return grain.samplers.IndexSampler(
      num_records=num_records,
      shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
      shuffle=True, num_epochs=None, seed=seed)


def train_loader(config: ml_collections.ConfigDict,
                 tokenizer: tokenizer_lib.Tokenizer) -> grain.DataLoader:
  """Infinite, shuffled, per-process-sharded train batches; its iterator state is checkpointable."""
  source = sources.open_split(config.data, config.data.train_split)
  sampler = train_sampler(len(source), int(config.data.shuffle_seed))
  operations = [
      Preprocess(config.data, config.model.image_size, config.model.max_text_len, tokenizer),
      RandomShift(int(config.data.augment_shift)),
      grain.transforms.Batch(local_batch_size(config.batch_size), drop_remainder=True),
      NormalizeBatch(),
  ]
  # Reader threads pay off for remote storage; on local disk their bookkeeping costs more than the
  # reads (measured: 2x slower per batch on a 2-core machine), hence `read_threads=0` there.
  threads = int(config.data.read_threads)
  read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64 * threads)
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=int(config.data.num_workers), read_options=read_options)


def labeled_batches(data_config: ml_collections.ConfigDict, split: str, image_size: int,
                    global_batch_size: int, label_key: str | None = "label") -> Iterator[dict]:
  """This process's slice of every global batch of `split`, in order, padded to whole batches.

  Yields {'image': float32 bxHxWx3, 'index': int32 b, 'valid': bool b} plus 'label' (int32 b)
  if `label_key`, with b the local batch size: `index` is the record's position in the split
  (-1 on padded rows, which have valid=False). Every process yields the same number of batches.
  """
  source = sources.open_split(data_config, split)
  local = local_batch_size(global_batch_size)
  num_batches = -(-len(source) // global_batch_size)
  offset = jax.process_index() * local
  blank = np.zeros((image_size, image_size, 3), np.uint8)
  for b in range(num_batches):
    ids = np.arange(b * global_batch_size + offset, b * global_batch_size + offset + local)
    valid = ids < len(source)
    records = [source[int(i)] for i in ids[valid]]
    pad = local - len(records)
    batch = {
        "image": normalize_images(np.stack(
            [resize_image(r[data_config.image_key], image_size) for r in records] + [blank] * pad)),
        "index": np.where(valid, ids, -1).astype(np.int32),
        "valid": valid,
    }
    if label_key:
      batch["label"] = np.asarray([int(r[label_key]) for r in records] + [0] * pad, np.int32)
    yield batch
