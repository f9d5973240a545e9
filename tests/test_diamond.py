"""DIAMOND (wm_jax/models/diamond.py, wm_jax/agents/diamond.py) as a spec: the world-model env
contract, episode padding of the conditioning, labels that never cross an episode start,
guidance, which parameters each step trains, the loop with resume, 8 devices equal 1, and
one-sentence config errors. Tiny 'debug' sizes; one agent per module."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import diamond as diamond_config
from wm_jax.agents.cnn_lstm import ImaginedActorCritic
from wm_jax.agents.diamond import make_diamond
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.diamond import make_diamond_model
from wm_jax.train import train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
               act=ActionSpec(True, num_actions=5))
H = 4   # conditioning frames of every variant


def debug_agent_config(starts=(0, 0, 0)):
  """The debug agent config with steps starting at updates `starts` (denoiser, reward/end, actor-critic), the actor-critic then on every update."""
  agent = diamond_config.get_config("debug").agent
  agent.schedule.update(dict(zip(("denoiser_start", "reward_end_start", "actor_critic_start"),
                                 starts)))
  agent.schedule.actor_critic_every = 1
  return agent


def replay_batch(B=4, T=6, seed=0, first_at=()):
  """A fixed batch in the replay format of wm_jax/agents/base.py; episodes start at t = 0 and `first_at`."""
  rng = np.random.default_rng(seed)
  first = np.zeros((B, T), bool)
  first[:, 0] = True
  for t in first_at:
    first[:, t] = True
  action = rng.integers(0, 5, (B, T)).astype(np.int32)
  action[first] = 0
  return {"image": rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8), "action": action,
          "reward": rng.choice([-1.0, 0.0, 1.0], (B, T)).astype(np.float32), "is_first": first,
          "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}


def noisy(params, scale=0.05, seed=0):
  """Params with small random offsets: DIAMOND zero-initialises its output convs, so a fresh
  denoiser ignores its inputs."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def model():
  wm = make_diamond_model(debug_agent_config(), SPEC)
  return wm, noisy(wm.init(jax.random.key(0)))


def test_world_model_env_steps_frames_rewards_and_ends(model):
  """reset_from a real context, then step: frames in [0, 1] (8-bit levels), reward in
  {-1, 0, 1}, cont in {0, 1}, and the sampled frame becomes the newest conditioning frame."""
  wm, params = model
  batch = replay_batch(B=3)
  context = {k: batch[k][:, :H] for k in ("image", "action", "is_first")}

  @jax.jit
  def run(params, key):
    sim = wm.reset_from(params, context, key)
    sim1, obs, reward, cont = wm.step(params, sim, jnp.array([0, 1, 2]), key)
    return sim, sim1, obs, reward, cont

  sim, sim1, obs, reward, cont = run(params, jax.random.key(1))
  np.testing.assert_allclose(sim["frame"], batch["image"][:, H - 1] / 255.0, atol=1e-6)
  frame = np.asarray(obs["image"])
  assert frame.shape == (3, 64, 64, 3) and frame.dtype == np.float32
  assert frame.min() >= 0.0 and frame.max() <= 1.0
  np.testing.assert_allclose(frame * 255.0, np.round(frame * 255.0), atol=1e-3)  # quantised
  assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0} and set(np.unique(cont)) <= {0.0, 1.0}
  np.testing.assert_allclose(sim1["frames"][:, -1], frame * 2.0 - 1.0, atol=1e-6)
  np.testing.assert_allclose(sim1["frames"][:, :-1], sim["frames"][:, 1:])
  np.testing.assert_array_equal(sim1["actions"][:, -1], [0, 1, 2])


def test_conditioning_frames_of_an_earlier_episode_are_padding(model):
  """The denoiser loss does not see frames before the last episode start in its window: they
  are zeroed like DIAMOND's padding, so changing them changes nothing."""
  wm, params = model
  batch = replay_batch(first_at=(3,))          # window t = 1..5 holds an episode start at 3
  changed = {**batch, "image": batch["image"].copy()}
  changed["image"][:, 1:3] = 255 - changed["image"][:, 1:3]
  loss = lambda b: wm.denoiser_loss(params["denoiser"], b, jax.random.key(2))[0]
  np.testing.assert_allclose(loss(batch), loss(changed), rtol=1e-6)
  later = {**batch, "image": batch["image"].copy()}
  later["image"][:, 4] = 255 - later["image"][:, 4]
  assert abs(float(loss(batch)) - float(loss(later))) > 1e-4


