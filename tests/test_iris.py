"""IRIS (wm_jax/models/iris.py, wm_jax/agents/iris.py): tokenizer, cached GPT, imagination,
staged update, data parallelism, start-up errors and a run of the loop. Tiny 'debug' sizes;
the update is compiled once per process (module fixture)."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import iris as iris_config
from wm_jax import agents, parallel
from wm_jax.agents.components import sliced_value_and_grad
from wm_jax.agents.iris import IrisLearner, make_iris
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.iris import WorldModelNet, quantize
from wm_jax.train import phased_updates, train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
               act=ActionSpec(True, num_actions=5))
K = 16   # debug tokens per frame (4x4)
VOCAB = iris_config.get_config("debug").agent.tokenizer.vocab   # debug codebook size


def debug_agent_config(starts=(1, 2, 3)):
  """The debug agent config with stages starting at updates `starts` (tokenizer, WM, AC), the
  actor-critic then on every update."""
  agent = iris_config.get_config("debug").agent
  agent.schedule.update(dict(zip(("tokenizer_start", "world_model_start",
                                  "actor_critic_start"), starts)))
  agent.schedule.actor_critic_every = 1
  return agent


def replay_batch(B=8, T=6, seed=0, first_at=()):
  """A fixed batch in the replay format of wm_jax/agents/base.py; episodes start at t = 0 and `first_at`."""
  rng = np.random.default_rng(seed)
  first = np.zeros((B, T), bool)
  first[:, [0, *first_at]] = True
  action = rng.integers(0, 5, (B, T)).astype(np.int32)
  action[first] = 0
  reward = rng.choice([-1.0, 0.0, 0.0, 1.0], (B, T)).astype(np.float32)
  reward[first] = 0
  batch = dict(image=rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8), action=action,
               reward=reward, is_first=first, is_last=np.zeros((B, T), bool),
               is_terminal=np.zeros((B, T), bool))
  return jax.tree.map(jnp.asarray, batch)


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory):
  """The debug agent, its state and its update, jitted as the loop does (compiled once here).

  When the 8-device test is selected, its subprocess starts first, so that its compilation
  overlaps with this process's tests.
  """
  eight = None
  if any(item.name.startswith("test_eight_device") for item in request.session.items):
    path = tmp_path_factory.mktemp("eight") / "multi.npz"
    eight = (subprocess.Popen([sys.executable, "-c", DATA_PARALLEL, ROOT, str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), path)
  learner = IrisLearner(debug_agent_config(), SPEC)
  agent = make_iris(debug_agent_config(), SPEC)
  mesh = parallel.make_mesh()
  state = parallel.replicate(agent.init(jax.random.PRNGKey(0)), mesh)
  update_for = phased_updates(agent, mesh)   # the phase of the state's update count

  def update(state, batch, key):
    return update_for(int(state["step"]))(state, parallel.shard_batch(batch, mesh), key)
  yield learner, agent, state, update, eight
  if eight is not None and eight[0].poll() is None:
    eight[0].kill()


def test_vq_straight_through_gradients_and_token_range(setup):
  learner, _, state, _, _ = setup
  model, tok = learner.model, state["params"]["tokenizer"]
  frames = replay_batch(B=4)["image"][:, 0]

  @jax.jit
  def grads_and_tokens(params):
    rec = jax.grad(lambda p: model.tokenizer_loss(p, frames)[1]["reconstruction_loss"])(params)
    return rec, model.encode(params, frames)

  rec_grads, tokens = grads_and_tokens(tok)
  chex.assert_shape(tokens, (4, K))
  assert tokens.dtype == jnp.int32 and 0 <= int(tokens.min()) and int(tokens.max()) < VOCAB
  # The L1 reconstruction reaches the encoder only through the straight-through estimator,
  # and the codebook not at all (decoder input z + sg(z_q - z)).
  encoder = rec_grads["params"]["encoder"]["conv_in"]["kernel"]
  assert float(jnp.abs(encoder).max()) > 0
  assert float(jnp.abs(rec_grads["params"]["codebook"]).max()) == 0
  # Nearest-neighbour look-up, checked by brute force.
  z = jax.random.normal(jax.random.key(1), (50, 16))
  book = jax.random.normal(jax.random.key(2), (32, 16))
  idx, z_q = quantize(z, book)
  brute = np.argmin(((np.asarray(z)[:, None] - np.asarray(book)[None]) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(np.asarray(idx), brute)
  np.testing.assert_array_equal(np.asarray(z_q), np.asarray(book)[brute])


def test_the_tokenizer_step_in_microbatches_equals_one_pass(setup):
  """agent.tokenizer.microbatches accumulates the gradient over equal slices of the step's
  frames, one slice at a time: the loss and gradient of one pass over all of them (float32,
  up to summation order)."""
  learner, _, state, _, _ = setup
  model, tok = learner.model, state["params"]["tokenizer"]
  frames = replay_batch(B=8)["image"][:, 0]
  step = jax.jit(lambda params, slices: sliced_value_and_grad(model.tokenizer_loss, params,
                                                              frames, slices),
                 static_argnums=1)
  (loss, _), grads = step(tok, 1)
  (sliced_loss, _), sliced_grads = step(tok, 4)
  np.testing.assert_allclose(sliced_loss, loss, rtol=1e-5)
  for whole, sliced in zip(jax.tree.leaves(grads), jax.tree.leaves(sliced_grads)):
    np.testing.assert_allclose(sliced, whole, rtol=1e-3, atol=1e-5 * float(jnp.abs(whole).max()))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0


def test_tokens_per_frame_64_gives_an_8x8_grid():
  agent = debug_agent_config()
  agent.tokens_per_frame = 64
  learner = IrisLearner(agent, SPEC)
  params = jax.eval_shape(learner.model.init, jax.random.key(0))
  tokens = jax.eval_shape(learner.model.encode, params["tokenizer"],
                          jnp.zeros((2, 3, 64, 64, 3), jnp.uint8))
  assert tokens.shape == (2, 3, 64)
  assert learner.model.max_len == agent.world_model.context * 65


def _logits_fns(learner):
  model = learner.model

  @jax.jit
  def full(wm, tokens, actions, mask=None):
    return model.logits(wm, tokens, actions, mask)

  @jax.jit
  def cached(wm, tokens, actions):
    """Feeds the same sequence token by token through the KV cache -> features' logits [B, L, N]."""
    apply = lambda *a, method: model.world_model.apply(wm, *a, method=method)
    x = model.sequence(wm, tokens, actions)
    cache = apply(tokens.shape[0], method=WorldModelNet.init_cache)
    def step(cache, x_t):
      cache, h = apply(cache, x_t, method=WorldModelNet.step)
      return cache, apply(h, method=WorldModelNet.obs_logits)
    _, logits = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(logits, 0, 1)

  return full, cached


