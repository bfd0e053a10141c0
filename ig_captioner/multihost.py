"""Agreement between JAX processes on host-side decisions (which checkpoint, whether to stop).

Every process reads the checkpoint directory itself, and on a shared file system they can see it
at different moments. A decision that leads to collective work must be the same everywhere, or
the processes deadlock; `agree` makes process 0's value everyone's.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils


def agree(value: int) -> int:
  """Process 0's `value` on every process (a no-op with one process)."""
  if jax.process_count() == 1:
    return int(value)
  return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))
