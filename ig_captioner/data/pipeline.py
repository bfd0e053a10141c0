"""The eval batches: every record of a split in order, in global batches of which each process
yields its *local* slice (`sharding.global_batch_from_local` assembles the global arrays). The
train pipeline (sources mixed by weight) is `train_mixture`; image preprocessing `image_ops`.
"""

from typing import Iterator

import jax
import ml_collections
import numpy as np

from ig_captioner.data import image_ops
from ig_captioner.data import sources


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
        "image": image_ops.normalize_images(np.stack(
            [image_ops.resize_image(r[data_config.image_key], image_size) for r in records] +
            [blank] * pad)),
        "index": np.where(valid, ids, -1).astype(np.int32),
        "valid": valid,
    }
    if label_key:
      batch["label"] = np.asarray([int(r[label_key]) for r in records] + [0] * pad, np.int32)
    yield batch