def test_kv_cached_steps_equal_the_full_causal_forward_and_are_causal(setup):
  learner, _, state, _, _ = setup
  wm = state["params"]["world_model"]
  full, cached = _logits_fns(learner)
  rng = np.random.default_rng(0)
  S = 5   # debug context: 5 steps of K + 1 tokens fill max_len exactly
  tokens = jnp.asarray(rng.integers(0, VOCAB, (2, S, K)), jnp.int32)
  actions = jnp.asarray(rng.integers(0, 5, (2, S)), jnp.int32)
  obs, reward, end = full(wm, tokens, actions)
  chex.assert_shape([obs, reward, end], [(2, S * (K + 1), VOCAB), (2, S, 3), (2, S, 2)])
  # float32; only the summation order differs between the two paths.
  np.testing.assert_allclose(cached(wm, tokens, actions), obs, rtol=1e-4, atol=1e-5)
  # Changing token t + 1 (frame 2, token 3) leaves every logit at positions <= t unchanged.
  t = 2 * (K + 1) + 2
  changed, _, _ = full(wm, tokens.at[:, 2, 3].set((tokens[:, 2, 3] + 1) % VOCAB), actions)
  np.testing.assert_array_equal(np.asarray(changed[:, :t + 1]), np.asarray(obs[:, :t + 1]))
  assert float(jnp.abs(changed[:, t + 1:] - obs[:, t + 1:]).max()) > 0
  # With an episode start at frame 3 masked, tokens from frame 3 on ignore frames 0..2.
  mask = learner.model._episode_mask(jnp.zeros((2, S), bool).at[:, [0, 3]].set(True))
  masked, _, _ = full(wm, tokens, actions, mask)
  other, _, _ = full(wm, tokens.at[:, :3].set(0), actions, mask)
  start = 3 * (K + 1)
  np.testing.assert_allclose(other[:, start:], masked[:, start:], atol=1e-5)


