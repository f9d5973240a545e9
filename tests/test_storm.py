"""STORM (wm_jax/models/storm.py, wm_jax/agents/storm.py) as a spec: gradient routing of the
loss terms, cached burn-in equal to the training pass, causal and episode masking, the
imagination contract, acting, the loop, 8 devices equal 1, and one-sentence config errors."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import storm
from test_dreamer_agent import DATA_PARALLEL, VEC, check_agent, replay_batch, step_obs
from wm_jax.agents.storm import make_storm
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.rssm import encode_action
from wm_jax.models.storm import make_storm_model
from wm_jax.train import train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")}, act=ActionSpec(True, num_actions=5))
CONT = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
               act=ActionSpec(False, dim=2, low=-1.0, high=1.0))
NO_TERMS = {"loss_scales.vector": 0.0, "loss_scales.reward": 0.0, "loss_scales.term": 0.0,
            "kl.free_nats": 0.0}


def make(spec=VEC, **overrides):
  agent = storm.get_config("debug").agent
  for path, value in overrides.items():
    section, _, field = path.rpartition(".")
    (agent[section] if section else agent)[field] = value
  wm = make_storm_model(agent, spec)
  return wm, wm.init(jax.random.key(0))


def _norm(tree) -> float:
  return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _grad_norms(wm, params, batch) -> dict:
  grads = jax.jit(jax.grad(lambda p: wm.loss(p, batch, jax.random.key(1))[0]))(params)["params"]
  groups = {"encoder": ("enc_vector", "enc_image", "post_head"),
            "decoder": ("dec_vector", "dec_image"),
            "sequence": ("stem_in", "stem_out", "stem_norm", "transformer"),
            "prior": ("prior_head",), "reward": ("reward_head",), "term": ("term_head",)}
  return {name: sum(_norm(grads[m]) for m in mods if m in grads)
          for name, mods in groups.items()}


def _obs_grad(wm, params, batch):
  """d loss / d vector observation [B, T, D]: which frames a term reaches."""
  loss = lambda v: wm.loss(params, dict(batch, vector=v), jax.random.key(1))[0]
  return jax.jit(jax.grad(loss))(batch["vector"])


def test_dynamics_kl_trains_the_prior_and_not_the_next_frames_posterior():
  """Paper eq. 5 (DreamerV3's stop-gradients): L_dyn = KL(sg(q(z_{t+1})) || p(z_{t+1} | h_t))
  reaches the prior and the sequence model but not frame t+1's encoding; L_rep = KL(q || sg(p))
  reaches frame t+1's encoding and not the prior head."""
  batch = replay_batch(VEC, B=2, T=2)
  wm, params = make(**NO_TERMS, **{"kl.dyn_scale": 1.0, "kl.rep_scale": 0.0})
  g, obs = _grad_norms(wm, params, batch), _obs_grad(wm, params, batch)
  assert g["prior"] > 0 and g["sequence"] > 0
  assert float(jnp.abs(obs[:, 1]).sum()) == 0.0    # z_1 enters the KL only as sg(q)
  assert float(jnp.abs(obs[:, 0]).sum()) > 0.0     # z_0 reaches h_0 through the token
  wm, params = make(**NO_TERMS, **{"kl.dyn_scale": 0.0, "kl.rep_scale": 1.0})
  g, obs = _grad_norms(wm, params, batch), _obs_grad(wm, params, batch)
  assert g["prior"] == 0 and g["sequence"] == 0
  assert float(jnp.abs(obs[:, 1]).sum()) > 0.0 and g["encoder"] > 0


def test_decoder_reads_the_latent_and_heads_read_the_transformer():
  """Reconstruction trains encoder + decoder only (straight-through z); reward and termination
  train their heads, the Transformer and the encoder, never the decoder."""
  batch = replay_batch(VEC, B=2, T=6)
  only = lambda keep: {**{f"loss_scales.{k}": 0.0 for k in ("vector", "reward", "term")},
                       f"loss_scales.{keep}": 1.0, "kl.dyn_scale": 0.0, "kl.rep_scale": 0.0}
  g = _grad_norms(*make(**only("vector")), batch)
  assert g["encoder"] > 0 and g["decoder"] > 0
  assert g["sequence"] == g["prior"] == g["reward"] == g["term"] == 0
  for head in ("reward", "term"):
    g = _grad_norms(*make(**only(head)), batch)
    assert g[head] > 0 and g["sequence"] > 0 and g["encoder"] > 0
    assert g["decoder"] == 0 and g["prior"] == 0


@pytest.mark.parametrize("start_at", [0, 2], ids=["one-episode", "across-an-episode-start"])
def test_cached_burn_in_equals_the_training_pass_over_the_same_window(start_at):
  """The imagination start's h after `imag_context` cached steps equals the full causal pass
  over the same tokens (one possible window: T = C + 1), to 1e-5, also when the window
  crosses an episode start (the cache then keeps the earlier steps out of attention)."""
  wm, params = make()
  C = wm.cfg.imag_context
  batch = replay_batch(VEC, B=1, T=C + 1)
  batch["is_first"] = batch["is_first"].at[:, start_at].set(True)
  _, (_, out) = wm.loss(params, batch, jax.random.key(0))
  start, cont = wm.imagination_starts(params, out["stoch"], batch, jax.random.key(1))
  action = encode_action(VEC.act, batch["action"])
  h = wm.observe(params, out["stoch"][:, :C], action[:, 1:], batch["is_first"][:, :C])[:, -1]
  chex.assert_shape(start["deter"], (wm.cfg.imag_batch, wm.cfg.transformer.width))
  np.testing.assert_allclose(start["deter"], jnp.broadcast_to(h, start["deter"].shape),
                             atol=1e-5, rtol=1e-5)
  assert int(start["cache"]["pos"]) == C and np.all(np.asarray(cont) == 1.0)
  if start_at:
    whole = wm.observe(params, out["stoch"][:, :C], action[:, 1:], batch["is_first"][:, :1])
    assert not np.allclose(h, whole[:, -1], atol=1e-3)   # the mask did change the result


def test_outputs_ignore_later_frames_and_earlier_episodes():
  wm, params = make()
  batch = replay_batch(VEC, B=2, T=10)
  z = wm.posterior(params, {"vector": batch["vector"]}, jax.random.key(0))[1]
  action = encode_action(VEC.act, batch["action"])
  first = batch["is_first"].at[:, 5].set(True)
  h = wm.observe(params, z, action, first)
  later = z.at[:, 7:].set(jnp.roll(z[:, 7:], 1, -1))
  np.testing.assert_allclose(wm.observe(params, later, action, first)[:, :7], h[:, :7], atol=1e-6)
  earlier = z.at[:, :5].set(jnp.roll(z[:, :5], 1, -1))
  np.testing.assert_allclose(wm.observe(params, earlier, action, first)[:, 5:], h[:, 5:],
                             atol=1e-5)
  assert not np.allclose(wm.observe(params, earlier, action, batch["is_first"])[:, 5:],
                         h[:, 5:], atol=1e-3)


def test_starts_never_end_on_a_reset_and_terminal_frames_stop():
  wm, params = make()
  C = wm.cfg.imag_context
  batch = replay_batch(VEC, B=1, T=C + 1)
  z = wm.posterior(params, {"vector": batch["vector"]}, jax.random.key(0))[1]
  reset = dict(batch, is_first=batch["is_first"].at[:, C].set(True))
  _, cont = wm.imagination_starts(params, z, reset, jax.random.key(1))
  assert np.all(np.asarray(cont) == 0.0)      # the only window's next frame is a reset
  terminal = dict(batch, is_terminal=batch["is_terminal"].at[:, C].set(True))
  _, cont = wm.imagination_starts(params, z, terminal, jax.random.key(1))
  assert np.all(np.asarray(cont) == 0.0)      # the start frame is terminal


def test_imagination_shapes_and_continuation_heads():
  wm, params = make(IMG)
  batch = replay_batch(IMG, B=2, T=8)
  _, (metrics, out) = jax.jit(wm.loss)(params, batch, jax.random.key(0))
  assert {"image_loss", "reward_loss", "term_loss", "dyn_loss", "rep_loss"} <= set(metrics)
  start, _ = jax.jit(wm.imagination_starts)(params, out["stoch"], batch, jax.random.key(1))
  N, H = wm.cfg.imag_batch, 5
  policy = lambda s, k: jax.nn.one_hot(jax.random.randint(k, (N,), 0, 5), 5)
  states, actions = jax.jit(wm.imagine, static_argnums=(1, 3))(params, policy, start, H,
                                                                jax.random.key(2))
  chex.assert_shape([states["deter"], states["stoch"], actions],
                    [(N, H + 1, wm.cfg.transformer.width), (N, H + 1, 64), (N, H, 5)])
  feat = jnp.concatenate([states["deter"], states["stoch"]], -1)
  cont = wm.cont(params, feat)
  assert set(np.unique(np.asarray(cont))) <= {0.0, 1.0}
  chex.assert_shape([wm.reward(params, feat), cont], [(N, H + 1)] * 2)


def test_acting_window_resets_at_episode_starts():
  wm, params = make()
  window = {"stoch": jnp.ones((2, 8, 64)), "action": jnp.ones((2, 8, 2)),
            "valid": jnp.array([[False] * 8, [False] * 7 + [True]])}
  h = wm.context_feature(params, window)
  assert np.all(np.asarray(h[0]) == 0.0) and np.any(np.asarray(h[1]) != 0.0)
  agent = make_storm(storm.get_config("debug").agent, VEC)
  state = agent.init(jax.random.key(0))
  act = jax.jit(agent.act, static_argnums=4)
  carry = agent.initial_carry(3)
  for first in (True, False, False, True):
    _, carry = act(state, carry, step_obs(VEC, 3, first), jax.random.key(1), True)
  assert np.all(np.asarray(carry["valid"]).sum(-1) == 1)


@pytest.mark.parametrize("spec", [VEC, CONT], ids=["vector-discrete", "image-continuous"])
def test_agent_acts_and_updates(spec):
  """Acts in both action spaces; on a fixed batch the world-model loss falls (lr 1e-3 here)."""
  config = storm.get_config("debug").agent
  config.model_opt.lr = 1e-3
  agent = make_storm(config, spec)
  _, history = check_agent(agent, spec, updates=3 if spec is CONT else 25)
  if spec is VEC:
    assert np.mean(history[-5:]) < 0.8 * history[0], history


@pytest.mark.parametrize("variant", storm.VARIANTS)
def test_every_variant_validates(variant):
  validate(storm.get_config(variant))


def test_paper_protocol_variant_selects_storms_atari_card():
  card = storm.get_config("atari100k_paper_protocol").env.protocol
  assert card["sticky_prob"] == 0.25 and card["life_loss_terminal"] and card["full_action_space"]
  assert storm.get_config("atari100k").env.protocol["sticky_prob"] == 0.0


@pytest.mark.parametrize("field, value, message", [
    ("run.batch_length", 80, "STORM trains on run.batch_length - 1 = 79 tokens but "
                             "agent.transformer.max_len=64"),
    ("agent.imag_horizon", 60, "Imagination needs imag_context \\+ imag_horizon = 68"),
    ("agent.transformer.heads", 7, "does not split over agent.transformer.heads=7"),
    ("agent.term_head.imagine", "mean", "agent.term_head.imagine='mean' is not one of"),
])
def test_impossible_configs_fail_with_one_sentence(field, value, message):
  config = storm.get_config("atari100k")
  section, name = field.rsplit(".", 1)
  target = config
  for part in section.split("."):
    target = target[part]
  target[name] = value
  with pytest.raises(RunConfigError, match=message):
    validate(config)


def test_runs_through_the_loop_and_resumes(tmp_path):
  config = storm.get_config("debug")
  config.run.update(steps=400, eval_every=400, eval_episodes=2, log_every=200,
                    checkpoint_every=200, learning_starts=200)
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["agent_step"] == 400 and counters["updates"] > 0
  config.run.steps = 600
  again = train(config, str(tmp_path / "run"), progress=False)
  assert again["agent_step"] == 600 and again["updates"] > counters["updates"]


@pytest.mark.slow   # the sharded update is the suite's one path, tested on DreamerV3 by `make test`
def test_eight_device_update_equals_one_device_update():
  out = subprocess.run([sys.executable, "-c", DATA_PARALLEL, ROOT, "storm"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_sweeps_take_storm_runs_beside_other_methods(tmp_path):
  from experiments import sweep
  storm_config = os.path.join(ROOT, "experiments/configs/storm.py:atari100k")
  random_config = os.path.join(ROOT, "experiments/configs/random.py:atari100k")
  jobs = sweep.make_jobs([storm_config, random_config], "pong", 2, str(tmp_path), [], "m")
  assert [j.name for j in jobs] == ["storm/Pong/seed0", "storm/Pong/seed1",
                                    "random/Pong/seed0", "random/Pong/seed1"]


def test_env_interface_step_continues_the_context_like_the_training_pass():
  """reset_from(context) + step(a) reads the same h as the full causal pass over the context's
  tokens and [z_{C-1}, a]: the reward and continuation it returns are those of that h."""
  wm, params = make()
  C = 4
  batch = replay_batch(VEC, B=2, T=C)
  key = jax.random.key(3)
  sim = wm.reset_from(params, {"vector": batch["vector"], "action": batch["action"]}, key)
  new_action = jnp.array([1, 0])
  sim, obs, reward, cont = wm.step(params, sim, new_action, jax.random.key(4))
  chex.assert_shape([obs["vector"], reward, cont], [(2,) + VEC.obs["vector"].shape, (2,), (2,)])
  _, z = wm.posterior(params, {"vector": batch["vector"]}, key)
  actions = jnp.concatenate([batch["action"][:, 1:], new_action[:, None]], 1)
  h = wm.observe(params, z, encode_action(VEC.act, actions), batch["is_first"])[:, -1]
  feat = jnp.concatenate([h, sim["stoch"]], -1)
  np.testing.assert_allclose(reward, wm.reward(params, feat), atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(cont, wm.cont(params, feat))
  assert int(sim["cache"]["pos"]) == C
