"""TFDS's `fashion_mnist` (its features, class names, version and directory) prepared offline from
a local copy of the original idx files, in `config.data.manual_dir`.

Debian's `dataset-fashion-mnist` package puts them under `/usr/share/datasets/fashion-mnist/`,
re-compressed, so that TFDS's registered download checksums do not match them; this builder
reads them as they are (gzipped or not) and counts the examples from the idx headers (TFDS's own
reader assumes the full 60,000 + 10,000).
"""

import os
import struct

from tensorflow_datasets.image_classification import mnist
import tensorflow_datasets.public_api as tfds

from ig_captioner import paths

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# Split -> (images file, labels file), as the original distribution names them.
FILES = {tfds.Split.TRAIN: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         tfds.Split.TEST: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _local_file(directory: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    if (paths.path(directory) / name).is_file():
      return paths.join(directory, name)
  raise FileNotFoundError(f"{directory} has no {stem}.gz (nor {stem}): install Debian's "
                          "dataset-fashion-mnist, or set config.data.manual_dir to a directory "
                          "holding Fashion-MNIST's four original idx files")


def _num_images(images_path: str) -> int:
  with paths.path(images_path).open("rb") as f:
    magic, count = struct.unpack(">II", f.read(8))
  if magic != 2051:
    raise ValueError(f"{images_path} is not an idx image file (magic {magic}, expected 2051)")
  return count


class LocalFashionMnist(mnist.FashionMNIST, skip_registration=True):
  """`fashion_mnist` read from `manual_dir` instead of downloaded."""

  name = "fashion_mnist"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir holds Fashion-MNIST's original files train-images-idx3-ubyte.gz, "
      "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
      f"(Debian's dataset-fashion-mnist installs them in {DEBIAN_DIR}).")

  def _split_generators(self, dl_manager):
    directory = os.fspath(dl_manager.manual_dir)
    splits = []
    for split, (images_stem, labels_stem) in FILES.items():
      # Gzipped files are extracted into the download dir; plain files are used in place.
      images, labels = dl_manager.extract([_local_file(directory, images_stem),
                                           _local_file(directory, labels_stem)])
      splits.append(tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
          num_examples=_num_images(os.fspath(images)), data_path=images, label_path=labels)))
    return splits
