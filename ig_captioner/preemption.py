"""Graceful stops: SIGTERM (a preempted pod, `scancel`, `kill`) and SIGINT (Ctrl-C) ask the
trainer to finish its step, save a checkpoint and exit 0, instead of losing the steps since the
last checkpoint. The decision to stop is taken by all processes together (`multihost.StepVote`),
so a signal that reaches one host stops every host at the same step.
"""

import signal
import threading

from absl import logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """While active (`with StopRequests() as stop:`), SIGTERM/SIGINT set `stop.signal_name`.

  A second signal is logged and otherwise ignored, so the checkpoint being written completes;
  SIGKILL still ends the process at once (the next start discards the unfinished save).
  Outside the main thread, where Python cannot catch signals, nothing is installed.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      for sig in STOP_SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    else:
      logging.warning("Training outside the main thread: SIGTERM/SIGINT will not save a "
                      "checkpoint before exiting.")
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, previous in self._previous.items():
      # None: a handler installed outside Python (e.g. by a C++ library); the default it is.
      signal.signal(sig, signal.SIG_DFL if previous is None else previous)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.signal_name is None:
      self.signal_name = name
      logging.warning("%s received: finishing the current step, then saving a checkpoint and "
                      "exiting.", name)
    else:
      logging.warning("%s received again: still stopping; waiting for the checkpoint to be "
                      "written (SIGKILL aborts without it).", name)
