"""Behaviour learners and the registry that maps a config's `method` to its agent builder."""

from __future__ import annotations

import importlib

from wm_jax.agents.base import Agent
from wm_jax.envs.base import EnvSpec, check_name

# method -> "module:builder"; builders take (agent_config, EnvSpec) and return an Agent.
BUILDERS = {
    "random": "wm_jax.agents.random_agent:make_random",
    "dreamerv1": "wm_jax.agents.dreamer:make_dreamer",
    "dreamerv2": "wm_jax.agents.dreamer:make_dreamer",
    "dreamerv3": "wm_jax.agents.dreamer:make_dreamer",
}


def make_agent(method: str, agent_config, spec: EnvSpec) -> Agent:
  """Builds the Agent of `method` for an env with `spec`."""
  check_name("method", method, list(BUILDERS))
  module, builder = BUILDERS[method].split(":")
  return getattr(importlib.import_module(module), builder)(agent_config, spec)