def test_world_model_as_env_rolls_out_with_the_cache(setup):
  learner, _, state, _, _ = setup
  model, params = learner.model, state["params"]
  batch = replay_batch(B=4)
  context = {k: batch[k][:, -2:] for k in ("image", "action", "is_first")}

  @jax.jit
  def rollout(context, key):
    sim = model.reset_from(params, context, key)
    def step(sim, k):
      sim, obs, reward, cont = model.step(params, sim, jnp.ones(4, jnp.int32), k)
      return sim, (obs["image"], reward, cont, sim["cache"]["pos"])
    last_key = sim["cache"]["k"][:, :, 2 * K]   # the context's last token, every layer
    return jax.lax.scan(step, sim, jax.random.split(key, 7)), last_key

  (sim, (frames, rewards, conts, pos)), _ = rollout(context, jax.random.key(0))
  chex.assert_shape([frames, rewards, conts], [(7, 4, 64, 64, 3), (7, 4), (7, 4)])
  assert float(frames.min()) >= 0 and float(frames.max()) <= 1
  assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0} and set(np.unique(conts)) <= {0.0, 1.0}
  # A context of 2 frames fills 33 positions, each step K + 1 = 17 more, max_len is 85: after
  # 84 the cache is refilled with the current frame (16) before the step (33).
  np.testing.assert_array_equal(np.asarray(pos), [50, 67, 84, 33, 50, 67, 84])
  assert sim["tokens"].shape == (4, K)
  # When the last context frame starts an episode, the frame before it is not attended to.
  blank = lambda c: {**c, "image": c["image"].at[:, 0].set(0)}
  last = lambda c: np.asarray(rollout(c, jax.random.key(1))[1])
  first = {**context, "is_first": jnp.ones((4, 2), bool)}
  np.testing.assert_array_equal(last(first), last(blank(first)))
  assert np.abs(last(context) - last(blank(context))).max() > 0


def test_gradient_routing(setup):
  learner, _, state, _, _ = setup
  params, batch = state["params"], replay_batch(first_at=(3,))
  model_params = {k: params[k] for k in ("tokenizer", "world_model")}

  @jax.jit
  def grads(params):
    wm_to_tok = jax.grad(lambda tok: learner.model.world_model_loss(
        params["world_model"], tok, batch)[0])(params["tokenizer"])
    ac_loss = lambda ac, mp: learner.actor_critic_loss(ac, mp, batch, jax.random.key(0))[0]
    ac_to_model = jax.grad(ac_loss, argnums=1)(params["actor_critic"], model_params)
    return wm_to_tok, ac_to_model

  # (The actor-critic's own gradient is non-zero: test_staged_schedule_and_acting.)
  wm_to_tok, ac_to_model = grads(params)
  largest = lambda tree: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))
  assert largest(wm_to_tok) == 0          # tokens are targets, not a path into E
  assert largest(ac_to_model) == 0        # imagination is data for REINFORCE


def test_staged_schedule_and_acting(setup):
  """Stages start at updates 1 (tokenizer), 2 (world model), 3 (actor-critic)."""
  _, agent, state, update, _ = setup
  batch = replay_batch(first_at=(4,))
  changed = lambda a, b, name: any(bool(jnp.any(x != y)) for x, y in zip(
      jax.tree.leaves(a["params"][name]), jax.tree.leaves(b["params"][name])))
  names = ("tokenizer", "world_model", "actor_critic")
  expected = {0: (), 1: ("tokenizer",), 2: ("tokenizer", "world_model"), 3: names}
  for step, active in expected.items():
    before = {**state, "step": state["step"] + step}
    after, metrics = update(before, batch, jax.random.PRNGKey(step))
    assert int(after["step"]) == step + 1
    assert tuple(n for n in names if changed(before, after, n)) == active, step
    for name, value in metrics.items():
      assert value.shape == () and np.isfinite(float(value)), (name, value)
    # A stage that did not run logs no metrics (the loop averages over the updates that ran it).
    assert ("tokenizer_loss" in metrics) == ("tokenizer" in active)
    assert ("actor_critic" in active) == ("actor_critic_grad_norm" in metrics)
    assert "actor_critic" not in active or float(metrics["actor_critic_grad_norm"]) > 0
  act = jax.jit(agent.act, static_argnums=4)
  obs = {"image": batch["image"][:3, 0], "is_first": jnp.array([True, True, True])}
  carry = agent.initial_carry(3)
  for explore in (True, False):
    action, carry = act(after, carry, obs, jax.random.PRNGKey(5), explore)
    chex.assert_shape(action, (3,))
    assert action.dtype == jnp.int32 and int(action.min()) >= 0 and int(action.max()) < 5
  reset = {**obs, "is_first": jnp.array([True, False, False])}
  _, again = act(after, carry, reset, jax.random.PRNGKey(5), False)
  _, fresh = act(after, agent.initial_carry(3), reset, jax.random.PRNGKey(5), False)
  np.testing.assert_allclose(again[1][0], fresh[1][0], atol=1e-6)     # env 0 was reset
  assert float(jnp.abs(again[1][1] - fresh[1][1]).max()) > 0           # env 1 kept its LSTM


