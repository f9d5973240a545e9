"""The contract between an agent (world model + behaviour) and the generic loop in train.py.

An `Agent` is a bundle of pure functions. The loop jits them and knows nothing else:

  state            = agent.init(key)
      AgentState: any pytree (params, optimiser states, normaliser statistics, ...).
  carry            = agent.initial_carry(num_envs)
      Recurrent acting state for N envs (e.g. the RSSM's (h, z, prev action)); a pytree.
  action, carry    = agent.act(state, carry, obs, key, explore)
      obs: the env Step as jax arrays ('image' uint8 [N, H, W, 3] and/or 'vector' [N, D],
      'reward' [N], 'is_first' [N] bool, ...). The agent resets its carry where is_first.
      explore is a Python bool (static): True while collecting, False in evaluation.
      action: int32 [N] (discrete) or float32 [N, A] in [-1, 1] (continuous).
  state, metrics   = agent.update(state, batch, key)        (None for agents that do not learn)
      batch: replay sequences, leading axes [B, T]:
        obs keys ('image' uint8 [B, T, H, W, 3], 'vector' float32 [B, T, D]),
        'action' [B, T] int32 or [B, T, A] float32: the action that *led to* obs[t]
                 (zeros where is_first), as in DreamerV1/V2's replay,
        'reward' float32 [B, T], 'is_first' / 'is_last' / 'is_terminal' bool [B, T].
      metrics: dict of scalar jax arrays; keys ending in '_loss' are checked for NaN/inf.

`train_ratio` (replayed steps per env step, DreamerV3's definition) and the batch shape live
in the run config, not here, so the loop schedules updates the same way for every method.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

AgentState = Any
Carry = Any


class Agent(NamedTuple):
  init: Callable[..., AgentState]
  initial_carry: Callable[[int], Carry]
  act: Callable[..., tuple[Any, Carry]]
  update: Optional[Callable[..., tuple[AgentState, dict]]] = None
