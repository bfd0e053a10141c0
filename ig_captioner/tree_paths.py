"""Names of pytree leaves: 'decoder/block0/mlp/fc1/kernel' (dict keys, sequence indices and
dataclass fields joined by '/'), as checkpoint digests and param-selecting regexes use them."""

from typing import Any

import jax


def path_name(path) -> str:
  """The '/'-joined name of one `jax.tree_util` key path."""
  parts = []
  for entry in path:
    for attr in ("key", "idx", "name"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def leaf_names(tree: Any) -> list[str]:
  """Every leaf's name, in flattening order."""
  return [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
