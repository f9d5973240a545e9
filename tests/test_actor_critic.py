"""Imagination actor-critic (wm_jax/agents/actor_critic.py) on a stub world model whose
reward depends only on the action, so learning is checkable in a few hundred steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def setup(module, spec, critic_lr=3e-3, **actor):
  agent = module.get_config("debug").agent
  agent.actor.update(actor)
  agent.actor_opt.lr = 3e-3
  agent.critic_opt.lr = critic_lr
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
  # init_std 1 (V1 uses 5, whose saturated tanh samples need far more than 200 steps). The
  # stub's state is the action itself, so the actor can chase the critic's extrapolation
  # (the values enter the objective with gradient); a 10x slower critic keeps V1's MSE
  # critic from being exploited that way.
  ac, state, update, feat = setup(module, spec, critic_lr=3e-4, grad_cont="dynamics",
                                  dist_cont=dist, init_std=1.0)
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


@pytest.mark.parametrize("eval_sample", [True, False])
def test_evaluation_samples_from_the_policy_when_the_config_says_so(eval_sample):
  spec = ActionSpec(True, num_actions=4)
  ac, state, _, feat = setup(dreamerv3, spec, eval_sample=eval_sample)
  feat = jax.random.normal(jax.random.key(3), (256, feat.shape[-1]))
  acts = [np.argmax(ac.act(state["actor"], feat, jax.random.key(k), explore=False), -1)
          for k in range(2)]
  mode = np.argmax(ac.policy.mode(ac.actor_net.apply(state["actor"], feat)), -1)
  if eval_sample:   # near-uniform initial policy: two keys give different samples
    assert np.mean(acts[0] != acts[1]) > 0.3
  else:
    np.testing.assert_array_equal(acts[0], mode)
    np.testing.assert_array_equal(acts[1], mode)


def test_dreamerv3_evaluates_by_sampling_as_the_2023_code():
  for variant in dreamerv3.VARIANTS:
    assert dreamerv3.get_config(variant).agent.actor.eval_sample
  assert not dreamerv1.get_config("debug").agent.actor.eval_sample


class InputGradientProbe(ActionRewardModel):
  """The stub, also recording d(action)/d(policy input) at every imagination step."""

  def imagine(self, params, policy, start, horizon, key):
    self.input_grads = []
    state = start
    for k in jax.random.split(key, horizon):
      self.input_grads.append(jax.grad(
          lambda deter: jnp.sum(policy({"deter": deter, "stoch": state["stoch"]}, k)))(
              state["deter"]))
      state = {"deter": policy(state, k), "stoch": state["stoch"]}
    return super().imagine(params, policy, start, horizon, key)


def test_continuous_actor_reads_stop_gradient_states_while_imagining():
  spec = ActionSpec(False, dim=2)
  ac, state, _, _ = setup(dreamerv3, spec, grad_cont="dynamics")
  probe = InputGradientProbe(2, False)
  start = {"deter": jnp.full((8, 2), 0.3), "stoch": jnp.zeros((8, 1))}
  loss_fn = lambda p: ac._actor_loss(p, state, probe, {}, start, jnp.ones(8),
                                     jax.random.key(0))[0]
  grads = jax.grad(loss_fn)(state["actor"])   # eager: the probe runs on concrete arrays
  assert len(probe.input_grads) == ac.cfg.imag_horizon
  for g in probe.input_grads:   # the gradient is stopped at the policy's input ...
    np.testing.assert_array_equal(g, 0.0)
  assert optax.tree.norm(grads) > 0   # ... but reaches the actor through its actions


def test_backprop_objective_subtracts_a_baseline_that_carries_gradient():
  spec = ActionSpec(False, dim=2)
  N = 16
  start = {"deter": jnp.full((N, 2), 0.3), "stoch": jnp.zeros((N, 1))}
  wm = ActionRewardModel(2, False)
  out = {}
  for baseline in (True, False):
    ac, state, update, _ = setup(dreamerv3, spec, grad_cont="dynamics",
                                 backprop_baseline=baseline)
    for i in range(20):   # a non-constant critic, so the baseline matters
      state, _ = update(state, jax.random.key(i))
    loss_fn = lambda p: ac._actor_loss(p, state, wm, {}, start, jnp.ones(N),
                                       jax.random.key(7))
    (loss, (traj, _, metrics)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        state["actor"])
    out[baseline] = grads
    value = ac.value(state["critic"], traj["feat"])
    objective = traj["ret"] - (value[:, :-1] if baseline else 0.0)
    entropy = ac.policy.entropy(ac.actor_net.apply(state["actor"], traj["feat"][:, :-1]), None)
    expect = -jnp.mean(traj["weight"][:, :-1] * (objective / metrics["return_scale"]
                                                 + ac.cfg.actor.entropy * entropy))
    np.testing.assert_allclose(loss, expect, rtol=1e-5)
  # v(s_t) of imagined states depends on the actions: a stop-gradient baseline would give
  # the same actor gradient with and without it.
  diff = optax.tree.norm(jax.tree.map(lambda a, b: a - b, out[True], out[False]))
  assert diff > 1e-3 * optax.tree.norm(out[False])


class ConstantRewardModel(ActionRewardModel):
  """The stub with reward 1 at every imagined step, whatever the action."""

  def reward(self, params, feat):
    return jnp.ones(feat.shape[:-1])


def critic_value_after(updates: int, gamma: float, critic_lr: float) -> float:
  """v(s_0) of the DreamerV3 debug critic after `updates` actor-critic updates on the stub."""
  spec = ActionSpec(False, dim=1)
  agent = dreamerv3.get_config("debug").agent
  agent.update(gamma=gamma)
  agent.actor_opt.lr, agent.critic_opt.lr = 1e-4, critic_lr
  ac = make_actor_critic(resolve_agent_config(agent), spec)
  N = 64
  start = {"deter": jnp.zeros((N, 1)), "stoch": jnp.zeros((N, 1))}
  wm = ConstantRewardModel(1, False)

  @jax.jit
  def run(state, key):
    step = lambda s, k: (ac.update(s, wm, {}, start, jnp.ones(N), k)[0], None)
    return jax.lax.scan(step, state, jax.random.split(key, updates))[0]

  state = run(ac.init(jax.random.key(0), 2), jax.random.key(1))
  return float(ac.value(state["critic"], jnp.zeros((1, 2)))[0])


@pytest.mark.slow   # a diagnostic of issue 7's budget (40 s of `make test`); `make test-all` runs it
def test_critic_value_lags_far_behind_the_discounted_value_at_a_cpu_update_budget():
  """Why DreamerV3 did not learn DMC at the CPU benchmark's budget (issue 7): ~1000 updates
  (what train ratio 64 with 16 x 64 batches gives by 20k agent steps) leave the critic far
  below the value of the task, so -(R^lambda - v) / S sees about H = 15 imagined steps of
  reward: a myopic objective (on cartpole_balance the policy fell below the random agent, as
  if trading the pole for the reward's small-control term). A saved run showed the same: critic ~2 against a real discounted
  return-to-go of ~60-150. The paper (train ratio 512) makes 8x more updates by then."""
  gamma = 1.0 - 1.0 / 333.0
  paper = critic_value_after(1000, gamma, critic_lr=1e-4)
  assert paper < 0.05 * 15   # below 5% of even the 15-step return, let alone 1/(1-gamma)=333
  # The CPU budget's remedy in benchmarks.dreamer_dmc: gamma 0.99 and critic lr 3e-4.
  cpu = critic_value_after(1000, 0.99, critic_lr=3e-4)
  assert cpu > 5 * paper
