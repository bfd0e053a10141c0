"""`digits_captions`: the embedded, offline image-caption data set (TFDS builder, ArrayRecord).

Built from scikit-learn's bundled digits (1,797 real 8x8 handwritten digits, a copy of the UCI ML
hand-written digits test set), upsampled to 32x32 RGB. No download: everything comes from the
installed scikit-learn package.

It mimics the two properties of web alt-text that give a captioner its language prior:
- concept frequency is long-tailed: the class of a pair follows a Zipf law,
  p(rank r) ~ r^-prior_exponent, over a seeded random ranking of the ten digits (0 = balanced);
- captions are noisy: with probability `caption_noise` a caption names a concept drawn from that
  same popularity prior instead of what the image shows (alt-text that names popular things).

Splits (images of different splits are disjoint, see `image_id`):
- `train`: `num_train_examples` image-caption pairs; each draws an image of its class from the
  training pool and one of several caption phrasings.
- `validation`: `validation_per_class` images per class, class-balanced, for choices made
  during development.
- `zeroshot`: `holdout_per_class` images per class, class-balanced, the held-out test set.
- `retrieval`: `retrieval_per_class` further held-out images per class, each with every caption
  phrasing of its class (`captions`), for image-text retrieval.
- `classification`: every training-pool image once, in another style (inverted: a dark digit
  on a light ground), with its label: a classification source for prefix conditioning, whose
  labels become texts through templates (its `caption` is the bare class name).
- `zeroshot_inverted`: the `zeroshot` images in that style (a style-shifted held-out split).
Labels are ClassLabel features whose names are the class names used to build prompts. Every
record has `caption` (one text) and `captions` (all its texts: the caption itself on `train`).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from ig_captioner import errors

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
MIN_IMAGES_PER_CLASS = 174  # Fewest images of any digit in scikit-learn's copy.


@dataclasses.dataclass
class DigitsCaptionsConfig(tfds.core.BuilderConfig):
  """Parameters of the generated data set; all are part of its name on disk."""
  prior_exponent: float = 1.0
  caption_noise: float = 0.0
  seed: int = 0
  num_train_examples: int = 20_000
  holdout_per_class: int = 50
  validation_per_class: int = 20
  retrieval_per_class: int = 10


def make_config(prior_exponent: float = 1.0, caption_noise: float = 0.0, seed: int = 0,
                num_train_examples: int = 20_000, holdout_per_class: int = 50,
                validation_per_class: int = 20,
                retrieval_per_class: int = 10) -> DigitsCaptionsConfig:
  """A validated builder config named after its parameters."""
  if prior_exponent < 0:
    raise errors.ConfigError(
        f"config.data.prior_exponent={prior_exponent} must be >= 0 (0 = balanced)")
  if not 0 <= caption_noise < 1:
    raise errors.ConfigError(f"config.data.caption_noise={caption_noise} must be in [0, 1)")
  if num_train_examples <= 0:
    raise errors.ConfigError(
        f"config.data.num_train_examples={num_train_examples} must be positive")
  held = (holdout_per_class, validation_per_class, retrieval_per_class)
  if min(held) < 1 or sum(held) > MIN_IMAGES_PER_CLASS - 5:
    raise errors.ConfigError(
        f"config.data.holdout_per_class={holdout_per_class}, validation_per_class="
        f"{validation_per_class} and retrieval_per_class={retrieval_per_class} must be >= 1 and "
        f"sum to at most {MIN_IMAGES_PER_CLASS - 5}, leaving training images for every digit")
  name = (f"zipf{prior_exponent:g}_noise{caption_noise:g}_seed{seed}_n{num_train_examples}"
          f"_holdout{holdout_per_class}_val{validation_per_class}_ret{retrieval_per_class}")
  return DigitsCaptionsConfig(
      name=name, prior_exponent=prior_exponent, caption_noise=caption_noise, seed=seed,
      num_train_examples=num_train_examples, holdout_per_class=holdout_per_class,
      validation_per_class=validation_per_class, retrieval_per_class=retrieval_per_class)


def class_probabilities(prior_exponent: float, seed: int) -> np.ndarray:
  """p(class): Zipf over a seeded ranking of the classes."""
  ranking = np.random.default_rng(seed).permutation(len(CLASS_NAMES))
  p_by_rank = 1.0 / np.arange(1, len(CLASS_NAMES) + 1) ** prior_exponent
  probs = np.empty(len(CLASS_NAMES))
  probs[ranking] = p_by_rank / p_by_rank.sum()
  return probs


def invert(images_uint8: np.ndarray) -> np.ndarray:
  """The classification source's style: a dark digit on a light ground."""
  return 255 - images_uint8


