"""The uniform random policy as an `Agent` (no parameters, no updates)."""

from __future__ import annotations

import jax

from wm_jax.agents.base import Agent
from wm_jax.envs.base import EnvSpec


def make_random(config, spec: EnvSpec) -> Agent:
  """Random actions: int32 [N] uniform over the actions, or float32 [N, A] uniform in [low, high]."""
  del config
  act_spec = spec.act

  def act(state, carry, obs, key, explore):
    del state, explore
    n = obs["is_first"].shape[0]
    if act_spec.discrete:
      return jax.random.randint(key, (n,), 0, act_spec.num_actions), carry
    return jax.random.uniform(key, (n, act_spec.dim), minval=act_spec.low,
                              maxval=act_spec.high), carry

  return Agent(init=lambda key: {}, initial_carry=lambda n: (), act=act, update=None)
