"""RSSM world model (wm_jax/models/rssm.py): shapes, resets, gradient routing, learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import dreamerv1, dreamerv2, dreamerv3
from wm_jax.agents.dreamer import resolve_agent_config
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.models.rssm import clip_action, feat_of, make_world_model

VEC = EnvSpec(obs={"vector": ArraySpec((5,), "float32")}, act=ActionSpec(True, num_actions=3))
IMG = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")}, act=ActionSpec(False, dim=2))


def make(module=dreamerv3, spec=VEC, **overrides):
  agent = module.get_config("debug").agent
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = agent
    for p in parents:
      node = node[p]
    node[leaf] = value
  wm = make_world_model(resolve_agent_config(agent), spec)
  return wm, wm.init(jax.random.key(0))


def batch_for(spec, B=2, T=6, seed=0):
  rng = np.random.default_rng(seed)
  batch = {}
  if "vector" in spec.obs:
    batch["vector"] = jnp.asarray(rng.normal(size=(B, T) + spec.obs["vector"].shape) * 3,
                                  jnp.float32)
  if "image" in spec.obs:
    batch["image"] = jnp.asarray(rng.integers(0, 255, (B, T, 64, 64, 3)), jnp.uint8)
  if spec.act.discrete:
    batch["action"] = jnp.asarray(rng.integers(0, spec.act.num_actions, (B, T)), jnp.int32)
  else:
    batch["action"] = jnp.asarray(rng.uniform(-1, 1, (B, T, spec.act.dim)), jnp.float32)
  is_first = np.zeros((B, T), bool)
  is_first[:, 0] = True
  batch.update(reward=jnp.asarray(rng.normal(size=(B, T)), jnp.float32),
               is_first=jnp.asarray(is_first), is_last=jnp.zeros((B, T), bool),
               is_terminal=jnp.asarray(rng.random((B, T)) < 0.1))
  return batch


@pytest.mark.parametrize("module", [dreamerv3, dreamerv2, dreamerv1])
def test_observe_and_imagine_shapes(module):
  wm, params = make(module)
  r = wm.cfg.rssm
  B, T, H = 2, 6, 4
  batch = batch_for(VEC, B, T)

  @jax.jit
  def observe(params, batch):
    embed = wm.embed(params, {"vector": batch["vector"]})
    return wm.observe(params, wm.initial(params, B), embed, wm.encode_action(batch["action"]),
                      batch["is_first"], jax.random.key(1))

  post, prior = observe(params, batch)
  zdim = r.stoch * r.classes if r.classes else r.stoch
  chex.assert_shape([post["deter"], prior["deter"]], (B, T, r.deter))
  chex.assert_shape([post["stoch"], prior["stoch"]], (B, T, zdim))
  if r.classes:
    chex.assert_shape(post["logits"], (B, T, r.stoch, r.classes))
    np.testing.assert_allclose(post["stoch"].reshape(B, T, r.stoch, r.classes).sum(-1), 1.0)
  start = jax.tree.map(lambda x: x[:, -1], post)
  policy = lambda s, k: jax.nn.one_hot(jax.random.randint(k, (B,), 0, 3), 3)
  states, actions = jax.jit(lambda p, s: wm.imagine(p, policy, s, H, jax.random.key(2)))(
      params, start)
  chex.assert_shape(feat_of(states), (B, H + 1, wm.feat_size))
  chex.assert_shape(actions, (B, H, 3))
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[:, 0], states), start)
  loss, (metrics, out) = jax.jit(wm.loss)(params, batch, jax.random.key(3))
  assert np.isfinite(float(loss)), metrics
  chex.assert_shape(out["feat"], (B, T, wm.feat_size))


def test_image_model_continuous_actions_shapes():
  wm, params = make(spec=IMG)
  batch = batch_for(IMG, 2, 3)
  loss, (metrics, out) = jax.jit(wm.loss)(params, batch, jax.random.key(0))
  assert np.isfinite(float(loss)) and "image_loss" in metrics
  dec = jax.eval_shape(lambda p, f: wm.net.apply(p, f, method=type(wm.net).decode),
                       params, out["feat"])
  chex.assert_shape(dec["image"], (2, 3, 64, 64, 3))
  assert dec["image"].dtype == jnp.float32


def test_is_first_resets_the_state():
  wm, params = make()
  B = 3
  embed = wm.embed(params, {"vector": jnp.ones((B, 5))})
  action = jnp.zeros((B, 3))
  step = jax.jit(lambda prev, act, first: wm.obs_step(params, prev, act, embed, first,
                                                      jax.random.key(4))[0])
  fresh = step(wm.initial(params, B), action, jnp.ones(B, bool))
  junk = jax.tree.map(lambda x: x + 7.0, fresh)
  reset = step(junk, action + 1.0, jnp.ones(B, bool))
  chex.assert_trees_all_close(reset, fresh, atol=1e-6)
  kept = step(junk, action, jnp.zeros(B, bool))
  assert not np.allclose(kept["deter"], fresh["deter"])


def _grad_norms(wm, params, batch):
  grads = jax.jit(jax.grad(lambda p: wm.loss(p, batch, jax.random.key(5))[0]))(params)
  grads = grads["params"]
  norm = lambda t: float(optax.tree.norm(t))
  return {"encoder": norm(grads["enc_vector"]),
          "posterior": norm([grads["rssm"]["obs_out"], grads["rssm"]["post_head"]]),
          "prior": norm([grads["rssm"]["img_out"], grads["rssm"]["prior_head"]]),
          "decoder": norm(grads["dec_vector"]), "reward": norm(grads["reward_head"])}


ONLY_KL = {"loss_scales.vector": 0.0, "loss_scales.reward": 0.0, "loss_scales.cont": 0.0,
           "kl.free_nats": 0.0}


def test_gradient_routing_of_dyn_and_rep_terms():
  """DreamerV3 eq. 5: L_dyn = KL(sg(q) || p) trains the prior only, L_rep = KL(q || sg(p)) the
  encoder and posterior only. One step after is_first, so h does not depend on the encoder."""
  batch = batch_for(VEC, 2, 1)
  wm, params = make(**ONLY_KL, **{"kl.dyn_scale": 1.0, "kl.rep_scale": 0.0})
  dyn = _grad_norms(wm, params, batch)
  assert dyn["prior"] > 0
  assert dyn["encoder"] == 0 and dyn["posterior"] == 0 and dyn["decoder"] == 0
  wm, params = make(**ONLY_KL, **{"kl.dyn_scale": 0.0, "kl.rep_scale": 1.0})
  rep = _grad_norms(wm, params, batch)
  assert rep["encoder"] > 0 and rep["posterior"] > 0
  assert rep["prior"] == 0 and rep["decoder"] == 0


def test_straight_through_gradients_reach_the_encoder():
  """The decoder reads z ~ q via straight-through one-hots (DreamerV2 Algorithm 1), so the
  reconstruction loss has non-zero gradients in the encoder even at the first step."""
  batch = batch_for(VEC, 2, 1)
  wm, params = make(**{"kl.dyn_scale": 0.0, "kl.rep_scale": 0.0, "loss_scales.reward": 0.0,
                       "loss_scales.cont": 0.0})
  g = _grad_norms(wm, params, batch)
  assert g["encoder"] > 0 and g["posterior"] > 0 and g["decoder"] > 0
  assert g["prior"] == 0


def test_world_model_loss_decreases_on_a_fixed_batch():
  wm, params = make()
  batch = batch_for(VEC, 4, 8)
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, key):
    (loss, _), grads = jax.value_and_grad(wm.loss, has_aux=True)(params, batch, key)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  first = None
  for i in range(40):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
    first = float(loss) if first is None else first
  assert float(loss) < 0.7 * first, (first, float(loss))


def test_clip_action_scales_into_range_with_a_stop_gradient_scale():
  a = jnp.array([[-3.0, 0.5], [2.0, -1.0]])
  np.testing.assert_allclose(clip_action(a, 1.0), [[-1.0, 0.5], [1.0, -1.0]])
  # d/da [a * sg(1 / max(1, |a|))] = 1 / max(1, |a|): the gradient passes, scaled.
  grad = jax.grad(lambda x: jnp.sum(clip_action(x, 1.0)))(a)
  np.testing.assert_allclose(grad, [[1 / 3, 1.0], [0.5, 1.0]], rtol=1e-6)
  np.testing.assert_array_equal(clip_action(a, 0.0), a)


@pytest.mark.parametrize("clip,same", [(1.0, True), (0.0, False)])
def test_imagined_actions_reach_the_rssm_clipped_to_one(clip, same):
  spec = EnvSpec(obs={"vector": ArraySpec((5,), "float32")}, act=ActionSpec(False, dim=2))
  wm, params = make(spec=spec, **{"rssm.action_clip": clip})
  start = wm.initial(params, 3)
  big = wm.img_step(params, start, jnp.full((3, 2), 4.0), jax.random.key(1))
  edge = wm.img_step(params, start, jnp.ones((3, 2)), jax.random.key(1))
  assert np.allclose(big["deter"], edge["deter"]) == same


@pytest.mark.parametrize("imagine", ["mode", "prob"])
def test_imagined_continuation_is_the_mode_or_the_probability(imagine):
  wm, params = make(**{"cont_head.imagine": imagine})
  feat = jax.random.normal(jax.random.key(0), (64, wm.feat_size)) * 3
  cont = np.asarray(wm.cont(params, feat))
  logit = wm.net.apply(params, feat, method=type(wm.net).cont_logit)
  prob = np.asarray(jax.nn.sigmoid(logit))
  if imagine == "mode":   # 2023 code: Bernoulli mode, 1 where p > 0.5
    np.testing.assert_array_equal(cont, (prob > 0.5).astype(np.float32))
  else:
    np.testing.assert_allclose(cont, prob, rtol=1e-6)
  assert 0 < np.mean(prob > 0.5) < 1   # both outcomes occur, so the two kinds differ
