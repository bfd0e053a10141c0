"""Tiny fake *source* files in the real formats that TFDS's own builders read, so that the real
builders prepare real ArrayRecord data sets offline (the tfds wheel ships no fake data).

Each `write_*` function writes the files one builder expects into a directory and returns what
it wrote (the independent expectations of the tests). The formats follow the builders' sources in
tensorflow_datasets 4.9.10: `datasets/imagenet2012/`, `object_detection/coco{,_captions}.py`,
`image_classification/cifar.py`, `image_classification/mnist.py`.
"""

import contextlib
import gzip
import io
import json
import os
import struct
import tarfile
from typing import Iterator, Mapping
from unittest import mock

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds


def _jpeg(rng: np.random.Generator, size: int = 16) -> bytes:
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(out, format="JPEG")
  return out.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def downloads_from(local: Mapping[str, str]) -> Iterator[None]:
  """Patches `DownloadManager.download_and_extract` (as TFDS's DatasetBuilderTestCase does) to
  return local directories: a dict of urls by the dict's keys, a single url by itself."""
  def fake(self, url_or_urls):
    del self
    if isinstance(url_or_urls, str):
      return local[url_or_urls]
    return {key: local[key] for key in url_or_urls}
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", fake):
    yield


# ImageNet 2012: its validation labels come from the `validation_labels.txt` TFDS ships (the
# label of the i-th validation file name in sorted order is its i-th line).
IMAGENET_TRAIN_WNIDS = ("n01440764", "n01443537", "n01484850")  # tench, goldfish, great white


