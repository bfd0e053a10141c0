"""The model shapes the benchmarks measure (issue 10's two shapes), built as real captioners with
random params.

- small: ViT width 256 (4 heads, MLP 1024), 4 encoder and 2 decoder layers, 64 visual tokens
  (64 px images, 8 px patches), 16 text tokens, vocabulary 1,024;
- large: ViT width 384 (S: 6 heads, MLP 1536), 6 encoder and 4 decoder layers, 144 visual
  tokens (96 px, 8 px patches), 32 text tokens, vocabulary 1,024.
"""

import dataclasses

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from ig_captioner import models
from ig_captioner.models import layers

VOCAB = 1024


@dataclasses.dataclass(frozen=True)
class Shape:
  name: str
  size: layers.TransformerSize  # Encoder and decoder width, heads and MLP.
  encoder_depth: int
  decoder_depth: int
  image_size: int
  patch: int
  text_len: int  # Tokens incl. BOS and EOS; the decoder reads text_len - 1.

  @property
  def visual_tokens(self) -> int:
    return (self.image_size // self.patch) ** 2


SHAPES = {
    "small": Shape("small", layers.TransformerSize(256, 4, 1024, 4), 4, 2, 64, 8, 16),
    "large": Shape("large", layers.TransformerSize(384, 6, 1536, 6), 6, 4, 96, 8, 32),
}


def model_config(shape: Shape, dtype: str = "float32") -> ml_collections.ConfigDict:
  """`config.model` of the captioner of `shape`; its encoder size is registered under a
  benchmark-only name."""
  size_name = f"bench_{shape.name}"
  layers.SIZES[size_name] = dataclasses.replace(shape.size, depth=shape.encoder_depth)
  return ml_collections.ConfigDict(dict(
      name="captioner", encoder=f"{size_name}/{shape.patch}", decoder=size_name,
      decoder_depth=shape.decoder_depth, vocab_size=VOCAB, image_size=shape.image_size,
      max_text_len=shape.text_len, dtype=dtype))


def build(shape: Shape, dtype: str = "float32"):
  """The captioner (`models.Model`) of `shape`."""
  return models.build(model_config(shape, dtype))


def random_params(model, seed: int = 0):
  """Params with every leaf random (the decoder head starts at zero otherwise)."""
  params = nn.unbox(model.init_params(jax.random.key(seed)))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return treedef.unflatten([0.02 * jax.random.normal(k, x.shape) + x
                            for k, x in zip(keys, leaves)])


def random_prompts(rng: np.random.Generator, num: int, shape: Shape,
                   lengths=None) -> np.ndarray:
  """`[BOS, random words..., EOS]` of `text_len` tokens (or of the given lengths): no prefix
  beyond BOS is shared."""
  prompts = np.zeros((num, shape.text_len), np.int32)
  lengths = np.full(num, shape.text_len) if lengths is None else np.asarray(lengths)
  for p, n in enumerate(lengths):
    prompts[p, 0] = 1
    prompts[p, 1:n - 1] = rng.integers(7, VOCAB, n - 2)
    prompts[p, n - 1] = 2
  return prompts


def images(rng: np.random.Generator, num: int, shape: Shape) -> np.ndarray:
  return rng.normal(size=(num, shape.image_size, shape.image_size, 3)).astype(np.float32)
