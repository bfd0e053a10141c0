"""Console hygiene for the command-line entry points: our INFO lines, others' warnings only."""

import logging as py_logging
import os

from absl import logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# Warnings that say nothing actionable for this project's users.
_BENIGN_WARNINGS = (
    "Using custom data configuration",  # TFDS, for digits_captions' parametrized builder configs.
    "OpenCV is not installed",  # TFDS falls back to PIL, which is fine for our image sizes.
    "CheckpointManagerOptions.read_only=True",  # orbax, for the evaluator's read-only manager.
    "Given directory is read only",
)


class _OwnInfoOnly(py_logging.Filter):
  """Keeps WARNING+ (less known-benign ones) and INFO only from this package."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING:
      return not str(record.msg).startswith(_BENIGN_WARNINGS)
    return record.pathname.startswith(_PACKAGE_DIR)


def setup() -> None:
  """Call once at the start of `main`. Set IG_CAPTIONER_VERBOSE=1 to see all INFO logs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # TensorFlow is only used on the host (TFDS, TensorBoard): keep it off accelerators' memory.
  tf.config.set_visible_devices([], "GPU")
  logging.set_verbosity(logging.INFO)
  if not os.environ.get("IG_CAPTIONER_VERBOSE"):
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
