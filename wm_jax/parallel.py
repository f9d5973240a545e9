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
  """Starts multi-host JAX when a coordinator is configured (TPU pods, SLURM, ...)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("WM_JAX_DISTRIBUTED"):
    jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over all (or the given) devices."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  """One sentence if the global batch cannot be split evenly over the devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise RunConfigError(f"run.batch_size={batch_size} does not split over {n} devices: use "
                         f"a multiple of {n}.")


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on all devices of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh):
  """Splits every leaf's leading (batch) axis over the mesh axis 'data'."""
  return jax.device_put(batch, NamedSharding(mesh, P("data")))


def data_parallel(update_fn, mesh: Mesh):
  """jit(update_fn(state, batch, key) -> (state, metrics)) with the batch sharded on 'data'.

  The old state is not donated: the loop keeps it to checkpoint the last good state when a
  loss turns non-finite.
  """
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P("data"))
  return jax.jit(update_fn, in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated))
