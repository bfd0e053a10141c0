"""What a config file may define for the sweep (`tools/sweep.py`), declared once:

    sweep(add)                          the runs (required to sweep the config): one
                                        `add(label=..., arg=..., seeds=..., **overrides)` each
    sweep_tables() -> (tables, alphas)  what the sweep prints: [(title, {column: metric})] and
                                        the alphas whose rows caption scoring shows (optional;
                                        default: one table per evaluator)
    sweep_report(results, workdir, runs) -> str
                                        the config's own analysis printed after the tables
                                        (optional)
    EVALUATE_EVERY_CHECKPOINT = True    evaluate every kept checkpoint, not only the last
                                        (optional)

Any other `sweep_*` name in a config is refused, so that a typo is not silently ignored.
"""

import dataclasses
from types import ModuleType
from typing import Callable

from ig_captioner import errors

HOOKS = ("sweep", "sweep_tables", "sweep_report", "EVALUATE_EVERY_CHECKPOINT")


@dataclasses.dataclass(frozen=True)
class SweepHooks:
  """A config module's hooks (None where it defines none)."""
  sweep: Callable
  tables: Callable | None
  report: Callable | None
  evaluate_every_checkpoint: bool


def of(module: ModuleType, config_path: str) -> SweepHooks:
  """The hooks `module` (loaded from `config_path`) defines; ConfigError for a config without
  `sweep(add)` or with a `sweep_*` name that is no hook."""
  unknown = sorted(name for name in vars(module)
                   if name.lower().startswith("sweep") and name not in HOOKS)
  if unknown:
    raise errors.ConfigError(f"{config_path} defines {unknown}, which the sweep does not read; "
                             f"its hooks are {list(HOOKS)} (ig_captioner/tools/sweep_hooks.py)")
  if not callable(getattr(module, "sweep", None)):
    raise errors.ConfigError(f"{config_path} defines no sweep(add): the sweep needs one that "
                             "lists its runs (see configs/demo.py)")
  for name in ("sweep_tables", "sweep_report"):
    if hasattr(module, name) and not callable(getattr(module, name)):
      raise errors.ConfigError(f"{config_path}: {name} must be a function")
  return SweepHooks(module.sweep, getattr(module, "sweep_tables", None),
                    getattr(module, "sweep_report", None),
                    bool(getattr(module, "EVALUATE_EVERY_CHECKPOINT", False)))