def test_reward_end_labels_never_cross_an_episode_start(model):
  """The reward/end loss has no label on a step that starts an episode (its reward and end
  belong to no transition of the sequence), and does have one on every other step."""
  wm, params = model
  batch = replay_batch(first_at=(3,))
  loss = lambda b: float(wm.reward_end_loss(params["reward_end"], b)[0])
  at_start = {**batch, "reward": batch["reward"].copy()}
  at_start["reward"][:, 3] = -at_start["reward"][:, 3] + 1.0
  assert loss(at_start) == pytest.approx(loss(batch), rel=1e-6)
  inside = {**batch, "reward": batch["reward"].copy()}
  inside["reward"][:, 4] = np.where(inside["reward"][:, 4] > 0, -1.0, 1.0)
  assert abs(loss(inside) - loss(batch)) > 1e-4


def test_guidance_weight_zero_is_the_conditional_denoiser(model):
  """cfg_weight = 0 samples with the conditional prediction alone; w > 0 moves it away along
  (conditional - action-dropped) (DWM eq. 4)."""
  wm, params = model
  x, sigma = jax.random.normal(jax.random.key(3), (2, 64, 64, 3)), jnp.array([0.5, 2.0])
  frames = jax.random.uniform(jax.random.key(4), (2, H, 64, 64, 3), minval=-1, maxval=1)
  actions = jnp.array([[1, 2, 3, 4], [4, 3, 2, 1]])
  plain = wm.guided_denoiser(params["denoiser"], frames, actions)(x, sigma)
  cfg = debug_agent_config()
  cfg.denoiser.update(act_dropout=0.2, cfg_weight=1.5)
  guided_wm = make_diamond_model(cfg, SPEC)
  guided = guided_wm.guided_denoiser(params["denoiser"], frames, actions)(x, sigma)
  cond = wm.network(params["denoiser"], frames, actions)
  np.testing.assert_allclose(plain, jnp.floor((jnp.clip(
      wm_denoise(wm, cond, x, sigma), -1, 1) + 1) / 2 * 255) / 255 * 2 - 1, atol=1e-5)
  assert float(jnp.abs(guided - plain).max()) > 1e-2


def wm_denoise(wm, net, x, sigma):
  from wm_jax.core import edm
  from wm_jax.models.diamond import edm_config
  return edm.denoise(net, x, sigma, edm_config(wm.cfg))


@pytest.fixture(scope="module")
def agent_update():
  agent = make_diamond(debug_agent_config(starts=(5, 5, 0)), SPEC)
  assert agent.schedule(0) == (False, False, True) and agent.schedule(5) == (True, True, True)
  update = functools.partial(agent.update, phase=agent.schedule(0))
  return agent, agent.init(jax.random.key(0)), jax.jit(update)


def test_actor_critic_step_trains_only_the_actor_critic(agent_update):
  """Before the denoiser and reward/end steps start, an update moves the actor-critic alone:
  imagination reads the world model without gradient."""
  agent, state, update = agent_update
  after, metrics = update(state, replay_batch(first_at=(2,)), jax.random.key(1))
  moved = lambda name: max(float(jnp.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(state["params"][name]), jax.tree.leaves(after["params"][name])))
  assert moved("actor_critic") > 0
  assert moved("denoiser") == 0 and moved("reward_end") == 0
  assert "denoiser_loss" not in metrics and float(metrics["actor_critic_loss"]) != 0
  for name, value in metrics.items():
    assert np.isfinite(float(value)), name


def test_each_phase_compiles_without_a_conditional(agent_update):
  """The schedule is static (one compiled update per phase): a `lax.cond` around the conv steps
  ran them ~30x slower on XLA:CPU."""
  agent, state, _ = agent_update
  update = functools.partial(agent.update, phase=(True, True, True))
  jaxpr = str(jax.make_jaxpr(update)(state, replay_batch(), jax.random.key(1)))
  assert " cond[" not in jaxpr and "cond(" not in jaxpr


def test_acting_resets_the_lstm_where_an_episode_starts(agent_update):
  agent, state, _ = agent_update
  act = jax.jit(agent.act, static_argnums=4)
  obs = {"image": replay_batch(B=3)["image"][:, 0], "is_first": jnp.ones(3, bool)}
  action, carry = act(state, agent.initial_carry(3), obs, jax.random.key(2), True)
  assert action.shape == (3,) and action.dtype == jnp.int32
  reset = {**obs, "is_first": jnp.array([True, False, False])}
  _, again = act(state, carry, reset, jax.random.key(3), False)
  _, fresh = act(state, agent.initial_carry(3), reset, jax.random.key(3), False)
  np.testing.assert_allclose(again[1][0], fresh[1][0], atol=1e-6)
  assert float(jnp.abs(again[1][1] - fresh[1][1]).max()) > 0


