"""What the command-line entry points share: config overrides checked before absl parses them,
and failures a user can fix printed as one message at the end, without a traceback.

    cli.run(main)   # instead of app.run(main); `main(argv)` as for absl

- `--config.optimizer.lr=1e-3` (no such field) fails naming the flag and the valid fields;
- `--config.FIELD=None` sets a field to None (absl's parser cannot, e.g. for `keep_checkpoints`);
- an `errors.UserError` (bad config, data, checkpoint, disk) prints `error: <message>` and exits
  1 at once, skipping the interpreter shutdown in which orbax's and asyncio's leftover threads
  print pages of tracebacks. Everything was closed (checkpoints committed) before it got there.
  Set IG_CAPTIONER_VERBOSE=1 for full tracebacks and logs.
"""

import difflib
import logging as py_logging
import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import ml_collections

from ig_captioner import config_lib
from ig_captioner import console
from ig_captioner import errors

_NONE_VALUES = ("None", "none", "null")


def _exit(code: int, message: str | None = None) -> None:
  """Flushes everything, prints `message` last, and exits without interpreter shutdown."""
  for handler in logging.get_absl_logger().handlers + py_logging.getLogger().handlers:
    handler.flush()
  sys.stdout.flush()
  if message:
    sys.stderr.write(f"\nerror: {message}\n")
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def _config_file_arg(argv: list[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_field(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """Why `config.<dotted>` does not exist (naming the valid fields), or None if it does."""
  node, walked = config, "config"
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{walked} is a value ({node!r}), not a group of fields"
    if part not in node:
      fields = sorted(node.keys())
      close = difflib.get_close_matches(part, fields, n=1)
      hint = f" Did you mean {walked}.{close[0]}?" if close else ""
      return f"{walked} has no field {part!r}; its fields are: {', '.join(fields)}.{hint}"
    node, walked = node[part], f"{walked}.{part}"
  return None


def split_overrides(argv: list[str], config: ml_collections.ConfigDict,
                    name: str = "config") -> tuple[list[str], list[str]]:
  """Checks every `--config.X=V` of argv against `config`; returns (argv without the `=None`
  overrides, the fields they set to None). Raises ConfigError for an unknown field."""
  kept, to_none = [], []
  for arg in argv:
    if arg.startswith(f"--{name}."):
      dotted, _, value = arg[len(name) + 3:].partition("=")
      problem = unknown_field(config, dotted)
      if problem:
        raise errors.ConfigError(f"unknown config field in {arg}: {problem}")
      if value in _NONE_VALUES:
        to_none.append(dotted)
        continue
    kept.append(arg)
  return kept, to_none


def run(main, config_flag: str = "config") -> None:
  """`app.run(main)` with the checks and the failure output described in the module docstring."""
  to_none = []

  def parse(argv):
    nonlocal to_none
    config_arg = _config_file_arg(argv, config_flag)
    if config_arg is not None:
      try:
        _, config = config_lib.load_file(config_arg)
        argv, to_none = split_overrides(argv, config, config_flag)
      except errors.UserError as e:
        _exit(2, str(e))
    return app.parse_flags_with_usage(argv)

  def main_with_clean_failures(argv):
    console.setup()
    if to_none:
      config = flags.FLAGS[config_flag].value
      for dotted in to_none:
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
          node = node[p]
        node[leaf] = None
    try:
      main(argv)
    except errors.UserError as e:
      if os.environ.get("IG_CAPTIONER_VERBOSE"):
        traceback.print_exc()
      _exit(1, str(e))
    except KeyboardInterrupt:
      _exit(130, "interrupted")

  app.run(main_with_clean_failures, flags_parser=parse)
