"""Image preprocessing shared by the train and eval pipelines, the web-shard reader and the
inference API: resizing to the model's size, normalising to [-1, 1], random shifts.
"""

import numpy as np
from PIL import Image


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
