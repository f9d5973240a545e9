"""A run of experiments.train read back: its agent at the latest checkpoint, to act
(experiments.collect --policy=RUN_DIR), and that agent's world model, to evaluate it offline
beside world models trained on a dataset (benchmarks.wm_quality --runs=RUN_DIR).

Only the checkpoint's 'agent' part is read (not the replay), and its counters (agent_step,
updates, wall_seconds). A run whose agent does not fit the env or dataset at hand is refused
in one sentence.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from wm_jax.agents import WORLD_MODEL_BUILDERS, make_agent, make_world_model
from wm_jax.agents.base import Agent, WorldModel
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.train import with_added_fields


def _as_tuples(value):
  """JSON lists back to the tuples a config holds (module fields must be hashable)."""
  if isinstance(value, dict):
    return {k: _as_tuples(v) for k, v in value.items()}
  return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def is_run_dir(path: str) -> bool:
  return os.path.exists(os.path.join(path, "config.json"))


def run_config(run_dir: str) -> ml_collections.ConfigDict:
  """The config.json of a run directory as a ConfigDict."""
  if not is_run_dir(run_dir):
    raise RunConfigError(f"{run_dir} is not a run directory of experiments.train (no "
                         f"config.json there): pass the --workdir of a training run.")
  with open(os.path.join(run_dir, "config.json")) as f:
    return ml_collections.ConfigDict(_as_tuples(with_added_fields(json.load(f))))


def load_agent(run_dir: str, spec: EnvSpec, seed: int = 0
               ) -> tuple[ml_collections.ConfigDict, Agent, dict, dict]:
  """(config, agent, agent state, counters) of the run's latest checkpoint, for an env of
  `spec`; one sentence if the run has no checkpoint or its agent does not fit `spec`."""
  config = run_config(run_dir)
  agent = make_agent(config.method, config.agent, spec)
  template = agent.init(jax.random.PRNGKey(seed))
  ckpt = Checkpointer(run_dir)
  try:
    restored = ckpt.restore_part("agent", template)
  finally:
    ckpt.close()
  if restored is None:
    raise RunConfigError(f"{run_dir} has no checkpoint yet: train it first.")
  state, counters = restored
  saved, wanted = jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(template)
  if len(saved) != len(wanted):
    raise RunConfigError(f"The checkpoint of {run_dir} does not hold the agent its config.json "
                         f"describes: pass a run directory of experiments.train.")
  for (path, have), want in zip(saved, wanted):
    if have.shape != want.shape:
      raise RunConfigError(
          f"The agent of {run_dir} does not fit this env ({jax.tree_util.keystr(path)} is "
          f"{have.shape} in the run, {want.shape} here): use the env the run trained on.")
  return config, agent, state, counters


def world_model_params(agent_state: dict):
  """The world model's params inside an agent's state, as its WorldModel's reset_from and step
  take them: state['wm'] (the RSSM family, STORM) or state['params'] (IRIS, DIAMOND: the
  components by name; the actor-critic's beside them go unused)."""
  return agent_state["wm"] if "wm" in agent_state else agent_state["params"]


def load_world_model(run_dir: str, spec: EnvSpec, seed: int = 0
                     ) -> tuple[ml_collections.ConfigDict, WorldModel, dict, dict]:
  """(config, world model, {'params': its params}, counters) of the run's latest checkpoint:
  the world model its agent trained online, in the form offline.evaluate takes."""
  config = run_config(run_dir)
  if config.method not in WORLD_MODEL_BUILDERS:
    raise RunConfigError(f"{run_dir} is a {config.method} run, which has no world model to "
                         f"evaluate; runs of {', '.join(WORLD_MODEL_BUILDERS)} have one.")
  config, _, state, counters = load_agent(run_dir, spec, seed)
  world_model = make_world_model(config.method, config.agent, spec)
  return config, world_model, {"params": world_model_params(state)}, counters
