"""Agreement between JAX processes on host-side decisions (which checkpoint, whether to stop).

Every process reads the checkpoint directory itself, and on a shared file system they can see it
at different moments; a signal or a failed write may reach one process only. A decision that
leads to collective work must be the same everywhere, or the processes deadlock:
- `agree` makes process 0's value everyone's;
- `most` gives every process the largest of their values (any process can raise an alarm);
- `StepVote` does what `most` does once per train step, one step late, so that the host never
  waits for the device to agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P


def agree(value: int) -> int:
  """Process 0's `value` on every process (a no-op with one process)."""
  if jax.process_count() == 1:
    return int(value)
  return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def most(value: int) -> int:
  """The largest `value` over all processes, on every process (a no-op with one process)."""
  if jax.process_count() == 1:
    return int(value)
  return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


class StepVote:
  """Each step every process votes a small int (0 = carry on); all act on the largest vote.

  With one process the vote is its own, at once. With several, the votes of step k are reduced
  on the mesh while step k+1 runs and read after it is dispatched: every process gets the same
  answer at the same step, and the host stays at most one step ahead of the device.
  """

  def __init__(self, mesh: jax.sharding.Mesh):
    self._single = jax.process_count() == 1
    self._votes_sharding = NamedSharding(mesh, P(mesh.axis_names))  # One vote per device.
    self._local_devices = len(mesh.local_devices)
    self._reduce = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
    self._in_flight = None

  def __call__(self, vote: int) -> int:
    """Casts this step's vote; returns the largest vote of the previous step (0 at first)."""
    if self._single:
      return int(vote)
    local = np.full((self._local_devices,), vote, np.int32)
    votes = jax.make_array_from_process_local_data(self._votes_sharding, local)
    previous, self._in_flight = self._in_flight, self._reduce(votes)
    return 0 if previous is None else int(np.asarray(previous.addressable_data(0)))
