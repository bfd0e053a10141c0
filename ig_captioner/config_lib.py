"""Config files: their argument parsing and their loading.

Config files (`configs/*.py`) define `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/demo.py:runlocal,steps=100` and is parsed by `parse_arg`. What configs share
is in `ig_captioner.recipes`; checking a config's values is `experiment.validate`.
"""

import importlib.util
import os

import ml_collections

from ig_captioner import errors


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,steps=100' -> {runlocal: True, steps: 100}, typed like `defaults`."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise errors.ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not sep:
      value = True
    elif isinstance(defaults[key], bool):
      value = value.lower() in ("1", "true", "yes")
    else:
      try:
        value = type(defaults[key])(value)
      except ValueError as e:
        raise errors.ConfigError(f"config argument {key}={value!r} is not a "
                                 f"{type(defaults[key]).__name__}") from e
    parsed[key] = value
  return parsed


def load_file(config_arg: str):
  """(module, config) for 'path/to/config.py[:args]', as `--config=` flags load it."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise errors.ConfigError(f"config file {path} does not exist (from {config_arg!r})")
  spec = importlib.util.spec_from_file_location("loaded_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(arg or None)