def test_collection_is_uniform_until_the_actor_critic_trains():
  """Before update `actor_critic_start` collection ignores the (untrained) policy, as DIAMOND's
  zero heads do; after it, and in evaluation, the policy acts (epsilon 0.01 aside)."""
  agent = make_diamond(debug_agent_config(starts=(0, 0, 10)), SPEC)
  state = agent.init(jax.random.key(0))
  actor = state["params"]["actor_critic"]["params"]["actor"]
  actor["bias"] = actor["bias"].at[2].set(1e4)     # a policy that always picks action 2
  act = jax.jit(agent.act, static_argnums=4)
  n = 1000
  obs = {"image": jnp.zeros((n, 64, 64, 3), jnp.uint8), "is_first": jnp.ones(n, bool)}

  def share_of_action_2(step, explore):
    action, _ = act({**state, "step": jnp.int32(step)}, agent.initial_carry(n), obs,
                    jax.random.key(step), explore)
    return float(jnp.mean(action == 2))

  assert 0.15 < share_of_action_2(9, True) < 0.25      # uniform over 5 actions
  assert share_of_action_2(10, True) > 0.97
  assert share_of_action_2(9, False) == 1.0


def test_debug_actor_critic_heads_start_at_flax_default_init():
  """The debug variant sets zero_heads=False (configs/diamond.py says why): a fresh policy
  and value already depend on the frame."""
  ac = ImaginedActorCritic(diamond_config.get_config("debug").agent.actor_critic,
                           ActionSpec(True, num_actions=5))
  params = ac.init(jax.random.key(0), (32, 32, 3))
  frames = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  _, logits, value = ac.net.apply(params, ac.zero_carry(2), frames)
  assert np.all(logits[0] != logits[1]) and value[0] != value[1]


def test_actor_critic_is_diamonds_network():
  """At agent/default.yaml's sizes (channels 32, 32, 64, 64, LSTM 512; 18 actions) the net has
  the official ActorCritic's parameters, counted by hand from actor_critic.py and blocks.py:
  conv3x3 896, SmallResBlocks 9,312 + 9,312 + 20,672 (1x1 projection) + 37,056, LSTMCell
  3,149,824, value 513, policy 9,234 = 3,236,819, less PyTorch's second LSTM bias (4 x 512),
  which flax's cell does not carry. Fresh, it gives a uniform policy and zero value (zero
  heads), and its LSTM is init_lstm's: forget bias 1, other biases 0, the recurrent kernels
  one orthogonal [512, 4 x 512] matrix, the input kernels within the Xavier bound of the fused
  [1024, 4 x 512] one."""
  ac = ImaginedActorCritic(diamond_config.get_config("atari100k").agent.actor_critic,
                           ActionSpec(True, num_actions=18))
  params = ac.init(jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(params)) == 3_236_819 - 4 * 512
  _, logits, value = ac.net.apply(params, ac.zero_carry(2),
                                  jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)))
  assert not np.any(logits) and not np.any(value)
  cell = params["params"]["cell"]
  recurrent = jnp.concatenate([cell["h" + gate]["kernel"] for gate in "ifgo"], axis=1)
  np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(512), atol=1e-5)
  np.testing.assert_array_equal(cell["hf"]["bias"], 1.0)
  for gate in "igo":
    np.testing.assert_array_equal(cell["h" + gate]["bias"], 0.0)
  bound = (6.0 / (1024 + 4 * 512)) ** 0.5
  inputs = jnp.concatenate([cell["i" + gate]["kernel"] for gate in "ifgo"], axis=1)
  assert float(jnp.abs(inputs).max()) <= bound and float(jnp.abs(inputs).max()) > 0.95 * bound
  assert [name for name in params["params"] if name.startswith("blocks")] == [
      "blocks_0", "blocks_1", "blocks_2", "blocks_3"]
  assert "proj" in params["params"]["blocks_2"] and "proj" not in params["params"]["blocks_3"]


@pytest.mark.slow   # two compiles of the full update (~1.5 min); `make test-all` runs it
def test_runs_through_the_loop_and_resumes(tmp_path):
  config = diamond_config.get_config("debug")
  config.run.update(steps=200, eval_every=200, eval_episodes=2, log_every=100,
                    checkpoint_every=100, learning_starts=100)
  config.agent.schedule.actor_critic_start = 0
  # One phase and small batches: this checks the loop and resume, not the debug budget.
  config.run.update(batch_size=4, train_ratio=6.0)
  config.agent.world_model_batch_size = None
  config.agent.schedule.actor_critic_every = 1
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["agent_step"] == 200 and counters["updates"] > 0
  config.run.steps = 260
  again = train(config, str(tmp_path / "run"), progress=False)
  assert again["agent_step"] == 260 and again["updates"] > counters["updates"]


