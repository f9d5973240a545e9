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
  phase            = agent.schedule(updates)                   (None for one-phase agents)
      Agents whose components start at different update counts (IRIS, DIAMOND) say on the
      host which train at update count `updates` (a hashable phase); their update then takes
      it as a fourth, static argument, `agent.update(state, batch, key, phase)`, and is
      compiled once per phase (wm_jax/agents/components.py says why not `lax.cond`).

A `WorldModel` is the world-model part of an agent, trained offline on a dataset
(experiments.train_offline) and used as an env (DESIGN.md's world-model-as-env interface):

  state            = world_model.init(key)        {'params', 'opt', 'step'}
  state, metrics   = world_model.update(state, batch, key, world_model.schedule(updates))
      batch as for agent.update; the phase as for a scheduled agent
  sim              = world_model.reset_from(params, context, key)
      context: real steps {'image' uint8 [B, C, H, W, 3], 'action' [B, C] (led to each
      frame), 'is_first' bool [B, C]}, C >= context_length; sim: the model's state at the
      context's last frame.
  sim, obs, reward, cont = world_model.step(params, sim, action, key)
      action [B] taken at the current frame; obs {'image': float32 [B, H, W, 3] in [0, 1]},
      reward [B], cont [B] in {0, 1}.

`train_ratio` (replayed steps per env step, DreamerV3's definition) and the batch shape live
in the run config, not here, so the loop schedules updates the same way for every method.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

AgentState = Any
Carry = Any


def jit_init(init: Callable) -> Callable:
  """`init(key)` jitted without LLVM optimisation. It runs once: run eagerly, every op compiles
  on its own (STORM: 14.6 s against 5.5 s jitted on a CPU, and over 40 s on an H100 where each
  compile is slower); unoptimised, IRIS's ~600 threefry hashes (flax folds the key into every
  parameter's path) compile in ~6 s instead of ~18 s."""
  return jax.jit(init, compiler_options={"xla_backend_optimization_level": 0})


class Agent(NamedTuple):
  init: Callable[..., AgentState]
  initial_carry: Callable[[int], Carry]
  act: Callable[..., tuple[Any, Carry]]
  update: Optional[Callable[..., tuple[AgentState, dict]]] = None
  schedule: Optional[Callable[[int], Any]] = None


class WorldModel(NamedTuple):
  init: Callable[..., Any]
  update: Callable[..., tuple[Any, dict]]
  schedule: Callable[[int], Any]
  reset_from: Callable[..., Any]
  step: Callable[..., tuple]
  context_length: int   # real frames the model conditions on