DATA_PARALLEL = textwrap.dedent("""
    import os, sys
    # Unoptimised code compiles in about half the time; one update runs in seconds anyway.
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0")
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    import functools, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from test_iris import EIGHT_DEVICE_STEP, SPEC, debug_agent_config, replay_batch
    from wm_jax.agents.iris import make_iris
    assert jax.device_count() == 8
    agent = make_iris(debug_agent_config(), SPEC)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = agent.init(jax.random.PRNGKey(0))
    state = {**state, "step": state["step"] + EIGHT_DEVICE_STEP}
    batch, key = replay_batch(first_at=(2,)), jax.random.PRNGKey(1)
    update = functools.partial(agent.update, phase=agent.schedule(EIGHT_DEVICE_STEP))
    multi = jax.jit(update, in_shardings=(rep, shard, rep), out_shardings=(rep, rep))(
        jax.device_put(state, rep), jax.device_put(batch, shard), jax.device_put(key, rep))
    assert len(jax.tree.leaves(multi)[0].sharding.device_set) == 8
    np.savez(sys.argv[2], *[np.asarray(x) for x in jax.tree.leaves(multi)])
""")
EIGHT_DEVICE_STEP = 3   # all three stages on


def test_the_world_model_trains_on_the_first_world_model_batch_size_sequences(setup):
  """The debug variant's world model reads 4 of the batch's sequences (the actor-critic all)."""
  _, _, state, update, _ = setup
  assert iris_config.get_config("debug").agent.world_model_batch_size == 4
  batch = replay_batch(first_at=(4,))
  other = {**batch, "image": batch["image"].at[4:].set(0)}   # sequences 4-7 differ
  before = {**state, "step": state["step"] + 2}   # tokenizer and world model, no actor-critic
  a, _ = update(before, batch, jax.random.PRNGKey(2))
  b, _ = update(before, other, jax.random.PRNGKey(2))
  for name in ("tokenizer", "world_model"):
    chex.assert_trees_all_equal(a["params"][name], b["params"][name])
  c, _ = update(before, {**batch, "image": batch["image"].at[:1].set(0)}, jax.random.PRNGKey(2))
  assert any(bool(jnp.any(x != y)) for x, y in zip(jax.tree.leaves(a["params"]["tokenizer"]),
                                                     jax.tree.leaves(c["params"]["tokenizer"])))


def test_eight_device_update_equals_one_device_update(setup):
  """One update with all three stages on a batch of 8 sharded over 8 fake CPU devices (in a
  subprocess) equals the 1-device update, up to float reduction order."""
  _, _, state, update, (proc, path) = setup
  state = {**state, "step": state["step"] + EIGHT_DEVICE_STEP}
  single_state, single_metrics = update(state, replay_batch(first_at=(2,)),
                                        jax.random.PRNGKey(1))
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  data = np.load(path)
  multi = jax.tree.unflatten(jax.tree.structure((single_state, single_metrics)),
                             [data[f"arr_{i}"] for i in range(len(data.files))])
  for a, b in zip(jax.tree.leaves(single_metrics), jax.tree.leaves(multi[1])):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
  # Parameters and Adam moments: the first Adam step moves every weight by lr * sign(grad),
  # so a weight whose gradient is float noise (~1e-9) may move either way on 8 devices.
  for a, b in zip(jax.tree.leaves(single_state), jax.tree.leaves(multi[0])):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    off = ~np.isclose(a, b, rtol=2e-3, atol=2e-5)
    assert off.mean() < 0.01 and np.all(np.abs(a - b)[off] <= 2.5e-4), (off.sum(), a.shape)


def test_continuous_actions_and_bfloat16_trace_through_update_and_act():
  """dmc_vision's continuous actions (our extension) with bfloat16 compute: shapes and dtypes,
  traced without compiling."""
  spec = EnvSpec(obs=SPEC.obs, act=ActionSpec(False, dim=2))
  config = debug_agent_config(starts=(0, 0, 0))
  config.precision = "bfloat16"
  agent = make_iris(config, spec)
  state = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  batch = {**replay_batch(), "action": jnp.zeros((8, 6, 2), jnp.float32)}
  update = functools.partial(agent.update, phase=agent.schedule(0))
  _, metrics = jax.eval_shape(update, state, batch, jax.random.PRNGKey(1))
  assert {"tokenizer_loss", "world_model_loss", "actor_critic_loss"} <= set(metrics)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
  obs = {"image": batch["image"][:, 0], "is_first": batch["is_first"][:, 0]}
  action, _ = jax.eval_shape(lambda *a: agent.act(*a, True), state, agent.initial_carry(8),
                             obs, jax.random.PRNGKey(2))
  assert action.shape == (8, 2) and action.dtype == jnp.float32


