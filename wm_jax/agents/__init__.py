"""Behaviour learners and the registry that maps a config's `method` to its agent builder."""

from __future__ import annotations

import importlib

from wm_jax.agents.base import Agent, WorldModel
from wm_jax.envs.base import EnvSpec, check_name

# method -> "module:builder"; builders take (agent_config, EnvSpec) and return an Agent.
BUILDERS = {
    "random": "wm_jax.agents.random_agent:make_random",
    "dreamerv1": "wm_jax.agents.dreamer:make_dreamer",
    "dreamerv2": "wm_jax.agents.dreamer:make_dreamer",
    "dreamerv3": "wm_jax.agents.dreamer:make_dreamer",
    "planet": "wm_jax.agents.dreamer:make_dreamer",   # agent.behavior='cem'
    "plan2explore": "wm_jax.agents.plan2explore:make_plan2explore",
    "iris": "wm_jax.agents.iris:make_iris",
    "storm": "wm_jax.agents.storm:make_storm",
    "diamond": "wm_jax.agents.diamond:make_diamond",
}


# method -> "module:builder" of the world model alone, for offline training
# (experiments.train_offline); builders take (agent_config, EnvSpec) and return a WorldModel.
WORLD_MODEL_BUILDERS = {
    "dreamerv1": "wm_jax.agents.dreamer:make_dreamer_world_model",
    "dreamerv2": "wm_jax.agents.dreamer:make_dreamer_world_model",
    "dreamerv3": "wm_jax.agents.dreamer:make_dreamer_world_model",
    "planet": "wm_jax.agents.dreamer:make_dreamer_world_model",
    "storm": "wm_jax.agents.storm:make_storm_world_model",
    "iris": "wm_jax.agents.iris:make_iris_world_model",
    "diamond": "wm_jax.agents.diamond:make_diamond_world_model",
    "world_models": "wm_jax.agents.world_models:make_world_models_world_model",
}


def _module_and_builder(method: str):
  check_name("method", method, list(BUILDERS))
  module, builder = BUILDERS[method].split(":")
  return importlib.import_module(module), builder


def make_agent(method: str, agent_config, spec: EnvSpec) -> Agent:
  """Builds the Agent of `method` for an env with `spec`."""
  module, builder = _module_and_builder(method)
  return getattr(module, builder)(agent_config, spec)


def make_world_model(method: str, agent_config, spec: EnvSpec) -> WorldModel:
  """Builds the offline-trainable WorldModel of `method` for an env with `spec`."""
  check_name("method with an offline world model", method, list(WORLD_MODEL_BUILDERS))
  module, builder = WORLD_MODEL_BUILDERS[method].split(":")
  return getattr(importlib.import_module(module), builder)(agent_config, spec)


def check_agent_config(method: str, agent_config, run_config) -> None:
  """Runs the method's start-up checks, `check_agent_config(agent_config, run_config)` of its module if it has one (the run config gives batch and sequence sizes)."""
  module, _ = _module_and_builder(method)
  check = getattr(module, "check_agent_config", None)
  if check is not None:
    check(agent_config, run_config)
