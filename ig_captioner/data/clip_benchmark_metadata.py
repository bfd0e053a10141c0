"""LAION-AI CLIP_benchmark's English class names and zero-shot templates per data set, shipped
with the package (provenance: `metadata/PROVENANCE.md`), so that zero-shot figures use the
prompts of published CLIP_benchmark tables. Keys are CLIP_benchmark's (`cifar10`, `imagenet1k`,
`pets`, `caltech101_vtab`, ...)."""

import functools
import importlib.resources
import json

from ig_captioner import errors

PREFIX = "clip_benchmark:"  # `class_names` settings naming one of these lists.


@functools.cache
def _read(name: str) -> dict:
  text = importlib.resources.files("ig_captioner.data").joinpath("metadata", name).read_text(
      encoding="utf-8")
  return json.loads(text)


def class_names(key: str) -> tuple[str, ...]:
  """The class names of `key`, in label order."""
  names = _read("clip_benchmark_classnames.json")
  if key not in names:
    raise errors.ConfigError(f"CLIP_benchmark has no class names for {key!r}; it has them for "
                             f"{sorted(names)}")
  return tuple(names[key])


def templates(*keys: str) -> tuple[str, ...]:
  """The templates of the first of `keys` CLIP_benchmark has, else ImageNet's 80 (as its
  look-up falls back); `{}` marks the class name (CLIP_benchmark writes `{c}`)."""
  table = _read("clip_benchmark_templates.json")
  key = next((k for k in keys if k in table), "imagenet1k")
  return tuple(t.replace("{c}", "{}") for t in table[key])
