"""Errors a user can cause and fix: a bad config value, missing or corrupt data, an unreadable
checkpoint, a full disk. Their messages name the problem and the fix, so the command-line entry
points print them without a traceback (`cli.run`); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Base class of the errors above."""


class ConfigError(UserError, ValueError):
  """A config value (or command-line override) that cannot work."""


class OutputError(UserError, OSError):
  """A run's outputs (metrics, TensorBoard files) cannot be written."""