def upsample(image_8x8: np.ndarray) -> np.ndarray:
  """0..16 grey 8x8 digit -> uint8 RGB STORED_IMAGE_SIZE^2 (bilinear)."""
  grey = Image.fromarray((image_8x8 * (255.0 / 16.0)).astype(np.uint8))
  grey = grey.resize((STORED_IMAGE_SIZE, STORED_IMAGE_SIZE), Image.BILINEAR)
  return np.repeat(np.asarray(grey)[..., None], 3, axis=-1)


HELD_OUT_SPLITS = ("zeroshot", "validation", "retrieval")


def split_image_ids(labels: np.ndarray, cfg: DigitsCaptionsConfig) -> dict:
  """Per-class seeded split of image indices: {'zeroshot': ids, 'validation': ids,
  'retrieval': ids, 'train': [ids of class 0, ids of class 1, ...]}."""
  rng = np.random.default_rng([cfg.seed, 1])
  sizes = (cfg.holdout_per_class, cfg.validation_per_class, cfg.retrieval_per_class)
  out = {split: [] for split in HELD_OUT_SPLITS + ("train",)}
  for label in range(len(CLASS_NAMES)):
    ids = rng.permutation(np.flatnonzero(labels == label))
    start = 0
    for split, size in zip(HELD_OUT_SPLITS, sizes):
      out[split].extend(ids[start:start + size].tolist())
      start += size
    out["train"].append(ids[start:])
  for split in HELD_OUT_SPLITS:
    out[split].sort()
  return out


class DigitsCaptions(tfds.core.GeneratorBasedBuilder):
  """Long-tailed, noisy image captions of handwritten digits, plus balanced eval splits."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "`retrieval` split; `captions` (all texts of a record) everywhere.",
                   "1.2.0": "`classification` and `zeroshot_inverted` (style-shifted) splits."}
  BUILDER_CONFIGS = [make_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(STORED_IMAGE_SIZE, STORED_IMAGE_SIZE, 3)),
            "caption": tfds.features.Text(),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),  # What the image shows.
            "image_id": np.int32,  # Index into sklearn.datasets.load_digits().
        }),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
    digits = sk_datasets.load_digits()
    images = np.stack([upsample(x) for x in digits.images])
    ids = split_image_ids(digits.target, self.builder_config)
    ids["classification"] = sorted(int(i) for pool in ids["train"] for i in pool)
    ids["zeroshot_inverted"] = ids["zeroshot"]
    return {split: self._generate_examples(split, images, digits.target, ids[split])
            for split in ("train",) + HELD_OUT_SPLITS + ("classification", "zeroshot_inverted")}

  def _generate_examples(self, split, images, labels, image_ids):
    if split == "train":
      return self._train_examples(images, labels, image_ids)
    if split == "classification":
      return self._classification_examples(invert(images), labels, image_ids)
    return self._eval_examples(invert(images) if split == "zeroshot_inverted" else images,
                               labels, image_ids)

  def _eval_examples(self, images, labels, image_ids):
    for image_id in image_ids:
      captions = [t.format(CLASS_NAMES[int(labels[image_id])]) for t in CAPTION_TEMPLATES]
      yield image_id, _example(images, labels, image_id, captions)

  def _classification_examples(self, images, labels, image_ids):
    for image_id in image_ids:
      yield image_id, _example(images, labels, image_id, [CLASS_NAMES[int(labels[image_id])]])

  def _train_examples(self, images, labels, train_pools):
    cfg = self.builder_config
    rng = np.random.default_rng([cfg.seed, 2])
    prior = class_probabilities(cfg.prior_exponent, cfg.seed)
    classes = rng.choice(len(CLASS_NAMES), size=cfg.num_train_examples, p=prior)
    for i, label in enumerate(classes):
      image_id = int(rng.choice(train_pools[label]))
      named = label
      if rng.random() < cfg.caption_noise:
        named = rng.choice(len(CLASS_NAMES), p=prior)  # A popular concept, whatever the image.
      template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
      yield i, _example(images, labels, image_id, [template.format(CLASS_NAMES[named])])


def _example(images, labels, image_id: int, captions: list[str]) -> dict:
  return {
      "image": images[image_id],
      "caption": captions[0],
      "captions": captions,
      "label": int(labels[image_id]),
      "image_id": image_id,
  }
