"""Image preprocessing shared by the train and eval pipelines, and the eval batches.

Each process yields its *local* slice of a global batch; `sharding.global_batch_from_local`
assembles the global arrays. The train pipeline (sources mixed by weight) is `train_mixture`.
"""

from typing import Iterator

import jax
import ml_collections
import numpy as np
from PIL import Image

from ig_captioner.data import sources


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


def random_shift(image_HxWxC: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
  """Translates the image by up to `max_shift` pixels per axis, filling with black (0)."""
  if not max_shift:
    return image_HxWxC
  dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
  shifted = np.zeros_like(image_HxWxC)
  h, w = image_HxWxC.shape[:2]
  shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      image_HxWxC[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return shifted


def local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")
  return global_batch_size // jax.process_count()


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
