"""CLIP_benchmark's data sets as this codebase's evaluators: each name (and collection) of
LAION-AI's CLIP_benchmark that has a TFDS builder, with the split, class names and templates
CLIP_benchmark evaluates it with (`clip_benchmark/datasets/builder.py`; facts from there), as a
`config.evals` entry.

    config.evals.cifar10 = benchmark_sets.eval_config("cifar10", data_dir="~/tfds")
    benchmark_sets.expand(["imagenet_robustness", "cifar10"])  # -> names, collections expanded

Names CLIP_benchmark has but this table lacks (no TFDS builder, or a class subset not carried
here) are refused with what is missing (`UNSUPPORTED`).
"""

import dataclasses

import ml_collections

from ig_captioner import errors
from ig_captioner.data import clip_benchmark_metadata
from ig_captioner.data import presets
from ig_captioner.evaluators import retrieval
from ig_captioner.evaluators import zeroshot

CLASSIFICATION, RETRIEVAL = "zeroshot_classification", "zeroshot_retrieval"


@dataclasses.dataclass(frozen=True)
class DataSet:
  """One CLIP_benchmark data set as TFDS holds it."""
  tfds_name: str
  split: str  # The TFDS split CLIP_benchmark's "test" is.
  task: str = CLASSIFICATION
  class_names: str | None = None  # CLIP_benchmark's list (en_classnames.json); None: TFDS's.
  templates: str | None = None  # Key of its templates (None: the name's).
  manual: bool = False  # Needs source files put in `manual_dir` by hand.


DATA_SETS = {
    "cifar10": DataSet("cifar10", "test"),
    "cifar100": DataSet("cifar100", "test"),
    "imagenet1k": DataSet("imagenet2012", "validation", class_names="imagenet1k", manual=True),
    "imagenetv2": DataSet("imagenet_v2", "test", class_names="imagenet1k",
                          templates="imagenet1k"),
    "imagenet_sketch": DataSet("imagenet_sketch", "test", class_names="imagenet1k",
                               templates="imagenet1k"),
    "mnist": DataSet("mnist", "test", class_names="mnist"),
    "stl10": DataSet("stl10", "test"),
    "food101": DataSet("food101", "validation"),
    "pets": DataSet("oxford_iiit_pet", "test", class_names="pets"),
    "flowers": DataSet("oxford_flowers102", "test", class_names="flowers"),
    "dtd": DataSet("dtd", "test"),
    "cars": DataSet("cars196", "test"),
    "vtab/caltech101": DataSet("caltech101", "test", class_names="caltech101_vtab",
                               templates="caltech101"),
    "vtab/cifar10": DataSet("cifar10", "test", templates="cifar10"),
    "vtab/cifar100": DataSet("cifar100", "test", templates="cifar100"),
    "vtab/dtd": DataSet("dtd", "test", templates="dtd"),
    "vtab/eurosat": DataSet("eurosat/rgb", "train[80%:]", class_names="eurosat",
                            templates="eurosat"),
    "vtab/flowers": DataSet("oxford_flowers102", "test", class_names="flowers",
                            templates="flowers"),
    "vtab/pets": DataSet("oxford_iiit_pet", "test", class_names="pets", templates="pets"),
    "vtab/pcam": DataSet("patch_camelyon", "test", class_names="pcam", templates="pcam"),
    "vtab/svhn": DataSet("svhn_cropped", "test", class_names="svhn", templates="svhn"),
    "mscoco_captions": DataSet("coco_captions", "test", task=RETRIEVAL),
}
# CLIP_benchmark's collections, cut to DATA_SETS (the rest are in UNSUPPORTED).
COLLECTIONS = {
    "imagenet_robustness": ("imagenetv2", "imagenet_sketch"),
    "vtab": ("vtab/caltech101", "vtab/cifar100", "vtab/dtd", "vtab/eurosat", "vtab/flowers",
             "vtab/pets", "vtab/pcam", "vtab/svhn"),
    "retrieval": ("mscoco_captions",),
}
_NO_TFDS = "TFDS has no builder for it"
_SUBSET = "its classes are a 200-class subset of ImageNet's, which this table does not carry"
_NAMES = "TFDS's class names are not CLIP_benchmark's and it ships none for it"
UNSUPPORTED = {
    **{n: _NO_TFDS for n in ("flickr30k", "flickr8k", "country211", "gtsrb", "fgvc_aircraft",
                             "fer2013", "objectnet", "imagenet-o", "renderedsst2")},
    "imagenet-a": _SUBSET, "imagenet-r": _SUBSET, "sun397": _NAMES,
    **{n: "not carried yet (its labels need task_adaptation's preprocessing)" for n in (
        "vtab/clevr_count_all", "vtab/clevr_closest_object_distance", "vtab/dmlab",
        "vtab/dsprites_label_orientation", "vtab/dsprites_label_x_position",
        "vtab/kitti_closest_vehicle_distance", "vtab/smallnorb_label_azimuth",
        "vtab/smallnorb_label_elevation", "vtab/diabetic_retinopathy", "vtab/resisc45")},
}


def expand(names) -> list[str]:
  """Data set names with collections expanded, in order, each once; ConfigError naming any
  unknown or unsupported name."""
  out = []
  for name in names:
    for member in COLLECTIONS.get(name, (name,)):
      if member in UNSUPPORTED:
        raise errors.ConfigError(f"CLIP_benchmark data set {member!r} is not supported here: "
                                 f"{UNSUPPORTED[member]}")
      if member not in DATA_SETS:
        raise errors.ConfigError(f"{member!r} is not a CLIP_benchmark data set known here; "
                                 f"known: {sorted(DATA_SETS)}, collections: {sorted(COLLECTIONS)}")
      if member not in out:
        out.append(member)
  return out


def eval_config(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                **overrides) -> ml_collections.ConfigDict:
  """The `config.evals` entry that evaluates CLIP_benchmark's data set `name`."""
  (name,) = expand([name])
  data_set = DATA_SETS[name]
  data = presets.eval_data(data_set.tfds_name, data_dir, manual_dir if data_set.manual else None)
  short = name.rpartition("/")[2]
  if data_set.task == RETRIEVAL:
    cfg = retrieval.default_config(split=data_set.split, captions_key="captions/text",
                                   data=data)
  else:
    cfg = zeroshot.default_config(
        split=data_set.split, data=data,
        templates=clip_benchmark_metadata.templates(*filter(None, (data_set.templates, short))),
        class_names=(clip_benchmark_metadata.PREFIX + data_set.class_names
                     if data_set.class_names else None))
  cfg.update(overrides)
  return cfg


def slug(name: str) -> str:
  """A data set's name in file names (CLIP_benchmark's: '/' as '_')."""
  return name.replace("/", "_")
