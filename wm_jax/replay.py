"""On-device replay: a flashbax trajectory buffer of env steps, with pure init / add / sample.

We use flashbax (made for exactly this: a pytree-of-arrays buffer whose add and sample run
inside jit) rather than a hand-written ring buffer. Layout: one row per env, time along the
second axis, capacity in steps split evenly over the rows; frames are stored as uint8.

Stored step (per env, no batch axis): the obs entries of the EnvSpec ('image' uint8
[H, W, 3], 'vector' float32 [D]), 'action' (the action that led to this obs, zeros where
is_first), 'reward' float32, 'is_first' / 'is_last' / 'is_terminal' bool.

Sampling draws [B, T] windows uniformly from one env row each; flashbax maps logical to
physical time so a window never straddles the write head. By design (as in DreamerV1-3) a
window may run across an episode boundary: the step where the new episode starts has
is_first=True, and the world model resets its recurrent state there.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flashbax
import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.envs.base import ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError

FLAG_KEYS = ("is_first", "is_last", "is_terminal")


def stored_spec(spec: EnvSpec) -> dict[str, ArraySpec]:
  """The per-step entries kept in replay, with their shapes (no batch axes) and dtypes."""
  entries = dict(spec.obs)
  entries["action"] = ArraySpec(spec.act.shape, spec.act.dtype)
  entries["reward"] = ArraySpec((), "float32")
  entries.update({k: ArraySpec((), "bool") for k in FLAG_KEYS})
  return entries


def replay_nbytes(spec: EnvSpec, capacity: int) -> int:
  """Bytes the buffer takes on device for `capacity` steps."""
  per_step = sum(int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
                 for s in stored_spec(spec).values())
  return per_step * capacity


class Replay(NamedTuple):
  """Pure functions over a flashbax TrajectoryBufferState (all jittable).

  init()                    -> state
  add(state, step)          -> state      step: stored entries with leading axis [N]
  sample(state, key)        -> batch      batch: stored entries with leading axes [B, T]
  can_sample(state)         -> bool array (enough steps in every row for one window)
  """
  init: Callable
  add: Callable
  sample: Callable
  can_sample: Callable


def check_fits(capacity: int, num_envs: int, batch_length: int) -> None:
  """One sentence when a buffer of `capacity` steps over N env rows cannot hold one sequence."""
  steps_per_env = capacity // num_envs
  if steps_per_env < batch_length:
    raise RunConfigError(
        f"run.replay_capacity={capacity} over {num_envs} envs keeps {steps_per_env} steps per "
        f"env, fewer than run.batch_length={batch_length}: raise run.replay_capacity or lower "
        f"run.batch_length.")


def make_replay(spec: EnvSpec, num_envs: int, capacity: int, batch_size: int,
                batch_length: int) -> Replay:
  """Builds the buffer for N envs holding `capacity` steps, sampling [batch_size, batch_length]."""
  check_fits(capacity, num_envs, batch_length)
  steps_per_env = capacity // num_envs
  buffer = flashbax.make_trajectory_buffer(
      add_batch_size=num_envs, sample_batch_size=batch_size,
      sample_sequence_length=batch_length, period=1,
      min_length_time_axis=batch_length, max_length_time_axis=steps_per_env)
  example = {k: jnp.zeros(s.shape, s.dtype) for k, s in stored_spec(spec).items()}

  def add(state, step):
    """Appends one step of N envs: leaves [N, ...] -> a time slice of length 1."""
    return buffer.add(state, jax.tree.map(lambda x: x[:, None], step))

  def sample(state, key):
    return buffer.sample(state, key).experience

  return Replay(init=lambda: buffer.init(example), add=add, sample=sample,
                can_sample=buffer.can_sample)


def to_stored(step: dict, action, spec: EnvSpec) -> dict:
  """Selects the stored entries of an env Step and attaches the action that led to it.

  action: [N] or [N, A], the action sent to the env that produced `step`; zeroed where
  is_first, because an auto-reset ignores it.
  """
  keys = stored_spec(spec)
  out = {k: step[k] for k in keys if k != "action"}
  first = jnp.asarray(step["is_first"]).reshape((-1,) + (1,) * (jnp.ndim(action) - 1))
  out["action"] = jnp.where(first, jnp.zeros_like(action), action)
  return out
