"""Plan2Explore (wm_jax/agents/plan2explore.py) as a spec: the disagreement is zero for agreeing
members and grows with their spread, bootstrap resamples, the reward head does not shape the
representation, random exploration is uniform, the hand-over to the task actor, the loop with
resume, and bad input in one sentence."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import dreamerv3 as dreamerv3_config
from experiments.configs import plan2explore as p2e_config
from wm_jax.agents import make_agent
from wm_jax.agents.dreamer import resolve_agent_config
from wm_jax.agents.plan2explore import (OneStepEnsemble, bootstrap_weights, check_agent_config,
                                        disagreement, random_action)
from wm_jax.envs import make_env
from wm_jax.envs.base import ActionSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.rssm import make_world_model
from wm_jax.train import flatten_dict, train


def _pendulum():
  return make_env("classic", "Pendulum-v1", 2, seed=0)


def test_disagreement_is_zero_for_identical_members_and_grows_with_their_spread():
  base = jax.random.normal(jax.random.PRNGKey(0), (6, 4))          # [N, E]
  offsets = jax.random.normal(jax.random.PRNGKey(1), (5, 1, 4))    # [K, 1, E]
  assert np.allclose(disagreement(jnp.broadcast_to(base, (5, 6, 4))), 0.0)
  spreads = [disagreement(base + s * offsets) for s in (0.5, 1.0, 2.0)]
  np.testing.assert_allclose(spreads[1], 4 * spreads[0], rtol=1e-5)   # variance: quadratic
  np.testing.assert_allclose(spreads[2], 4 * spreads[1], rtol=1e-5)
  by_hand = np.mean(np.var(np.asarray(offsets[:, 0]), axis=0))
  np.testing.assert_allclose(spreads[1], by_hand, rtol=1e-5)


def test_identical_ensemble_members_predict_alike():
  ens = OneStepEnsemble(members=3, out_size=5, units=8, layers=2)
  feat, action = jnp.ones((4, 6)), jnp.zeros((4, 2))
  params = ens.init(jax.random.PRNGKey(0), feat, action)
  preds = ens.apply(params, feat, action)
  assert preds.shape == (3, 4, 5)
  assert float(jnp.min(disagreement(preds))) > 0.0                 # independent inits differ
  same = jax.tree.map(lambda p: jnp.broadcast_to(p[:1], p.shape), params)
  assert np.allclose(disagreement(ens.apply(same, feat, action)), 0.0)


def test_bootstrap_resamples_each_members_batch():
  weights = bootstrap_weights(jax.random.PRNGKey(0), 5, 16)
  assert weights.shape == (5, 16)
  np.testing.assert_array_equal(np.sum(weights, 1), 16)
  assert len({tuple(w) for w in np.asarray(weights)}) == 5           # each member its own draw


def test_random_exploration_is_uniform():
  box = random_action(jax.random.PRNGKey(0), ActionSpec(False, 0, 2, -1.0, 1.0), 4000)
  assert box.min() >= -1.0 and box.max() <= 1.0
  np.testing.assert_allclose(np.mean(box, 0), 0.0, atol=0.05)
  np.testing.assert_allclose(np.var(box, 0), 1 / 3, atol=0.03)      # Var of U(-1, 1)
  onehot = random_action(jax.random.PRNGKey(1), ActionSpec(True, 3, 3, 0.0, 1.0), 3000)
  np.testing.assert_allclose(np.mean(onehot, 0), 1 / 3, atol=0.04)


def test_the_reward_head_does_not_shape_the_representation():
  env = _pendulum()
  agent = p2e_config.get_config("debug").agent
  agent.loss_scales.update(vector=0.0)
  agent.kl.scale = 0.0

  def encoder_grad(stop_grad):
    agent.reward_head.stop_grad = stop_grad
    wm = make_world_model(resolve_agent_config(agent), env.spec)
    params = wm.init(jax.random.PRNGKey(0))
    batch = {"vector": jnp.ones((2, 4, 3)), "action": jnp.ones((2, 4, 1)),
             "reward": jnp.ones((2, 4)), "is_first": jnp.zeros((2, 4), bool).at[:, 0].set(True),
             "is_last": jnp.zeros((2, 4), bool), "is_terminal": jnp.zeros((2, 4), bool)}
    grads = jax.jit(jax.grad(lambda p: wm.loss(p, batch, jax.random.PRNGKey(1))[0]))(params)
    enc = grads["params"]["enc_vector"]
    return sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(enc))

  assert encoder_grad(True) == 0.0
  assert encoder_grad(False) > 0.0


def test_collection_hands_over_to_the_task_actor():
  env = _pendulum()
  obs = {"vector": jnp.ones((2, 3)), "is_first": jnp.ones((2,), bool), "reward": jnp.zeros(2)}

  def action(policy, adapt_after):
    config = p2e_config.get_config("debug").agent
    config.explore.update(policy=policy, adapt_after_updates=adapt_after)
    agent = make_agent("plan2explore", config, env.spec)
    state = agent.init(jax.random.PRNGKey(0))   # the same world model and task actor
    return agent.act(state, agent.initial_carry(2), obs, jax.random.PRNGKey(3), True)[0]

  np.testing.assert_allclose(action("disagreement", 0), action("random", 0))   # task actor
  assert not np.allclose(action("disagreement", -1), action("random", -1))      # explorers


# The random explorer goes through the same loop (19 s of `make test`); `make test-all` runs it.
@pytest.mark.parametrize("policy", ["disagreement", pytest.param("random", marks=pytest.mark.slow)])
def test_plan2explore_learns_through_the_loop_and_resumes(tmp_path, policy):
  config = p2e_config.get_config("debug")
  config.agent.explore.policy = policy
  config.run.update(dict(steps=300, log_every=150, eval_every=300, checkpoint_every=150))
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["updates"] > 0
  config.run.steps = 400
  assert train(config, str(tmp_path / "run"), progress=False)["agent_step"] == 400
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  if policy == "disagreement":
    assert '"ensemble_loss"' in lines[-1] and '"explore_imag_reward"' in lines[-1]
  else:
    assert '"ensemble_loss"' not in lines[-1] and '"imag_reward"' in lines[-1]


def test_the_dreamerv3_variant_is_dreamerv3_plus_the_exploration_and_trains(tmp_path):
  config = p2e_config.get_config("dmc_proprio_dreamerv3")
  v3 = dreamerv3_config.get_config("dmc_proprio")
  ours, theirs = flatten_dict(config.agent.to_dict()), flatten_dict(v3.agent.to_dict())
  added = {k for k in ours if k.startswith("explore.")} | {"reward_head.stop_grad"}
  assert {k for k in ours if ours[k] != theirs.get(k)} == added
  assert set(theirs) <= set(ours)
  assert config.run.to_dict() == v3.run.to_dict() and config.env.to_dict() == v3.env.to_dict()
  debug = p2e_config.get_config("debug")          # the tiny size on Pendulum, for the loop
  config.env, config.run = debug.env, debug.run
  dreamerv3_config.shrink_for_debug(config.agent)
  config.run.update(dict(steps=300, log_every=300, eval_every=300, checkpoint_every=300))
  assert train(config, str(tmp_path / "run"), progress=False)["updates"] > 0
  last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
  assert np.isfinite(last["explore_imag_reward"]) and np.isfinite(last["ensemble_loss"])


@pytest.mark.parametrize("field,value,message", [
    ("policy", "curious", r"agent.explore.policy='curious' is not one of disagreement, random"),
    ("members", 1, r"a disagreement needs at least 2 ensemble members"),
    ("adapt_after_updates", -5, r"use -1 to explore for the whole run"),
])
def test_bad_exploration_settings_get_one_sentence(field, value, message):
  config = p2e_config.get_config("debug").agent
  config.explore[field] = value
  with pytest.raises(RunConfigError, match=message):
    check_agent_config(config)
  with pytest.raises(RunConfigError, match=message):
    make_agent("plan2explore", config, _pendulum().spec)