DATA_PARALLEL = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0")
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    import functools, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from test_diamond import SPEC, debug_agent_config, replay_batch
    from wm_jax.agents.cnn_lstm import ImaginedActorCritic
    from wm_jax.agents.diamond import make_diamond
    assert jax.device_count() == 8
    agent = make_diamond(debug_agent_config(), SPEC)
    update = functools.partial(agent.update, phase=agent.schedule(0))   # all three steps
    state, key = agent.init(jax.random.key(0)), jax.random.key(1)
    batch = replay_batch(B=8, first_at=(2,))
    single = jax.jit(update)(*jax.device_put((state, batch, key), jax.devices()[0]))
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    multi = jax.jit(update, in_shardings=(rep, shard, rep), out_shardings=(rep, rep))(
        jax.device_put(state, rep), jax.device_put(batch, shard), jax.device_put(key, rep))
    assert len(jax.tree.leaves(multi)[0].sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(single[1]), jax.tree.leaves(multi[1])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)
    # The first AdamW step moves every weight by about lr * sign(grad): a weight whose
    # gradient is float noise may move either way on 8 devices.
    for a, b in zip(jax.tree.leaves(single[0]), jax.tree.leaves(multi[0])):
      a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
      off = ~np.isclose(a, b, rtol=2e-3, atol=2e-5)
      assert off.mean() < 0.01 and np.all(np.abs(a - b)[off] <= 2.5e-3), (off.sum(), a.shape)
    print("OK", float(single[1]["denoiser_loss"]), float(multi[1]["denoiser_loss"]))
""")


@pytest.mark.slow   # ~1.5 min; the sharded update is the suite's one path, tested on DreamerV3 by `make test`
def test_eight_device_update_equals_one_device_update():
  """All three steps on a batch of 8 sharded over 8 fake CPU devices equal the 1-device update
  up to float reduction order (the update averages over the global batch only)."""
  out = subprocess.run([sys.executable, "-c", DATA_PARALLEL, ROOT], capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("path, value, message", [
    ("denoiser.architecture", "unet3d", "architecture='unet3d' is unknown: use 'frame_stack' "
                                        "or 'cross_attention'"),
    ("denoiser.cfg_weight", 1.0, r"cfg_weight=1.0 guides against the action-dropped "
                                 r"prediction.*act_dropout > 0"),
    ("denoiser.act_dropout", 1.0, "act_dropout must lie in"),
    ("denoiser.sampler.order", 3, "sampler order=3 is unknown: use 1 \\(Euler\\) or 2"),
    ("actor_critic.burn_in", 4, r"burn_in in \[0, num_cond_frames=4\)"),
    ("precision", "float16", "agent.precision='float16' is not one of"),
    ("denoiser.cond_channels", 30, "cond_channels=30 must be even and a multiple of"),
    ("actor_critic.net", "resnet", "net='resnet' is unknown: use 'iris' or 'diamond'"),
])
def test_impossible_configs_fail_with_one_sentence(path, value, message):
  config = diamond_config.get_config("debug")
  section, _, field = path.rpartition(".")
  target = config.agent
  for part in section.split(".") if section else ():
    target = target[part]
  target[field] = value
  with pytest.raises(RunConfigError, match=message):
    validate(config)


def test_short_sequences_and_non_image_envs_are_refused():
  """Replay sequences shorter than an imagined rollout (H + horizon) are refused: the
  reward/end LSTM would run longer in imagination than it ever learnt on."""
  config = diamond_config.get_config("debug")
  config.run.batch_length = 18
  with pytest.raises(RunConfigError, match=r"num_cond_frames \+ actor_critic.horizon = 19 "
                                           r"steps .* run.batch_length=18: raise"):
    validate(config)
  config.agent.actor_critic.horizon = 14
  validate(config)
  vector = EnvSpec(obs={"vector": ArraySpec((4,), "float32")}, act=SPEC.act)
  with pytest.raises(RunConfigError, match="DIAMOND models 'image' observations"):
    make_diamond_model(config.agent, vector)
  continuous = EnvSpec(obs=SPEC.obs, act=ActionSpec(False, dim=2))
  with pytest.raises(RunConfigError, match="DIAMOND embeds discrete actions"):
    make_diamond_model(config.agent, continuous)


@pytest.mark.parametrize("variant", diamond_config.VARIANTS)
def test_every_variant_validates(variant):
  config = diamond_config.get_config(variant)
  validate(config)
  assert config.method == "diamond" and config.variant == variant


def test_sweeps_take_diamond_runs_beside_other_methods(tmp_path):
  from experiments import sweep
  configs = [os.path.join(ROOT, f"experiments/configs/{m}.py:atari100k")
             for m in ("diamond", "random")]
  jobs = sweep.make_jobs(configs, "pong", 1, str(tmp_path), [], "m")
  assert [j.name for j in jobs] == ["diamond/Pong/seed0", "random/Pong/seed0"]
