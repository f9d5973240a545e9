"""Dyna-Q (wm_jax/agents/dyna_q.py) as a spec: the Q update by hand, planning touches only
visited pairs, the model's sampling distribution, greedy ties, auto-reset steps, vmapped seeds
equal single-seed runs, planning speeds learning up, and bad input in one sentence."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.agents import dyna_q
from wm_jax.agents.dyna_q import DynaQConfig
from wm_jax.envs import UnknownNameError, make_env
from wm_jax.errors import RunConfigError

CONFIG = DynaQConfig(planning_steps=5, alpha=0.1, gamma=0.95, epsilon=0.1)


def test_q_update_by_hand():
  q = jnp.zeros((3, 2)).at[2].set(jnp.array([2.0, -1.0]))
  updated = dyna_q.q_update(q, 0, 1, 1.0, 2, False, CONFIG)
  assert updated[0, 1] == pytest.approx(0.1 * (1.0 + 0.95 * 2.0))
  assert jnp.sum(updated != q) == 1
  terminal = dyna_q.q_update(q, 0, 1, 1.0, 2, True, CONFIG)   # no bootstrap from a terminal
  assert terminal[0, 1] == pytest.approx(0.1)


def test_planning_changes_q_only_for_visited_pairs():
  tables = dyna_q.init_tables(6, 3)
  tables = tables._replace(q=jax.random.normal(jax.random.PRNGKey(0), (6, 3)))
  for s, a, r, s2 in [(0, 1, 1.0, 4), (2, 0, -1.0, 0), (2, 2, 0.5, 5)]:
    tables = dyna_q.model_update(tables, s, a, r, s2, False)
  planned = dyna_q.plan(tables, jax.random.PRNGKey(1), DynaQConfig(planning_steps=50))
  changed = np.asarray(planned.q != tables.q)
  assert changed.any() and not (changed & ~np.asarray(tables.visited)).any()


def test_model_samples_a_visited_state_then_one_of_its_actions_uniformly():
  visited = jnp.zeros((5, 3), bool).at[0, 0].set(True).at[0, 1].set(True).at[0, 2].set(True)
  visited = visited.at[3, 1].set(True)
  keys = jax.random.split(jax.random.PRNGKey(0), 6000)
  states, actions = jax.vmap(dyna_q.sample_visited, (None, 0))(visited, keys)
  states, actions = np.asarray(states), np.asarray(actions)
  assert set(zip(states, actions)) == {(0, 0), (0, 1), (0, 2), (3, 1)}
  assert np.mean(states == 3) == pytest.approx(0.5, abs=0.03)   # states, not pairs, uniform
  assert np.mean(actions[states == 0] == 2) == pytest.approx(1 / 3, abs=0.03)


def test_greedy_ties_are_broken_at_random_and_epsilon_explores():
  q = jnp.array([[1.0, 3.0, 3.0, 0.0]])
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  greedy = np.asarray(jax.vmap(lambda k: dyna_q.epsilon_greedy(q, 0, k, 0.0))(keys))
  assert set(greedy) == {1, 2} and np.mean(greedy == 1) == pytest.approx(0.5, abs=0.05)
  explore = np.asarray(jax.vmap(lambda k: dyna_q.epsilon_greedy(q, 0, k, 1.0))(keys))
  assert set(explore) == {0, 1, 2, 3}


def test_no_learning_from_the_step_after_an_auto_reset():
  tables = dyna_q.init_tables(4, 2)
  step = {"state": jnp.int32(3), "reward": jnp.float32(5.0), "is_first": jnp.bool_(True),
          "is_terminal": jnp.bool_(False)}
  after, _ = dyna_q.learn_and_act(tables, 1, 0, step, jax.random.PRNGKey(0), CONFIG)
  assert not after.visited.any() and not after.q.any()
  after, _ = dyna_q.learn_and_act(tables, 1, 0, {**step, "is_first": jnp.bool_(False)},
                                  jax.random.PRNGKey(0), CONFIG)
  # One real and 5 planning updates, all of the only visited pair: Q = 5 (1 - 0.9^6).
  assert after.visited[1, 0] and after.q[1, 0] == pytest.approx(5.0 * (1 - 0.9 ** 6))


def test_vmapped_seeds_equal_single_seed_runs():
  together, _ = dyna_q.run_dyna_q(make_env("tabular", "Taxi-v3", 3, seed=5), CONFIG, 4, seed=5)
  alone, _ = dyna_q.run_dyna_q(make_env("tabular", "Taxi-v3", 1, seed=6), CONFIG, 4, seed=6)
  np.testing.assert_array_equal(together.returns[1], alone.returns[0])
  np.testing.assert_array_equal(together.lengths[1], alone.lengths[0])
  assert not np.array_equal(together.returns[0], together.returns[1])


def test_planning_shortens_episodes_on_taxi():
  """Figure 8.2's effect: after 40 episodes, n = 50 takes far fewer steps per episode."""
  lengths = {}
  for n in (0, 50):
    episodes, _ = dyna_q.run_dyna_q(make_env("tabular", "Taxi-v3", 4, seed=0),
                                    DynaQConfig(planning_steps=n), 40, seed=0)
    lengths[n] = episodes.lengths[:, -10:].mean()
  assert lengths[50] < 0.7 * lengths[0], lengths


def test_episodes_to_threshold_by_hand():
  returns = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], float)
  np.testing.assert_array_equal(dyna_q.episodes_to_threshold(returns, 1.0, 2), [4, 6])


def test_bad_input_gives_one_sentence():
  with pytest.raises(RunConfigError, match="planning_steps >= 0"):
    DynaQConfig(planning_steps=-1)
  with pytest.raises(UnknownNameError, match="did you mean 'Taxi-v3'"):
    make_env("tabular", "Taxi-v2", 1, seed=0)
  with pytest.raises(RunConfigError, match="Dyna-Q needs a tabular env"):
    dyna_q.run_dyna_q(make_env("classic", "CartPole-v1", 1, seed=0), CONFIG, 1, seed=0)


def test_entry_point_writes_table_plots_and_json(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.dyna_q", "--config=experiments/configs/dyna_q.py:debug",
       f"--out={tmp_path}"], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "dyna_q.json", "dyna_q.md", "return_per_episode.png", "steps_per_episode.png"]
  assert "| 5 |" in (tmp_path / "dyna_q.md").read_text()


def test_experiments_train_points_to_the_dyna_q_entry_point(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dyna_q.py:debug",
       f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      "error: dyna_q learns from each real step, not through this loop: run python -m "
      "experiments.dyna_q --config=experiments/configs/dyna_q.py:<variant> --out=DIR.")
