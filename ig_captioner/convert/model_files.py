"""An architecture named by `--model`: a preset of the package's presets file, or the path of a
JSON file holding the source codebase's own model config."""

import json
import os
from typing import Callable

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.convert import safetensors_io


def read_presets(file_name: str) -> dict[str, dict]:
  """The presets in `file_name` beside this module (keys starting with '_' are notes)."""
  with open(os.path.join(os.path.dirname(__file__), file_name), encoding="utf-8") as f:
    return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def load(name_or_path: str, known: dict[str, dict], looks_right: Callable[[object], bool],
         source: str, what: str, needs: str) -> dict:
  """`known[name_or_path]`, or the JSON file `name_or_path` if `looks_right` of its content;
  ConfigError otherwise, listing the known names. `source` names what the presets are ('open_clip
  architecture'), `what` the kind of file ('an open_clip model config'), `needs` what it holds."""
  if name_or_path in known:
    return known[name_or_path]
  if not name_or_path.endswith(".json"):
    raise errors.ConfigError(f"--model={name_or_path!r} is not a known {source}; known: "
                             f"{', '.join(sorted(known))}; or pass the path of a .json file with "
                             f"{what}")
  if not paths.path(name_or_path).exists():
    raise errors.ConfigError(f"--model={name_or_path}: no such file")
  try:
    arch = json.loads(paths.path(name_or_path).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.ConfigError(f"--model={name_or_path} is not JSON: {e}") from None
  if not looks_right(arch):
    raise errors.ConfigError(f"--model={name_or_path} is not {what} ({needs})")
  return arch


def _listed(names, limit: int = 8) -> str:
  names = sorted(names)
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def check_fit(missing, unexpected, misshaped) -> None:
  """WeightsError naming the missing, unexpected and mis-shaped arrays of a weights file that
  does not fit the architecture named by --model; nothing if all three are empty."""
  problems = []
  if missing:
    problems.append(f"missing {_listed(missing)}")
  if unexpected:
    problems.append(f"unexpected {_listed(unexpected)}")
  if misshaped:
    problems.append(f"mis-shaped {_listed(misshaped, 4)}")
  if problems:
    raise safetensors_io.WeightsError("the weights do not fit this architecture (" +
                                      "; ".join(problems) + "): pass the --model they were "
                                      "trained as")
