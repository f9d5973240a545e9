"""Tabular Dyna-Q (Sutton 1990; Sutton & Barto 2018, sec. 8.2, box "Tabular Dyna-Q") as pure
jitted functions over arrays, with many seeds vmapped in one call.

Per real step, the book's steps (a)-(f):
  (b) A = epsilon-greedy(S, Q), greedy ties broken uniformly at random (as the book's maze runs);
  (c) take A, observe R, S';
  (d) Q(S, A) += alpha [R + gamma max_a Q(S', a) - Q(S, A)]   (one-step Q-learning, eq. 6.8);
  (e) Model(S, A) = (R, S'): the last outcome seen (the book's deterministic model);
  (f) n times: S = a random previously observed state, A = a random action previously taken
      in S, (R, S') = Model(S, A), and the update of (d).
n = 0 is one-step Q-learning. A transition into a terminal state bootstraps nothing (the model
keeps that flag with S'); a time-limit truncation is not terminal and bootstraps as usual.
Defaults are the book's Dyna maze (Figure 8.2): alpha 0.1, epsilon 0.1, gamma 0.95, Q = 0.

Dyna-Q is not an `Agent` of wm_jax/agents/base.py: it learns from each real transition as it
happens, not from replayed batches, so it has its own loop, `run_dyna_q`, over the suite's
'tabular' envs (wm_jax/envs/classic.py). On a stochastic task (slippery FrozenLake) the model
still keeps only the last outcome, as the book's Dyna-Q does; Dyna-Q+ and prioritized
sweeping are not here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.errors import RunConfigError


@dataclasses.dataclass(frozen=True)
class DynaQConfig:
  """planning_steps: n, model updates per real step; the book's alpha, gamma and epsilon."""
  planning_steps: int = 5
  alpha: float = 0.1
  gamma: float = 0.95
  epsilon: float = 0.1

  def __post_init__(self):
    if self.planning_steps < 0 or not 0 < self.alpha <= 1 or not 0 <= self.gamma <= 1 or (
        not 0 <= self.epsilon <= 1):
      raise RunConfigError(
          f"Dyna-Q needs planning_steps >= 0, 0 < alpha <= 1 and gamma, epsilon in [0, 1], "
          f"not {self}: fix the config.")


class Tables(NamedTuple):
  """Everything Dyna-Q learns, for S states and A actions (a leading seed axis when vmapped).

  q: float32 [S, A]; the model: reward float32 [S, A], next_state int32 [S, A],
  terminal bool [S, A]; visited: bool [S, A], the pairs (s, a) taken at least once.
  """
  q: jax.Array
  reward: jax.Array
  next_state: jax.Array
  terminal: jax.Array
  visited: jax.Array


def init_tables(num_states: int, num_actions: int) -> Tables:
  shape = (num_states, num_actions)
  return Tables(q=jnp.zeros(shape, jnp.float32), reward=jnp.zeros(shape, jnp.float32),
                next_state=jnp.zeros(shape, jnp.int32), terminal=jnp.zeros(shape, bool),
                visited=jnp.zeros(shape, bool))


def _uniform_among(mask: jax.Array, key: jax.Array) -> jax.Array:
  """A uniformly random index where `mask` [K] is True (mask must hold a True): the r-th True
  for one uniform r (one random number, not K as a categorical draw would take)."""
  rank = jax.random.randint(key, (), 0, mask.sum())
  return jnp.argmax(jnp.cumsum(mask) > rank).astype(jnp.int32)


