"""Dreamer agent (wm_jax/agents/dreamer.py): the Agent contract, configs, mixed precision and
the data-parallel update."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import dreamerv1, dreamerv2, dreamerv3
from wm_jax.agents.dreamer import make_dreamer
from wm_jax.train import validate
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError, UnknownNameError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = EnvSpec(obs={"vector": ArraySpec((4,), "float32")}, act=ActionSpec(True, num_actions=2))


def replay_batch(spec, B=4, T=8, seed=0):
  """A fixed batch in the replay format of wm_jax/agents/base.py."""
  rng = np.random.default_rng(seed)
  batch = {}
  if "vector" in spec.obs:
    batch["vector"] = rng.normal(size=(B, T) + spec.obs["vector"].shape).astype(np.float32)
  if "image" in spec.obs:
    batch["image"] = rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8)
  if spec.act.discrete:
    batch["action"] = rng.integers(0, spec.act.num_actions, (B, T)).astype(np.int32)
  else:
    batch["action"] = rng.uniform(-1, 1, (B, T, spec.act.dim)).astype(np.float32)
  first = np.zeros((B, T), bool)
  first[:, 0] = True
  batch["action"][first] = 0
  batch.update(reward=rng.normal(size=(B, T)).astype(np.float32), is_first=first,
               is_last=np.zeros((B, T), bool), is_terminal=np.zeros((B, T), bool))
  return jax.tree.map(jnp.asarray, batch)


def step_obs(spec, N, first):
  obs = {k: jnp.zeros((N,) + v.shape, v.dtype) for k, v in spec.obs.items()}
  obs.update(reward=jnp.zeros(N), is_first=jnp.full(N, first), is_last=jnp.zeros(N, bool),
             is_terminal=jnp.zeros(N, bool))
  return obs


def check_agent(agent, spec, updates=1):
  state = agent.init(jax.random.key(0))
  carry = agent.initial_carry(3)
  act = jax.jit(agent.act, static_argnums=4)
  for first, explore in ((True, True), (False, True), (False, False)):
    action, carry = act(state, carry, step_obs(spec, 3, first), jax.random.key(1), explore)
    chex.assert_shape(action, (3,) + spec.act.shape)
    assert action.dtype == jnp.dtype(spec.act.dtype)
  update = jax.jit(agent.update)
  batch = replay_batch(spec)
  history = []
  for i in range(updates):
    state, metrics = update(state, batch, jax.random.key(i))
    history.append(float(metrics["model_loss"]))
  for name, value in metrics.items():
    assert value.shape == () and np.isfinite(float(value)), (name, value)
  assert {"model_loss", "actor_loss", "critic_loss", "reward_loss"} <= set(metrics)
  for leaf in jax.tree.leaves(state["wm"]) + jax.tree.leaves(state["ac"]["actor"]):
    assert leaf.dtype == jnp.float32   # params stay fp32 under mixed precision
  return state, history


def test_v3_vector_agent_acts_and_learns_on_a_fixed_batch():
  agent = make_dreamer(dreamerv3.get_config("debug").agent, VEC)
  _, history = check_agent(agent, VEC, updates=30)
  assert history[-1] < 0.8 * history[0], history


def test_bfloat16_compute_keeps_fp32_params():
  config = dreamerv3.get_config("debug")
  config.agent.precision = "bfloat16"
  check_agent(make_dreamer(config.agent, VEC), VEC)


@pytest.mark.slow
@pytest.mark.parametrize("module", [dreamerv1, dreamerv2, dreamerv3])
def test_image_agents_with_continuous_actions(module):
  spec = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")}, act=ActionSpec(False, dim=2))
  check_agent(make_dreamer(module.get_config("debug").agent, spec), spec)


@pytest.mark.parametrize("module", [dreamerv1, dreamerv2, dreamerv3])
@pytest.mark.parametrize("variant", dreamerv3.VARIANTS)
def test_every_variant_validates(module, variant):
  config = module.get_config(variant)
  validate(config)
  assert config.method == module.__name__.rsplit(".", 1)[-1]


def test_impossible_configs_fail_with_one_sentence():
  config = dreamerv3.get_config("debug")
  config.agent.size = "XXL"
  with pytest.raises(UnknownNameError, match=r"Unknown agent.size 'XXL': did you mean 'XL'"):
    validate(config)
  config = dreamerv3.get_config("debug")
  config.run.batch_length = config.run.replay_capacity + 1
  with pytest.raises(RunConfigError, match="raise run.replay_capacity or lower run.batch_length"):
    validate(config)
  with pytest.raises(ValueError, match="use one of atari100k, dmc_proprio, dmc_vision, debug"):
    dreamerv3.get_config("atari")
  config = dreamerv3.get_config("debug")
  config.agent.kl.kind = "balanced"
  with pytest.raises(RunConfigError, match="agent.kl.kind='balanced' is not one of"):
    make_dreamer(config.agent, VEC)


DATA_PARALLEL = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import importlib
    from wm_jax.agents import make_agent
    from test_dreamer_agent import VEC, replay_batch
    assert jax.device_count() == 8
    method = sys.argv[2]   # any method whose debug config runs on CartPole-like vectors
    config = importlib.import_module(f"experiments.configs.{method}").get_config("debug")
    agent = make_agent(method, config.agent, VEC)
    state, batch, key = agent.init(jax.random.key(0)), replay_batch(VEC, B=8), jax.random.key(1)
    one = jax.devices()[0]
    single = jax.jit(agent.update)(*jax.device_put((state, batch, key), one))
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    multi = jax.jit(agent.update, in_shardings=(rep, shard, rep), out_shardings=(rep, rep))(
        jax.device_put(state, rep), jax.device_put(batch, shard), jax.device_put(key, rep))
    assert len(jax.tree.leaves(multi)[0].sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)
    print("OK", float(single[1]["model_loss"]), float(multi[1]["model_loss"]))
""")


def test_eight_device_update_equals_one_device_update():
  """The update averages over the global batch only, so sharding it over 8 (fake CPU)
  devices gives the 1-device result up to float reduction order."""
  out = subprocess.run([sys.executable, "-c", DATA_PARALLEL, ROOT, "dreamerv3"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
