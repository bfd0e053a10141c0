"""`digits_captions`: the embedded, offline image-caption data set (TFDS builder, ArrayRecord).

Built from scikit-learn's bundled digits (1,797 real 8x8 handwritten digits, UCI ML hand-written
digits data set), upsampled to 32x32 RGB. No download: everything comes from the installed
scikit-learn package.

Splits:
- `train`: image-caption pairs. Class frequency follows a Zipf law, p(rank r) ~ r^-prior_exponent,
  over a seeded random ranking of the ten digits, the way concept frequency is long-tailed in web
  captions (0 = balanced). Each pair draws an image of its class from the training pool and one
  of several caption phrasings.
- `zeroshot`: `holdout_per_class` images per class, class-balanced, disjoint from every training
  image (checked by `image_id`), with class names as ClassLabel names.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Caption phrasings of the training data; `{}` is the class name.
CAPTION_TEMPLATES = (
    "a handwritten {}",
    "the digit {} written by hand",
    "a photo of the number {}",
    "a scanned {} from a paper form",
    "{}",
    "a small grey picture of a {}",
)

STORED_IMAGE_SIZE = 32


@dataclasses.dataclass
class DigitsCaptionsConfig(tfds.core.BuilderConfig):
  """Parameters of the generated data set; they are part of its name on disk."""
  prior_exponent: float = 1.0
  seed: int = 0
  num_train_examples: int = 20_000
  holdout_per_class: int = 50


def config_name(prior_exponent: float, seed: int, num_train_examples: int,
                holdout_per_class: int) -> str:
  return f"zipf{prior_exponent:g}_seed{seed}_n{num_train_examples}_holdout{holdout_per_class}"


def make_config(prior_exponent: float = 1.0, seed: int = 0, num_train_examples: int = 20_000,
                holdout_per_class: int = 50) -> DigitsCaptionsConfig:
  if prior_exponent < 0:
    raise ValueError(f"config.data.prior_exponent={prior_exponent} must be >= 0 (0 = balanced)")
  if num_train_examples <= 0:
    raise ValueError(f"config.data.num_train_examples={num_train_examples} must be positive")
  if not 0 < holdout_per_class < 170:
    raise ValueError(f"config.data.holdout_per_class={holdout_per_class} must be in [1, 169] "
                     "(each digit has at least 174 images)")
  return DigitsCaptionsConfig(
      name=config_name(prior_exponent, seed, num_train_examples, holdout_per_class),
      prior_exponent=prior_exponent, seed=seed, num_train_examples=num_train_examples,
      holdout_per_class=holdout_per_class)


def class_probabilities(prior_exponent: float, seed: int) -> np.ndarray:
  """p(class): Zipf over a seeded ranking of the classes."""
  ranking = np.random.default_rng(seed).permutation(len(CLASS_NAMES))
  p_by_rank = 1.0 / np.arange(1, len(CLASS_NAMES) + 1) ** prior_exponent
  probs = np.empty(len(CLASS_NAMES))
  probs[ranking] = p_by_rank / p_by_rank.sum()
  return probs


def upsample(image_8x8: np.ndarray) -> np.ndarray:
  """0..16 grey 8x8 digit -> uint8 RGB STORED_IMAGE_SIZE^2 (bilinear)."""
  grey = Image.fromarray((image_8x8 * (255.0 / 16.0)).astype(np.uint8))
  grey = grey.resize((STORED_IMAGE_SIZE, STORED_IMAGE_SIZE), Image.BILINEAR)
  return np.repeat(np.asarray(grey)[..., None], 3, axis=-1)


def split_image_ids(labels: np.ndarray, holdout_per_class: int, seed: int):
  """Per-class seeded split of image indices into (train pools per class, zero-shot ids)."""
  rng = np.random.default_rng([seed, 1])
  train_pools, zeroshot_ids = [], []
  for label in range(len(CLASS_NAMES)):
    ids = rng.permutation(np.flatnonzero(labels == label))
    zeroshot_ids.extend(ids[:holdout_per_class].tolist())
    train_pools.append(ids[holdout_per_class:])
  return train_pools, sorted(zeroshot_ids)


class DigitsCaptions(tfds.core.GeneratorBasedBuilder):
  """Long-tailed image captions of handwritten digits, plus a balanced zero-shot split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [make_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(STORED_IMAGE_SIZE, STORED_IMAGE_SIZE, 3)),
            "caption": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "image_id": np.int32,
        }),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    from sklearn import datasets as sk_datasets  # Heavy import, only needed when building.
    digits = sk_datasets.load_digits()
    return {
        "train": self._generate_examples(digits, "train"),
        "zeroshot": self._generate_examples(digits, "zeroshot"),
    }

  def _generate_examples(self, digits, split):
    cfg = self.builder_config
    train_pools, zeroshot_ids = split_image_ids(digits.target, cfg.holdout_per_class, cfg.seed)
    rng = np.random.default_rng([cfg.seed, 2])
    if split == "zeroshot":
      for image_id in zeroshot_ids:
        label = int(digits.target[image_id])
        yield image_id, self._example(digits, image_id, CAPTION_TEMPLATES[0].format(CLASS_NAMES[label]))
      return
    labels = rng.choice(len(CLASS_NAMES), size=cfg.num_train_examples,
                        p=class_probabilities(cfg.prior_exponent, cfg.seed))
    for i, label in enumerate(labels):
      image_id = int(rng.choice(train_pools[label]))
      template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
      yield i, self._example(digits, image_id, template.format(CLASS_NAMES[label]))

  @staticmethod
  def _example(digits, image_id: int, caption: str) -> dict:
    return {
        "image": upsample(digits.images[image_id]),
        "caption": caption,
        "label": int(digits.target[image_id]),
        "image_id": image_id,
    }
