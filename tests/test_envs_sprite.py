"""The pure-JAX sprite env: functional core under jit/vmap/scan, action-dependent frames."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.envs import UnknownNameError, make_env, protocol_card, sprite
from wm_jax.errors import RunConfigError


def _state(agent, goal, t=0):
  return sprite.SpriteState(jnp.array(agent, jnp.int32), jnp.array(goal, jnp.int32),
                            jnp.array(t, jnp.int32))


def test_reset_step_shapes():
  state, first = jax.jit(sprite.reset)(jax.random.PRNGKey(0))
  assert first["image"].shape == (64, 64, 3) and first["image"].dtype == jnp.uint8
  assert bool(first["is_first"]) and not bool(first["is_last"])
  assert not bool(jnp.all(state.agent == state.goal))


def test_next_frame_depends_on_action():
  state = _state([1, 1], [3, 3])
  key = jax.random.PRNGKey(0)
  step = jax.jit(sprite.step)
  frames = [np.asarray(step(state, a, key)[1]["image"]) for a in range(5)]
  np.testing.assert_array_equal(frames[0], np.asarray(sprite.render(state)))   # noop
  for a in range(1, 5):
    for b in range(a):
      assert (frames[a] != frames[b]).any(), (a, b)


def test_reaching_goal_rewards_and_respawns():
  state, out = sprite.step(_state([1, 1], [1, 2]), 4, jax.random.PRNGKey(0))   # move right
  assert float(out["reward"]) == 1.0
  assert tuple(state.agent) == (1, 2) and tuple(state.goal) != (1, 2)
  _, out = sprite.step(_state([1, 1], [3, 3]), 0, jax.random.PRNGKey(0))
  assert float(out["reward"]) == 0.0


def test_scan_vmap_episode_flags():
  """Episodes of 50 steps: is_last (not terminal) at step 50, auto-reset to is_first next."""
  num_envs, steps = 3, 52
  states, _ = jax.vmap(sprite.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))

  def body(states, inputs):
    actions, key = inputs
    return jax.vmap(sprite.step)(states, actions, jax.random.split(key, num_envs))

  actions = jax.random.randint(jax.random.PRNGKey(1), (steps, num_envs), 0, 5)
  keys = jax.random.split(jax.random.PRNGKey(2), steps)
  _, out = jax.jit(lambda s: jax.lax.scan(body, s, (actions, keys)))(states)
  assert out["image"].shape == (steps, num_envs, 64, 64, 3)
  last = np.asarray(out["is_last"]).all(1)
  assert last[49] and last.sum() == 1
  assert np.asarray(out["is_first"])[50].all() and not np.asarray(out["is_terminal"]).any()
  assert (np.asarray(out["reward"])[50] == 0).all()


def test_host_wrapper_contract():
  env = make_env("sprite", "reach", 4, seed=0)
  first = env.reset()
  assert first["image"].shape == (4, 64, 64, 3) and first["image"].dtype == np.uint8
  assert isinstance(first["is_first"], np.ndarray) and first["is_first"].all()
  step = env.step(np.array([1, 2, 3, 4]))
  assert step["reward"].dtype == np.float32 and not step["is_first"].any()
  assert env.spec.act.num_actions == 5 and env.frames_per_step == 1
  assert protocol_card(env)["episode_length"] == 50


def test_grid_must_divide_image():
  with pytest.raises(RunConfigError, match="must be at least 2 and divide image_size=64"):
    make_env("sprite", "reach", 1, seed=0, grid=5)


def test_unknown_suite_and_task():
  with pytest.raises(UnknownNameError, match="suite 'dmc_visoin': did you mean 'dmc_vision'"):
    make_env("dmc_visoin", "cheetah_run", 1, seed=0)
  with pytest.raises(UnknownNameError, match="Unknown sprite task"):
    make_env("sprite", "fetch", 1, seed=0)


def test_locate_reads_the_agent_and_goal_cells_back_from_a_frame():
  states = [_state([0, 3], [2, 1]), _state([3, 3], [0, 0]), _state([1, 2], [1, 3])]
  frames = jnp.stack([sprite.render(s) for s in states])
  for as_float in (False, True):
    agent, goal = sprite.locate(frames / 255.0 if as_float else frames)
    np.testing.assert_array_equal(agent, [s.agent for s in states])
    np.testing.assert_array_equal(goal, [s.goal for s in states])
  # rows first, then columns, noop never (the goal is never under the agent)
  np.testing.assert_array_equal(sprite.walk_to_goal(frames), [2, 1, 4])   # down, up, right


@pytest.mark.parametrize("size", [32, 64])
def test_goal_visible_on_every_rendered_frame_and_not_on_a_faded_or_hidden_goal(size):
  protocol = sprite.SpriteProtocol(image_size=size)
  frames = jnp.stack([sprite.render(_state([0, 3], [2, 1]), protocol),
                      sprite.render(_state([1, 1], [1, 1]), protocol)])   # goal under the agent
  assert sprite.goal_visible(frames, protocol).tolist() == [True, False]
  unit = frames[0] / 255.0
  background = jnp.asarray(sprite._BACKGROUND_RGB) / 255.0
  faded = lambda alpha: background + alpha * (unit - background)   # the sprites at alpha
  assert sprite.goal_visible(unit, protocol)
  assert sprite.goal_visible(faded(0.6), protocol) and not sprite.goal_visible(faded(0.4), protocol)


def test_walking_to_the_goal_scores_far_above_random():
  """The scripted reference policy: ~18 per 50-step episode (docstring), random ~1.2."""
  def episode(key):
    state, obs = sprite.reset(key)
    def step(carry, k):
      state, obs = carry
      state, obs = sprite.step(state, sprite.walk_to_goal(obs["image"]), k)
      return (state, obs), obs["reward"]
    _, rewards = jax.lax.scan(step, (state, obs), jax.random.split(key, 50))
    return rewards.sum()
  returns = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(0), 64))
  assert 16.0 < float(returns.mean()) < 20.0
