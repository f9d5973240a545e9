"""Data parallelism over a 1-D device mesh, one code path from 1 CPU to a TPU pod.

The global batch is split along its leading axis over the mesh axis 'data'; params and
optimiser state are replicated. `jax.jit` with these shardings lets XLA insert the gradient
all-reduce, so the update function itself stays a plain function of the global batch (the
8-device update equals the 1-device one up to float reduction order).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wm_jax.errors import RunConfigError


def maybe_initialize_distributed() -> None:
  """Starts multi-process JAX when a coordinator is configured.

  On a TPU pod or under SLURM, `WM_JAX_DISTRIBUTED=1` lets JAX detect the cluster. Elsewhere
  set JAX_COORDINATOR_ADDRESS=host:port, WM_JAX_NUM_PROCESSES and WM_JAX_PROCESS_ID in every
  process (CPU processes exchange gradients through gloo, JAX's default).
  """
  if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("WM_JAX_DISTRIBUTED")):
    return
  count, index = os.environ.get("WM_JAX_NUM_PROCESSES"), os.environ.get("WM_JAX_PROCESS_ID")
  jax.distributed.initialize(num_processes=int(count) if count else None,
                             process_id=int(index) if index else None)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over all (or the given) devices."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  """One sentence if the global batch cannot be split evenly over the devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise RunConfigError(f"run.batch_size={batch_size} does not split over {n} devices: use "
                         f"a multiple of {n}.")


def _global_arrays(tree, sharding: NamedSharding):
  """Host-local leaves -> global arrays: a device_put in one process; across processes each
  process gives its own part (the whole of a replicated value, its rows of a sharded one)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on all devices of the mesh (every process passes the same tree)."""
  return _global_arrays(tree, NamedSharding(mesh, P()))


def _batch_sharding(mesh: Mesh, batch_axis: int) -> NamedSharding:
  return NamedSharding(mesh, P(*[None] * batch_axis, "data"))


def shard_batch(batch, mesh: Mesh, batch_axis: int = 0):
  """Splits every leaf's batch axis (the leading one, or 1 behind a seed axis) over the mesh
  axis 'data'; across processes each process passes its own rows and the global batch is
  their concatenation in process order."""
  return _global_arrays(batch, _batch_sharding(mesh, batch_axis))


def data_parallel(update_fn, mesh: Mesh, batch_axis: int = 0):
  """jit(update_fn(state, batch, key) -> (state, metrics)) with the batch sharded on 'data'
  along `batch_axis` (1 for a seed-vmapped update, whose leaves lead with the seed axis).

  The old state is not donated: the loop keeps it to checkpoint the last good state when a
  loss turns non-finite.
  """
  replicated = NamedSharding(mesh, P())
  sharded = _batch_sharding(mesh, batch_axis)
  return jax.jit(update_fn, in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated))
