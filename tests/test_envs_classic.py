"""Classic control via envpool: CartPole time limit vs termination, continuous rescaling."""

import numpy as np
import pytest

from wm_jax.envs import UnknownNameError, make_env, protocol_card


def _balance(vector):
  """A linear CartPole controller that keeps the pole up for the whole 500 steps: int32 [N]."""
  x, x_dot, theta, theta_dot = vector.T
  return (theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0).astype(np.int32)


def test_cartpole_time_limit_is_last_not_terminal():
  env = make_env("classic", "CartPole-v1", 2, seed=0)
  step = env.reset()
  assert step["vector"].shape == (2, 4) and step["vector"].dtype == np.float32
  assert step["is_first"].all() and env.spec.act.num_actions == 2
  assert protocol_card(env) == {"time_limit": 500, "suite": "classic", "task": "CartPole-v1"}
  for t in range(500):
    step = env.step(_balance(step["vector"]))
    assert step["is_last"].all() == (t == 499)
  assert not step["is_terminal"].any() and step["is_game_over"].all()
  step = env.step(np.zeros(2, np.int32))
  assert step["is_first"].all() and (step["reward"] == 0).all()


def test_cartpole_fall_is_terminal():
  env = make_env("classic", "CartPole-v1", 2, seed=0, time_limit=100)
  env.reset()
  steps = [env.step(np.zeros(2, np.int32)) for _ in range(30)]   # Always push left: it falls.
  ends = [t for t, s in enumerate(steps) if s["is_last"].any()]
  assert ends and steps[ends[0]]["is_terminal"].any()
  assert all((s["is_terminal"] == s["is_last"]).all() for s in steps)
  assert steps[ends[0] + 1]["is_first"].any()


def test_pendulum_continuous_actions_rescaled():
  env = make_env("classic", "Pendulum-v1", 1, seed=0)
  assert not env.spec.act.discrete and env.spec.act.dim == 1
  np.testing.assert_allclose(env._env_actions(np.array([[1.0], [-1.0], [0.0]])),
                             [[2.0], [-2.0], [0.0]])
  env.reset()
  step = env.step(np.ones((1, 1), np.float32))
  assert step["reward"][0] < 0 and not step["is_first"].any()


def test_unknown_classic_task():
  with pytest.raises(UnknownNameError, match="did you mean 'CartPole-v1'"):
    make_env("classic", "CartPol-v1", 1, seed=0)


def test_carracing_frames_actions_and_card():
  env = make_env("box2d", "CarRacing-v3", 2, seed=0, time_limit=30)
  assert protocol_card(env) == {"time_limit": 30, "crop_status_bar": True, "image_size": 64,
                                "suite": "box2d", "task": "CarRacing-v3"}
  assert env.spec.act.dim == 3 and not env.spec.act.discrete
  np.testing.assert_allclose(env._env_actions(np.array([[-1.0, -1.0, 1.0]])), [[-1, 0, 1]])
  np.testing.assert_allclose(env._env_actions(np.array([[0.0, 1.0, -1.0]])), [[0, 1, 0]])
  step = env.reset()
  assert step["image"].shape == (2, 64, 64, 3) and step["image"].dtype == np.uint8
  total = np.zeros(2)
  for t in range(30):   # full gas: the car moves, and new track tiles pay more than -0.1/frame
    step = env.step(np.array([[0.0, 1.0, -1.0]] * 2, np.float32))
    total += step["reward"]
    assert step["is_last"].all() == (t == 29)
  assert not step["is_terminal"].any() and (total > -3.0).all()
  with pytest.raises(UnknownNameError, match="CarRacing-v3"):
    make_env("box2d", "CarRacing", 1, seed=0)
