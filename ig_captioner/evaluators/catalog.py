"""Ready `config.evals` entries for real TFDS data sets, by name (their `config.data`
counterparts, e.g. COCO captions to train on, are in `data/presets.py`).

    config.evals.imagenet = catalog.imagenet_zeroshot(manual_dir="~/imagenet")  # CLIP's 80
    config.evals.imagenet7 = catalog.imagenet_zeroshot(templates="clip7")       # its 7
    config.evals.coco = catalog.coco_retrieval()              # Karpathy test split, 5 captions
    config.evals.cifar100 = catalog.cifar_zeroshot("cifar100")
    config.evals.fashion = catalog.fashion_mnist_zeroshot()   # Debian's local copy
    config.evals.x = catalog.evaluation("cifar10")            # any of EVALUATIONS by name

`python -m ig_captioner.data.prepare --config=...` builds them: `imagenet2012` from the two
ILSVRC2012 tars in `manual_dir`, `fashion_mnist` from its original idx files in `manual_dir`
(default: where Debian's `dataset-fashion-mnist` puts them), the others by TFDS's download.
`data_dir=None` (every function) keeps `config.data.data_dir`.
"""

import functools

import ml_collections

from ig_captioner import errors
from ig_captioner.data import fashion_mnist_local
from ig_captioner.data import imagenet_metadata
from ig_captioner.data import presets
from ig_captioner.evaluators import retrieval
from ig_captioner.evaluators import zeroshot

# Templates of CLIP's zero-shot ImageNet evaluation (provenance: metadata/PROVENANCE.md).
IMAGENET_TEMPLATES = {"clip80": imagenet_metadata.clip_templates,
                      "clip7": functools.partial(imagenet_metadata.clip_templates, simple=True)}
# CLIP's base prompt (Radford et al., 2021), for the small classification sets.
PHOTO_TEMPLATE = ("a photo of a {}.",)
def imagenet_zeroshot(data_dir: str | None = None, manual_dir: str | None = None,
                      templates: str = "clip80", **overrides) -> ml_collections.ConfigDict:
  """Zero-shot top-1 on `imagenet2012`'s validation split (50,000 images) with OpenAI's
  human-readable class names (its ClassLabel holds WordNet ids) and CLIP's templates:
  `templates` 'clip80' or 'clip7'. `manual_dir` holds ILSVRC2012_img_{train,val}.tar to prepare
  it from."""
  if templates not in IMAGENET_TEMPLATES:
    raise errors.ConfigError(f"templates={templates!r} is unknown; known: "
                             f"{sorted(IMAGENET_TEMPLATES)}")
  cfg = zeroshot.default_config(split="validation", class_names="imagenet",
                                templates=IMAGENET_TEMPLATES[templates](),
                                stream_blocks=16,  # Progress with an ETA: 1,000 x 80 prompts.
                                data=presets.eval_data("imagenet2012", data_dir, manual_dir))
  cfg.update(overrides)
  return cfg


def coco_retrieval(data_dir: str | None = None, **overrides) -> ml_collections.ConfigDict:
  """Image-text retrieval on COCO's Karpathy `test` split (5,000 images) against all its captions
  (~25,000; identical texts are one candidate, see evaluators/retrieval.py)."""
  cfg = retrieval.default_config(split="test", captions_key="captions/text",
                                 data=presets.eval_data("coco_captions", data_dir))
  cfg.update(overrides)
  return cfg


def cifar_zeroshot(name: str = "cifar10", data_dir: str | None = None,
                   **overrides) -> ml_collections.ConfigDict:
  """Zero-shot top-1 on the test split (10,000 images) of `cifar10` or `cifar100` with its
  ClassLabel's names (CIFAR-100's underscores read as spaces) in CLIP's base prompt."""
  if name not in ("cifar10", "cifar100"):
    raise errors.ConfigError(f"cifar data set {name!r} is unknown; known: cifar10, cifar100")
  cfg = zeroshot.default_config(split="test", templates=PHOTO_TEMPLATE,
                                data=presets.eval_data(name, data_dir))
  cfg.update(overrides)
  return cfg


def fashion_mnist_zeroshot(data_dir: str | None = None,
                           manual_dir: str | None = fashion_mnist_local.DEBIAN_DIR,
                           **overrides) -> ml_collections.ConfigDict:
  """Zero-shot top-1 on Fashion-MNIST's test split (10,000 images, 10 named classes) in CLIP's
  base prompt; prepared from the original idx files in `manual_dir` (None: TFDS downloads
  them)."""
  cfg = zeroshot.default_config(split="test", templates=PHOTO_TEMPLATE,
                                data=presets.eval_data("fashion_mnist", data_dir, manual_dir))
  cfg.update(overrides)
  return cfg


EVALUATIONS = {
    "imagenet2012": imagenet_zeroshot,
    "imagenet2012_clip7": lambda **kw: imagenet_zeroshot(templates="clip7", **kw),
    "coco_captions": coco_retrieval,
    "cifar10": lambda **kw: cifar_zeroshot("cifar10", **kw),
    "cifar100": lambda **kw: cifar_zeroshot("cifar100", **kw),
    "fashion_mnist": fashion_mnist_zeroshot,
}


def evaluation(name: str, **overrides) -> ml_collections.ConfigDict:
  """The `config.evals` entry of EVALUATIONS[name]; `overrides` go to its function."""
  if name not in EVALUATIONS:
    raise errors.ConfigError(f"catalog evaluation {name!r} is unknown; known: "
                             f"{sorted(EVALUATIONS)}")
  return EVALUATIONS[name](**overrides)
