"""A profile of a few train steps on demand: `config.profile = dict(start_step=S,
num_steps=N)` (and `all_processes=True` to trace every process, not process 0 alone) writes a
jax.profiler trace of steps S .. S+N-1 under WORKDIR/tb/profile, which TensorBoard's profile
plugin reads:

    pip install tensorboard tensorboard-plugin-profile
    tensorboard --logdir WORKDIR/tb      # the PROFILE tab

Each traced step is marked (`StepTraceAnnotation('train', step_num=...)`), so the plugin's
overview splits the trace by step; the trace stops after the last step's outputs are ready.
"""

import contextlib

from absl import logging
import jax
import ml_collections

from ig_captioner import errors
from ig_captioner import paths


def validate(config: ml_collections.ConfigDict) -> None:
  profile = config.get("profile")
  if not profile:
    return
  for field in ("start_step", "num_steps"):
    value = profile.get(field)
    if not isinstance(value, int) or value < 1:
      raise errors.ConfigError(f"config.profile.{field}={value!r} is invalid: a positive "
                               "integer (e.g. --config.profile='dict(start_step=10, "
                               "num_steps=3)')")


class StepProfile:
  """Starts and stops the trace around the configured steps of one process."""

  def __init__(self, profile: ml_collections.ConfigDict | None, workdir: str):
    self.directory = paths.join(workdir, "tb", "profile")
    self._first = self._last = None
    if profile and (profile.get("all_processes") or jax.process_index() == 0):
      self._first = int(profile.start_step)
      self._last = self._first + int(profile.num_steps) - 1
    self._tracing = False

  @contextlib.contextmanager
  def step(self, step: int):
    """Around the work of train step `step` (counted from 1)."""
    if self._first is not None and step == self._first and not self._tracing:
      jax.profiler.start_trace(self.directory)
      self._tracing = True
    if self._tracing:
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        yield
    else:
      yield

  def after(self, step: int, outputs) -> None:
    """After step `step`: the trace stops once the last traced step's `outputs` are ready."""
    if self._tracing and step >= self._last:
      jax.block_until_ready(outputs)
      self.stop()
      logging.info("Profile of steps %d-%d written under %s (tensorboard --logdir %s)",
                   self._first, self._last, self.directory,
                   paths.path(self.directory).parent)

  def stop(self) -> None:
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False
