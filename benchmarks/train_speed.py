"""Training-speed benchmark of a Dreamer-family method (numbers are measured, not asserted).

  python -m benchmarks.train_speed --method=dreamerv3 [--sizes=debug,XS,S] [--obs=image]

Prints one JSON object: per model size, the update rate (one world-model + actor-critic
update on a replay batch of batch_size x batch_length, DreamerV3's default 16 x 64), replayed
samples/s (= updates/s x B x T, the quantity DreamerV3's train ratio counts), imagination
state-steps/s (policy + prior rollout of imag_horizon steps from every B*T start, forward
only), compile seconds of the update, and peak memory (device peak bytes where the backend
reports them; on CPU the process's peak RSS so far, so later sizes include earlier ones).
"""

from __future__ import annotations

import importlib
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from wm_jax.agents.actor_critic import make_actor_critic
from wm_jax.agents.dreamer import make_dreamer, resolve_agent_config
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.models.rssm import make_world_model

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dreamerv3", "dreamerv1 | dreamerv2 | dreamerv3")
flags.DEFINE_list("sizes", ["debug", "XS", "S"], "model sizes (DreamerV3 Table B.1 names)")
flags.DEFINE_enum("obs", "image", ["image", "vector"], "64x64x3 uint8 frames or a 4-d vector")
flags.DEFINE_integer("batch_size", 16, "replay batch size B")
flags.DEFINE_integer("batch_length", 64, "replay sequence length T")
flags.DEFINE_integer("updates", 5, "timed updates per size (after one warm-up)")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"],
                  "auto: the config's precision on accelerators, float32 on CPU")


def spec_for(obs: str) -> EnvSpec:
  """Atari-like (64x64 RGB, 6 discrete actions) or CartPole-like (4-d vector, 2 actions)."""
  if obs == "image":
    return EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                   act=ActionSpec(True, num_actions=6))
  return EnvSpec(obs={"vector": ArraySpec((4,), "float32")}, act=ActionSpec(True, num_actions=2))


def fake_batch(spec: EnvSpec, B: int, T: int):
  rng = np.random.default_rng(0)
  batch = {"action": rng.integers(0, spec.act.num_actions, (B, T)).astype(np.int32),
           "reward": rng.normal(size=(B, T)).astype(np.float32),
           "is_first": np.zeros((B, T), bool), "is_last": np.zeros((B, T), bool),
           "is_terminal": np.zeros((B, T), bool)}
  if "image" in spec.obs:
    batch["image"] = rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8)
  else:
    batch["vector"] = rng.normal(size=(B, T, 4)).astype(np.float32)
  batch["is_first"][:, 0] = True
  return jax.tree.map(jnp.asarray, batch)


def peak_memory_bytes() -> int:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def agent_config(method: str, size: str, precision: str):
  module = importlib.import_module(f"experiments.configs.{method}")
  agent = module.get_config("atari100k").agent
  if size == "debug":
    importlib.import_module("experiments.configs.dreamerv3").shrink_for_debug(agent)
  else:
    agent.size = size
  if precision == "auto":
    precision = "float32" if jax.default_backend() == "cpu" else agent.precision
  agent.precision = precision
  return agent


def measure(method: str, size: str, spec: EnvSpec, B: int, T: int, updates: int) -> dict:
  agent_cfg = agent_config(method, size, FLAGS.precision)
  agent = make_dreamer(agent_cfg, spec)
  state = agent.init(jax.random.key(0))
  batch = fake_batch(spec, B, T)
  key = jax.random.key(1)
  t0 = time.perf_counter()
  update = jax.jit(agent.update).lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = update(state, batch, key)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for i in range(updates):
    state, metrics = update(state, batch, jax.random.key(i))
  jax.block_until_ready(metrics)
  update_s = (time.perf_counter() - t0) / updates

  cfg = resolve_agent_config(agent_cfg)
  wm = make_world_model(cfg, spec)
  ac = make_actor_critic(wm.cfg, spec.act)
  H, N = cfg.imag_horizon, B * T
  start = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], (N,) + x.shape[1:]),
                       wm.initial(state["wm"], 1))

  @jax.jit
  def imagine(wm_params, actor_params, start, key):
    policy = lambda s, k: ac.policy.sample(
        ac.actor_net.apply(actor_params, jnp.concatenate([s["deter"], s["stoch"]], -1)), k)
    return wm.imagine(wm_params, policy, start, H, key)

  jax.block_until_ready(imagine(state["wm"], state["ac"]["actor"], start, key))
  t0 = time.perf_counter()
  for i in range(updates):
    out = imagine(state["wm"], state["ac"]["actor"], start, jax.random.key(i))
  jax.block_until_ready(out)
  imagine_s = (time.perf_counter() - t0) / updates
  params = sum(x.size for x in jax.tree.leaves((state["wm"], state["ac"]["actor"],
                                                state["ac"]["critic"])))
  return {"size": size, "precision": cfg.precision, "params": int(params),
          "compile_s": round(compile_s, 2), "updates_per_s": round(1.0 / update_s, 4),
          "replayed_samples_per_s": round(B * T / update_s, 1),
          "imagination_steps_per_s": round(N * H / imagine_s, 1),
          "model_loss": float(metrics["model_loss"]),
          "peak_memory_bytes": peak_memory_bytes()}


def main(_):
  spec = spec_for(FLAGS.obs)
  results = [measure(FLAGS.method, s, spec, FLAGS.batch_size, FLAGS.batch_length,
                     FLAGS.updates) for s in FLAGS.sizes]
  device = jax.devices()[0]
  print(json.dumps({"method": FLAGS.method, "obs": FLAGS.obs,
                    "batch": [FLAGS.batch_size, FLAGS.batch_length],
                    "backend": jax.default_backend(), "device": device.device_kind,
                    "num_devices": jax.device_count(), "results": results}, indent=1))


if __name__ == "__main__":
  app.run(main)
