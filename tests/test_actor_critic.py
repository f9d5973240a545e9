"""Imagination actor-critic (wm_jax/agents/actor_critic.py) on a stub world model whose
reward depends only on the action, so learning is checkable in a few hundred steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import dreamerv1, dreamerv3
from wm_jax.agents.actor_critic import make_actor_critic
from wm_jax.agents.dreamer import resolve_agent_config
from wm_jax.envs.base import ActionSpec


class ActionRewardModel:
  """A world model stub: the state is the last action; reward r(a) = a[0] for discrete
  one-hots (action 0 pays 1) and -(a[0] - 0.5)^2 for continuous actions."""

  def __init__(self, size, discrete):
    self.size, self.discrete = size, discrete

  def imagine(self, params, policy, start, horizon, key):
    states, actions, state = [start], [], start
    for k in jax.random.split(key, horizon):
      action = policy(state, k)
      state = {"deter": action, "stoch": jnp.zeros_like(state["stoch"])}
      states.append(state)
      actions.append(action)
    stack = lambda *xs: jnp.stack(xs, 1)
    return jax.tree.map(stack, *states), jnp.stack(actions, 1)

  def reward(self, params, feat):
    a = feat[..., 0]
    return a if self.discrete else -jnp.square(a - 0.5)

  def cont(self, params, feat):
    return jnp.ones(feat.shape[:-1])


def setup(module, spec, **actor):
  agent = module.get_config("debug").agent
  agent.actor.update(actor)
  agent.actor_opt.lr = 3e-3
  agent.critic_opt.lr = 3e-3
  agent.imag_horizon = 3
  cfg = resolve_agent_config(agent)
  ac = make_actor_critic(cfg, spec)
  size = spec.num_actions if spec.discrete else spec.dim
  wm = ActionRewardModel(size, spec.discrete)
  N = 64
  start = {"deter": jnp.zeros((N, size)), "stoch": jnp.zeros((N, 1))}
  state = ac.init(jax.random.key(0), size + 1)
  update = jax.jit(lambda s, k: ac.update(s, wm, {}, start, jnp.ones(N), k))
  return ac, state, update, jnp.zeros((N, size + 1))


def test_reinforce_learns_the_paying_discrete_action():
  spec = ActionSpec(True, num_actions=3)
  ac, state, update, feat = setup(dreamerv3, spec)
  probs = lambda s: jax.nn.softmax(ac.actor_net.apply(s["actor"], feat[:1]))[0]
  before = float(probs(state)[0])
  for i in range(200):
    state, metrics = update(state, jax.random.key(i))
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert float(probs(state)[0]) > max(0.6, before + 0.2), (before, probs(state))
  greedy = ac.act(state["actor"], feat[:4], jax.random.key(0), explore=False)
  np.testing.assert_array_equal(np.argmax(greedy, -1), 0)


@pytest.mark.parametrize("module,dist", [(dreamerv3, "normal"), (dreamerv1, "tanh_normal")])
def test_dynamics_backprop_moves_continuous_mean_to_the_optimum(module, dist):
  spec = ActionSpec(False, dim=2)
  # init_std 1 (V1 uses 5, whose saturated tanh samples need far more than 200 steps).
  ac, state, update, feat = setup(module, spec, grad_cont="dynamics", dist_cont=dist,
                                  init_std=1.0)
  for i in range(200):
    state, metrics = update(state, jax.random.key(i))
  sample = ac.act(state["actor"], feat, jax.random.key(1), explore=True)
  chex.assert_shape(sample, (feat.shape[0], 2))
  assert abs(float(jnp.mean(sample[:, 0])) - 0.5) < 0.15, float(jnp.mean(sample[:, 0]))


def test_slow_critic_tracks_the_critic_by_ema():
  spec = ActionSpec(True, num_actions=2)
  ac, state, update, _ = setup(dreamerv3, spec)
  new, _ = update(state, jax.random.key(0))
  rate = ac.cfg.critic.slow_rate   # 0.02: EMA decay 0.98 (DreamerV3)
  expect = jax.tree.map(lambda s, c: (1 - rate) * s + rate * c, state["slow_critic"],
                        new["critic"])
  chex.assert_trees_all_close(new["slow_critic"], expect, atol=1e-6)
  assert int(new["step"]) == 1
