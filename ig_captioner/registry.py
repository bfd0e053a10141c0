"""Name -> module resolution for the packages whose members are chosen by config: a model family
by `config.model.name`, an objective by `config.objective.name`, an evaluator by `type`.

A member is a public module of the package that defines the package's marker attribute (e.g.
`build` for model families); `resolve` imports it by name, as big_vision does, so adding a member
means adding a module and nothing else.
"""

import importlib
import pkgutil
from types import ModuleType

from ig_captioner import errors


def members(package: str, marker: str) -> list[str]:
  """Names of the public modules of `package` that define `marker`."""
  path = importlib.import_module(package).__path__
  names = []
  for info in pkgutil.iter_modules(path):
    if not info.name.startswith("_") and hasattr(
        importlib.import_module(f"{package}.{info.name}"), marker):
      names.append(info.name)
  return sorted(names)


def resolve(package: str, marker: str, name: str, field: str,
            renamed: dict[str, str] | None = None) -> ModuleType:
  """The member `name` of `package`; a ConfigError naming `field` and the known names else
  (and the new name of a member `renamed` maps from its old one)."""
  if renamed and name in renamed:
    raise errors.ConfigError(f"{field}={name!r} was renamed: set {field}={renamed[name]!r}")
  known = members(package, marker)
  if name not in known:
    raise errors.ConfigError(f"{field}={name!r} is unknown; known: {known}")
  return importlib.import_module(f"{package}.{name}")