def write_imagenet2012(directory: str, per_class: int = 2, num_val: int = 4,
                       seed: int = 0) -> dict:
  """`ILSVRC2012_img_train.tar` (a tar of per-wnid tars of JPEGs) and `ILSVRC2012_img_val.tar`
  (`ILSVRC2012_val_<8 digits>.JPEG`). Returns {'train': {file: wnid}, 'validation': [files]}."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  train = {}
  with tarfile.open(os.path.join(directory, "ILSVRC2012_img_train.tar"), "w") as outer:
    for wnid in IMAGENET_TRAIN_WNIDS:
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(per_class):
          name = f"{wnid}_{i}.JPEG"
          _add_bytes(inner, name, _jpeg(rng))
          train[name] = wnid
      _add_bytes(outer, f"{wnid}.tar", inner_bytes.getvalue())
  validation = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, num_val + 1)]
  with tarfile.open(os.path.join(directory, "ILSVRC2012_img_val.tar"), "w") as tar:
    for name in validation:
      _add_bytes(tar, name, _jpeg(rng))
  return {"train": train, "validation": validation}


# COCO 2014 with Karpathy's splits.
COCO_SPLITS = {"train": "train2014", "val": "val2014", "test": "val2014", "restval": "val2014"}


def write_coco_captions(directory: str, images_per_split: Mapping[str, int] | None = None,
                        captions_per_image: int = 5, seed: int = 0) -> dict:
  """COCO 2014 images and instance annotations (80 categories, as the builder's ClassLabel
  requires) plus Karpathy's `dataset_coco.json`. Returns the local directory of every download
  key (for `downloads_from`) and {'captions': {karpathy split: {file name: [captions]}}}."""
  images_per_split = images_per_split or {"train": 4, "val": 1, "test": 3, "restval": 1}
  rng = np.random.default_rng(seed)
  dirs = {key: os.path.join(directory, key) for key in (
      "train_images", "validation_images", "annotations", "unused", "karpathy")}
  for d in dirs.values():
    os.makedirs(d, exist_ok=True)
  colours = ("red", "blue", "green", "yellow", "black", "white", "small", "large")
  animals = ("cat", "dog", "horse", "bird", "cow", "sheep")
  places = ("on a mat", "in a field", "near a tree", "by the sea", "under a table")
  captions, karpathy, coco_images = {}, [], {"train2014": [], "val2014": []}
  image_id = 0
  for split, count in images_per_split.items():
    captions[split] = {}
    folder = COCO_SPLITS[split]
    for _ in range(count):
      image_id += 1
      name = f"COCO_{folder}_{image_id:012d}.jpg"
      image_dir = dirs["train_images" if folder == "train2014" else "validation_images"]
      os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
      with open(os.path.join(image_dir, folder, name), "wb") as f:
        f.write(_jpeg(rng))
      animal = animals[image_id % len(animals)]
      texts = [f"a {colours[(image_id + k) % len(colours)]} {animal} {places[k % len(places)]}"
               f" {image_id}" for k in range(captions_per_image)]  # Distinct across images.
      captions[split][name] = texts
      karpathy.append({"filename": name, "filepath": folder, "split": split,
                       "sentences": [{"raw": t, "sentid": image_id * 100 + k}
                                     for k, t in enumerate(texts)]})
      coco_images[folder].append({"id": image_id, "file_name": name, "height": 16, "width": 16})
  categories = [{"id": i + 1, "name": f"category{i}", "supercategory": "thing"}
                for i in range(80)]
  os.makedirs(os.path.join(dirs["annotations"], "annotations"), exist_ok=True)
  for folder, images in coco_images.items():
    with open(os.path.join(dirs["annotations"], "annotations",
                           f"instances_{folder}.json"), "w") as f:
      json.dump({"images": images, "annotations": [], "categories": categories}, f)
  with open(os.path.join(dirs["karpathy"], "dataset_coco.json"), "w") as f:
    json.dump({"images": karpathy, "dataset": "coco"}, f)
  # The builder also asks for COCO's test sets, which Karpathy's splits do not use.
  local = {f"{s}_{kind}": dirs["unused"] for s in ("test", "test2015")
           for kind in ("images", "annotations")}
  local.update(train_images=dirs["train_images"], validation_images=dirs["validation_images"],
               train_annotations=dirs["annotations"], validation_annotations=dirs["annotations"],
               karpathy_and_li_splits=dirs["karpathy"])
  return {"downloads": local, "captions": captions}


# CIFAR: records of label byte(s) then 3072 bytes (3x32x32, channel-major).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


def _cifar_records(rng, labels: list[tuple[int, ...]]) -> bytes:
  return b"".join(bytes(lab) + rng.integers(0, 256, 3072, np.uint8).tobytes() for lab in labels)


def write_cifar10(directory: str, class_names: list[str], train_labels: list[int],
                  test_labels: list[int], seed: int = 0) -> dict:
  """`cifar-10-batches-bin/`: five train batches (the first holds every train image), the test
  batch and `batches.meta.txt`. Returns the url -> directory map for `downloads_from`."""
  rng = np.random.default_rng(seed)
  root = os.path.join(directory, "cifar-10-batches-bin")
  os.makedirs(root, exist_ok=True)
  contents = {"data_batch_1.bin": _cifar_records(rng, [(y,) for y in train_labels]),
              "test_batch.bin": _cifar_records(rng, [(y,) for y in test_labels]),
              "batches.meta.txt": "\n".join(class_names).encode() + b"\n"}
  for i in range(2, 6):
    contents[f"data_batch_{i}.bin"] = b""
  for name, data in contents.items():
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)
  return {CIFAR10_URL: directory}


def write_cifar100(directory: str, fine_names: list[str], coarse_names: list[str],
                   train_labels: list[int], test_labels: list[int], seed: int = 0) -> dict:
  """`cifar-100-binary/` with (coarse, fine) label pairs (coarse = fine % 20 here) and both
  name files. Returns the url -> directory map for `downloads_from`."""
  rng = np.random.default_rng(seed)
  root = os.path.join(directory, "cifar-100-binary")
  os.makedirs(root, exist_ok=True)
  contents = {"train.bin": _cifar_records(rng, [(y % 20, y) for y in train_labels]),
              "test.bin": _cifar_records(rng, [(y % 20, y) for y in test_labels]),
              "fine_label_names.txt": "\n".join(fine_names).encode() + b"\n",
              "coarse_label_names.txt": "\n".join(coarse_names).encode() + b"\n"}
  for name, data in contents.items():
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)
  return {CIFAR100_URL: directory}


# Fashion-MNIST: the original idx files (big-endian header: magic, count[, rows, cols]).
def write_fashion_mnist(directory: str, train_labels: list[int], test_labels: list[int],
                        seed: int = 0) -> None:
  """The four gzipped idx files of the original distribution, named as it names them."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
    images = rng.integers(0, 256, (len(labels), 28, 28), np.uint8)
    files = {f"{prefix}-images-idx3-ubyte.gz": struct.pack(">IIII", 2051, len(labels), 28, 28) +
                                               images.tobytes(),
             f"{prefix}-labels-idx1-ubyte.gz": struct.pack(">II", 2049, len(labels)) +
                                               bytes(labels)}
    for name, data in files.items():
      with gzip.open(os.path.join(directory, name), "wb") as f:
        f.write(data)