def test_the_perceptual_term_uses_user_supplied_lpips_weights(lpips_weights):
  cfg = debug_agent_config()
  with cfg.unlocked():
    cfg.tokenizer.lpips_weights = lpips_weights
  model = IrisLearner(cfg, SPEC).model
  params = model.init(jax.random.PRNGKey(0))["tokenizer"]
  frames = replay_batch(B=2)["image"][:, 0]
  loss, metrics = jax.jit(model.tokenizer_loss)(params, frames)
  assert float(metrics["perceptual_loss"]) > 0
  expected = (metrics["codebook_loss"] + cfg.tokenizer.commitment * metrics["commitment_loss"]
              + metrics["reconstruction_loss"] + metrics["perceptual_loss"])   # IRIS's sum
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  with cfg.unlocked():
    cfg.tokenizer.lpips_weights = "/nonexistent/lpips.npz"
  with pytest.raises(RunConfigError, match="LPIPS weights /nonexistent/lpips.npz do not exist: "
                                           "convert the PyTorch weights"):
    IrisLearner(cfg, SPEC)


def test_impossible_configs_fail_with_one_sentence():
  from wm_jax.agents.iris import check_agent_config
  cases = [
      ("tokens_per_frame", 15, "agent.tokens_per_frame=15 must be a square grid"),
      ("tokens_per_frame", 36, "agent.tokens_per_frame=36 must be a square grid"),
      ("tokenizer.ch_mult", (1, 2), "ch_mult has 2 levels but tokens_per_frame=16 needs 5"),
      ("actor_critic.wm_context", 5, "wm_context=5 real frames plus one imagined step need "
                                     "102 tokens but the Transformer holds"),
      ("world_model.heads", 3, "width=64 does not split over heads=3"),
      ("precision", "float16", "agent.precision='float16' is not one of"),
      ("tokenizer.reconstruction", "l2", "reconstruction='l2' is not one of l1, mse"),
      ("tokenizer.microbatches", 3, "microbatches=3 must divide the tokenizer's 8 frames"),
  ]
  for path, value, message in cases:
    config = iris_config.get_config("debug")
    section, _, field = path.rpartition(".")
    (config.agent[section] if section else config.agent)[field] = value
    with pytest.raises(RunConfigError, match=message):
      validate(config)
  config = iris_config.get_config("debug")
  config.run.batch_length = 2
  with pytest.raises(RunConfigError, match=r"at least 3 steps \(burn_in=2 frames \+ the start "
                                           r"frame, wm_context=1\) but run.batch_length=2"):
    validate(config)
  check_agent_config(config.agent)   # without the run config the length is not checked
  vector = EnvSpec(obs={"vector": ArraySpec((4,), "float32")}, act=SPEC.act)
  with pytest.raises(RunConfigError, match="IRIS needs 64x64x3 'image' observations"):
    make_iris(config.agent, vector)


@pytest.mark.parametrize("variant", iris_config.VARIANTS)
def test_every_variant_validates(variant):
  config = iris_config.get_config(variant)
  validate(config)
  assert config.method == "iris"


def test_training_run_end_to_end(setup, tmp_path, monkeypatch):
  """The loop on the sprite env: replay, at least four updates (every stage on from the fourth), an
  evaluation. The loop gets the module's agent (the registry builds the same one), so it
  reuses the update compiled above."""
  _, agent, _, _, _ = setup
  config = iris_config.get_config("debug")
  config.agent = debug_agent_config()
  assert isinstance(agents.make_agent("iris", config.agent, SPEC), type(agent))
  monkeypatch.setattr("wm_jax.train.make_agent", lambda method, cfg, spec: agent)
  config.run.update(dict(batch_size=8, steps=20, learning_starts=0, train_ratio=24.0,
                         log_every=20, eval_every=20, eval_episodes=2, checkpoint_every=20))
  config.env.protocol = {"episode_length": 6}
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["agent_step"] == 20 and counters["updates"] >= 4
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    metrics = [json.loads(line) for line in f][-1]
  assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
  assert metrics["world_model_loss"] > 0 and metrics["actor_critic_loss"] != 0
