"""Collect an offline dataset of trajectories (wm_jax/dataset.py) from any env of the suite:

  python -m experiments.collect --config=experiments/configs/random.py:atari100k \\
      --config.env.task=Breakout --steps=50000 --out=data/breakout_random

The env (suite, task, protocol card, number of envs) comes from `--config`'s `env` section.
`--policy=random` (the default) acts uniformly at random; `--policy=random_controller` with
World Models' config (experiments/configs/world_models.py) drives each episode with a new
randomly initialised controller, the random rollouts of Ha's code; `--policy=RUN_DIR` acts with the
agent of a run of `experiments.train` (its config.json and latest checkpoint), sampling its
actions (`--explore`, the default) or taking its evaluation actions (`--noexplore`);
`--policy=OUT/controller_dream.pkl` acts with a World Models controller of
`experiments.world_models` (with `controller.explore_std` Gaussian action noise under
`--explore`).

Rerunning the same command resumes: the dataset keeps its complete shards and collection goes
on until it holds `--steps` steps (new env seeds, so no episode repeats). A dataset of another
spec (env, protocol, observation shape) is refused; episodes still open at the end are dropped,
so every shard holds whole episodes.
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.config_files import parse_flags
from wm_jax.agents import make_agent
from wm_jax.agents.world_models import load_controller_policy, random_controller_agent
from wm_jax.dataset import DatasetWriter, collect_episodes, dataset_spec
from wm_jax.envs import make_env, protocol_card
from wm_jax.errors import RunConfigError, UserError
from wm_jax.trained import is_run_dir, load_agent

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config whose `env` section names the env: "
    "experiments/configs/<method>.py:<variant>.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Dataset folder (created, or resumed if it exists).")
_STEPS = flags.DEFINE_integer("steps", 10_000, "Steps the dataset holds when done.")
_POLICY = flags.DEFINE_string("policy", "random", "'random', 'random_controller' (World "
                              "Models' config only), a run directory of "
                              "experiments.train whose agent acts, or a controller file of "
                              "experiments.world_models (controller_dream.pkl).")
_EXPLORE = flags.DEFINE_bool("explore", True, "Sample the agent's actions (else its eval mode).")
_SHARD_STEPS = flags.DEFINE_integer("shard_steps", 10_000, "Steps per shard file (at least).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the envs and the policy.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.mark_flags_as_required(["config", "out"])


def load_policy(policy: str, spec, seed: int, config: ml_collections.ConfigDict):
  """(agent, state, name) of `policy`: the random agent, Ha's random controllers (World Models'
  `config`), or a trained run's agent at its latest checkpoint (one sentence if the run cannot
  act in an env of `spec`)."""
  if policy == "random":
    return make_agent("random", None, spec), {}, "random"
  if policy == "random_controller":
    if config.get("method") != "world_models" or spec.act.discrete:
      raise RunConfigError("--policy=random_controller drives World Models' controller, which "
                           "needs continuous actions: pass --config=experiments/configs/"
                           "world_models.py:<variant> (CarRacing), or use --policy=random.")
    c = config.controller
    agent = random_controller_agent(config.agent.vae.z_size, config.agent.rnn.units, spec.act.dim,
                                    c.random_std, tuple(c.clip_dims))
    return agent, {}, f"random controllers (params Cauchy x U(0, {c.random_std:g}))"
  if os.path.isfile(policy):
    return load_controller_policy(policy, spec)
  if not is_run_dir(policy):
    raise RunConfigError(f"--policy={policy} is neither 'random' nor a run directory of "
                         f"experiments.train (no config.json there) nor a controller file of "
                         f"experiments.world_models: pass one of those.")
  run_config, agent, state, counters = load_agent(policy, spec, seed)
  return (agent, state, f"{run_config.method} run {os.path.abspath(policy)} at step "
          f"{counters['agent_step']}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  try:
    if _STEPS.value <= 0 or _SHARD_STEPS.value <= 0:
      raise RunConfigError("--steps and --shard_steps must be positive.")
    env = make_env(config.env.suite, config.env.task, config.env.num_envs, _SEED.value,
                   **config.env.protocol)
    try:
      writer = DatasetWriter(_OUT.value, dataset_spec(protocol_card(env), env.spec),
                             _SHARD_STEPS.value)
      if writer.steps >= _STEPS.value:
        print(f"{_OUT.value} already holds {writer.steps:,} steps (--steps={_STEPS.value:,}).")
        return
      # A resumed collect starts new env seeds, so it does not repeat the episodes it has.
      seed = _SEED.value + 1000 * len(writer.manifest["shards"])
      if seed != _SEED.value:
        env.close()
        env = make_env(config.env.suite, config.env.task, config.env.num_envs, seed,
                       **config.env.protocol)
        print(f"resuming {_OUT.value} at {writer.steps:,} steps", file=sys.stderr)
      agent, state, policy = load_policy(_POLICY.value, env.spec, seed, config)
      collect_episodes(env, agent, state, writer, _STEPS.value, seed, policy,
                       _EXPLORE.value, _PROGRESS.value)
    finally:
      env.close()
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"{_OUT.value}: {writer.steps:,} steps, {writer.episodes:,} episodes in "
        f"{len(writer.manifest['shards'])} shards")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
