"""Console hygiene for the command-line entry points: our INFO lines, others' warnings only."""

import logging as py_logging
import os
import sys
import threading

from absl import logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# Warnings that say nothing actionable for this project's users.
_BENIGN_WARNINGS = (
    "Using custom data configuration",  # TFDS, for digits_captions' parametrized builder configs.
    "OpenCV is not installed",  # TFDS falls back to PIL, which is fine for our image sizes.
    "CheckpointManagerOptions.read_only=True",  # orbax, for the evaluator's read-only manager.
    "Given directory is read only",
)


# asyncio's reports, at garbage collection, of errors that orbax's threads already logged.
_ASYNCIO_REPEATS = ("Task exception was never retrieved", "Future exception was never retrieved",
                    "_GatheringFuture exception was never retrieved")


class _OwnInfoOnly(py_logging.Filter):
  """Keeps WARNING+ (less known-benign ones) and INFO only from this package.

  Errors from orbax's background threads keep one line each (the first time a text is seen),
  without their tracebacks: a full disk otherwise prints thousands of lines of them, and the
  trainer's own error says what failed and what to do.
  """

  def __init__(self):
    super().__init__()
    self._seen = set()

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR and ("orbax" in record.pathname or
                                               record.name == "asyncio"):
      if str(record.msg).startswith(_ASYNCIO_REPEATS):
        return False
      text = record.getMessage().splitlines()[0][:300]
      if text in self._seen:
        return False
      self._seen.add(text)
      record.msg, record.args, record.exc_info, record.exc_text = text, None, None, None
      return True
    if record.levelno >= py_logging.WARNING:
      return not str(record.msg).startswith(_BENIGN_WARNINGS)
    return record.pathname.startswith(_PACKAGE_DIR)


def _is_leftover_noise(exc: BaseException | None) -> bool:
  """Errors of orbax's/tensorstore's leftover callbacks once their event loop or the interpreter
  is gone: they repeat an error already reported, hundreds of times."""
  return (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed") or (
      isinstance(exc, ImportError) and "sys.meta_path is None" in str(exc))


def _quiet_hooks() -> None:
  """Drops `_is_leftover_noise` from the hooks that print uncaught and unraisable errors."""
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
  thread_hook = threading.excepthook
  sys.excepthook = lambda t, e, tb: None if _is_leftover_noise(e) else excepthook(t, e, tb)
  sys.unraisablehook = lambda u: None if _is_leftover_noise(u.exc_value) else unraisablehook(u)
  threading.excepthook = lambda a: None if _is_leftover_noise(a.exc_value) else thread_hook(a)


def setup() -> None:
  """Call once at the start of `main`. Set IG_CAPTIONER_VERBOSE=1 to see all INFO logs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # TensorFlow is only used on the host (TFDS, TensorBoard): keep it off accelerators' memory.
  tf.config.set_visible_devices([], "GPU")
  logging.set_verbosity(logging.INFO)
  if not os.environ.get("IG_CAPTIONER_VERBOSE"):
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    _quiet_hooks()