def epsilon_greedy(q: jax.Array, state: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
  """Step (b): a random action with probability epsilon, else a greedy one (ties at random).
  q [S, A], state int []; returns int32 []."""
  explore_key, random_key, tie_key = jax.random.split(key, 3)
  row = q[state]
  greedy = _uniform_among(row == row.max(), tie_key)
  random = jax.random.randint(random_key, (), 0, q.shape[1])
  return jnp.where(jax.random.uniform(explore_key) < epsilon, random, greedy).astype(jnp.int32)


def q_update(q: jax.Array, state, action, reward, next_state, terminal,
             config: DynaQConfig) -> jax.Array:
  """Step (d), eq. 6.8: Q(S, A) += alpha [R + gamma max_a Q(S', a) (0 if terminal) - Q(S, A)]."""
  bootstrap = jnp.where(terminal, 0.0, config.gamma * q[next_state].max())
  return q.at[state, action].add(config.alpha * (reward + bootstrap - q[state, action]))


def model_update(tables: Tables, state, action, reward, next_state, terminal) -> Tables:
  """Step (e): Model(S, A) = (R, S', terminal), and (S, A) marked visited."""
  return tables._replace(reward=tables.reward.at[state, action].set(reward),
                         next_state=tables.next_state.at[state, action].set(next_state),
                         terminal=tables.terminal.at[state, action].set(terminal),
                         visited=tables.visited.at[state, action].set(True))


def sample_visited(visited: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Step (f)'s draw: a state uniformly among those visited, then an action uniformly among
  those taken there. visited bool [S, A] with at least one True; returns (state, action)."""
  state_key, action_key = jax.random.split(key)
  state = _uniform_among(visited.any(axis=1), state_key)
  return state, _uniform_among(visited[state], action_key)


def plan(tables: Tables, key: jax.Array, config: DynaQConfig) -> Tables:
  """Step (f): `planning_steps` Q-learning updates on transitions replayed from the model."""
  def one_update(i, q):
    state, action = sample_visited(tables.visited, jax.random.fold_in(key, i))
    return q_update(q, state, action, tables.reward[state, action],
                    tables.next_state[state, action], tables.terminal[state, action], config)
  return tables._replace(q=jax.lax.fori_loop(0, config.planning_steps, one_update, tables.q))


def learn_and_act(tables: Tables, prev_state, prev_action, step: dict, key: jax.Array,
                  config: DynaQConfig) -> tuple[Tables, jax.Array]:
  """One real step of one seed: steps (d)-(f) on the transition (prev_state, prev_action ->
  step), then step (b) in step['state']. No learning where step['is_first'] (an auto-reset:
  the action led nowhere). step: 'state' int [], 'reward' [], 'is_first' / 'is_terminal' bool []."""
  plan_key, act_key = jax.random.split(key)
  learned = tables._replace(q=q_update(tables.q, prev_state, prev_action, step["reward"],
                                       step["state"], step["is_terminal"], config))
  learned = model_update(learned, prev_state, prev_action, step["reward"], step["state"],
                         step["is_terminal"])
  learned = plan(learned, plan_key, config)
  tables = jax.tree.map(lambda old, new: jnp.where(step["is_first"], old, new), tables, learned)
  return tables, epsilon_greedy(tables.q, step["state"], act_key, config.epsilon)


@functools.partial(jax.jit, static_argnames="config")
def learn_and_act_seeds(tables: Tables, prev_state, prev_action, step: dict, keys,
                        config: DynaQConfig) -> tuple[Tables, jax.Array, jax.Array]:
  """learn_and_act for N seeds at once (every leaf with a leading seed axis [N, ...]), each
  seed advancing its own key chain keys [N, 2]; returns (tables, actions [N], keys)."""
  def one_seed(tables, prev_state, prev_action, step, key):
    key, step_key = jax.random.split(key)
    return (*learn_and_act(tables, prev_state, prev_action, step, step_key, config), key)
  return jax.vmap(one_seed)(tables, prev_state, prev_action, step, keys)


class Episodes(NamedTuple):
  """Per seed, the first `episodes` finished episodes: returns, lengths float/int [N, E], and
  the env step (of that seed) at which each ended [N, E]."""
  returns: np.ndarray
  lengths: np.ndarray
  end_steps: np.ndarray


def run_dyna_q(env, config: DynaQConfig, episodes: int, seed: int,
               max_steps: int = 1_000_000) -> tuple[Episodes, Tables]:
  """Runs Dyna-Q on each of the env's N copies, copy i as seed `seed + i` (envpool seeds it so,
  and its key chain starts at PRNGKey(seed + i)), until every copy finished `episodes`
  episodes; returns them and the final tables [N, ...]. Seed s gives the same episodes here as
  alone (N = 1, seed s).

  env: a 'tabular' BatchedEnv (wm_jax.envs.make_env('tabular', task, N, seed)); one jitted
  call per real step for all N seeds. One sentence if a copy has not finished its episodes
  after `max_steps` steps.
  """
  from wm_jax.train import EpisodeTracker
  if "state" not in env.spec.obs or not env.spec.act.discrete:
    raise RunConfigError(
        f"Dyna-Q needs a tabular env (one discrete state, discrete actions), not "
        f"{env.suite}/{env.task}: use env.suite=tabular with a task such as Taxi-v3.")
  num = env.num_envs
  tables = jax.vmap(lambda _: init_tables(env.num_states, env.spec.act.num_actions))(
      jnp.arange(num))
  keys = jax.vmap(jax.random.PRNGKey)(seed + jnp.arange(num))
  step = env.reset()
  prev_state = prev_action = np.zeros(num, np.int32)   # unused: the first step is_first
  tracker = EpisodeTracker(num)
  returns, lengths, ends = ([[] for _ in range(num)] for _ in range(3))
  for t in range(1, max_steps + 1):
    tables, action, keys = learn_and_act_seeds(
        tables, prev_state, prev_action,
        {k: step[k] for k in ("state", "reward", "is_first", "is_terminal")}, keys, config)
    prev_state, prev_action = step["state"], np.asarray(action)
    step = env.step(prev_action)
    for i, ret, length in tracker.update(step):
      if len(returns[i]) < episodes:
        returns[i].append(ret)
        lengths[i].append(length)
        ends[i].append(t)
    if min(len(r) for r in returns) >= episodes:
      return Episodes(np.array(returns), np.array(lengths), np.array(ends)), tables
  raise RunConfigError(
      f"Dyna-Q: a seed finished {min(len(r) for r in returns)} of {episodes} episodes in "
      f"{max_steps:,} steps: ask for fewer episodes or raise max_steps.")


def episodes_to_threshold(returns: np.ndarray, threshold: float, window: int) -> np.ndarray:
  """Per seed, the number of episodes until the mean return of the last `window` episodes
  first reaches `threshold` (returns [N, E]); E + 1 where it never does (a censored value)."""
  returns = np.asarray(returns, np.float64)
  kernel = np.ones(window) / window
  out = np.full(returns.shape[0], returns.shape[1] + 1, np.int64)
  for i, row in enumerate(returns):
    moving = np.convolve(row, kernel, mode="valid")   # moving[j]: episodes j .. j+window-1
    hits = np.flatnonzero(moving >= threshold)
    if hits.size:
      out[i] = hits[0] + window
  return out


__all__ = ["DynaQConfig", "Episodes", "Tables", "episodes_to_threshold", "epsilon_greedy",
           "init_tables", "learn_and_act", "learn_and_act_seeds", "model_update", "plan",
           "q_update", "run_dyna_q", "sample_visited"]
