"""ImageNet-1k class names and CLIP's prompt templates, shipped with the package (provenance in
`metadata/PROVENANCE.md`)."""

import functools
import os

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metadata")


@functools.cache
def _lines(name: str) -> tuple[str, ...]:
  with open(os.path.join(_DIR, name), encoding="utf-8") as f:
    return tuple(line.rstrip("\n") for line in f if line.strip())


def class_names() -> tuple[str, ...]:
  """The 1,000 human-readable class names in label order (OpenAI's CLIP list)."""
  return _lines("imagenet_classnames.txt")


def clip_templates(simple: bool = False) -> tuple[str, ...]:
  """CLIP's 80 ImageNet templates, or its 7-template subset; `{}` marks the class name."""
  return _lines("clip_imagenet_templates_simple.txt" if simple else "clip_imagenet_templates.txt")
