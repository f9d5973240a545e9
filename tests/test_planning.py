"""CEM (wm_jax/core/planning.py) on known objectives, and PlaNet (the Dreamer module with
agent.behavior='cem') through the training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import planet
from wm_jax.agents import make_agent
from wm_jax.core.planning import cem
from wm_jax.envs import make_env
from wm_jax.errors import RunConfigError
from wm_jax.train import train


def test_cem_finds_the_optimum_of_a_quadratic():
  target = jnp.array([[0.5, -0.3], [-0.8, 0.1], [0.2, 0.9]])   # [H=3, A=2]
  objective = lambda seqs, key: -jnp.sum((seqs - target) ** 2, axis=(1, 2))
  plan = jax.jit(lambda key: cem(objective, key, 3, 2, candidates=300, top_k=30,
                                 iterations=12))(jax.random.PRNGKey(0))
  np.testing.assert_allclose(plan, target, atol=0.05)


def test_cem_stays_inside_the_action_bounds():
  objective = lambda seqs, key: jnp.sum(seqs, axis=(1, 2))   # best: every action at `high`
  plan = cem(objective, jax.random.PRNGKey(1), 4, 1, candidates=100, top_k=10, iterations=8,
             low=-0.5, high=0.5)
  assert plan.max() <= 0.5 and plan.min() > 0.45


def test_planet_refuses_discrete_actions_and_unknown_behaviours_in_one_sentence():
  env = make_env("classic", "CartPole-v1", 1, seed=0)
  config = planet.get_config("debug").agent
  with pytest.raises(RunConfigError, match="CEM planner searches continuous action sequences"):
    make_agent("planet", config, env.spec)
  config.behavior = "mpc"
  with pytest.raises(RunConfigError, match="agent.behavior='mpc' is not one of actor_critic"):
    make_agent("planet", config, make_env("classic", "Pendulum-v1", 1, seed=0).spec)


def test_planet_plans_learns_its_model_and_resumes(tmp_path):
  config = planet.get_config("debug")
  config.run.update(dict(steps=300, log_every=100, eval_every=300, checkpoint_every=150))
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["updates"] > 0
  config.run.steps = 400
  assert train(config, str(tmp_path / "run"), progress=False)["agent_step"] == 400
  state = make_agent("planet", config.agent, make_env("classic", "Pendulum-v1", 1, 0).spec)
  assert set(jax.eval_shape(state.init, jax.random.PRNGKey(0))) == {"wm", "wm_opt"}
