"""Training-speed benchmark of a Dreamer-family method, STORM, IRIS or DIAMOND (numbers are measured, not asserted).

  python -m benchmarks.train_speed --method=dreamerv3 [--sizes=debug,XS,S] [--obs=image]
  python -m benchmarks.train_speed --method=storm [--sizes=debug,paper]
  python -m benchmarks.train_speed --method=iris [--sizes=debug,paper]
  python -m benchmarks.train_speed --method=diamond [--sizes=debug,paper]
      [--diamond_architecture=frame_stack|cross_attention]

Prints one JSON object: per model size, the update rate (one world-model + actor-critic
update on a replay batch of batch_size x batch_length, DreamerV3's and STORM's default
16 x 64), replayed samples/s (= updates/s x B x T, the quantity DreamerV3's train ratio
counts), imagination state-steps/s (policy + prior rollout of imag_horizon steps from every
B*T start for the Dreamers; for STORM from imag_batch starts after the burn-in), compile
seconds of the update, and peak memory (device peak bytes where the backend reports them; on
CPU the process's peak RSS so far, so later sizes include earlier ones). STORM adds the
world-model update alone (the paper's "world model training" step) and imagined frames/s
with the KV cache against recomputing the full causal pass over all tokens at every step;
IRIS adds each stage's update (tokenizer, world model, actor-critic) at its own batch
(B x T of its config) and imagined frames/s (K + 1 tokens and one decode per frame) with and
without the cache. DIAMOND gives the denoiser update at batch 8 and 32, the full update
(denoiser, reward/end model, actor-critic in imagination) at its config's batch, and imagined
frames/s (sampler and reward/end model per frame) at batch 1 and 32 for 1, 3 and 10 Euler steps.
Each update figure comes with its matmul + convolution FLOPs (benchmarks/flops.py, counted on
the jaxpr so that scans count their full length), the achieved TFLOP/s and, on a device kind
whose peak is known, the model FLOPs utilisation (MFU).
"""

from __future__ import annotations

import functools
import importlib
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks.batches import fake_batch, spec_for
from benchmarks.flops import count_flops, mfu

from wm_jax.agents.actor_critic import make_actor_critic
from wm_jax.agents.dreamer import make_dreamer, resolve_agent_config
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.rssm import make_world_model

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dreamerv3",
                    "dreamerv1 | dreamerv2 | dreamerv3 | storm | iris | diamond")
flags.DEFINE_list("sizes", None, "model sizes: DreamerV3 Table B.1 names (default debug,XS,S) "
                  "or, for STORM, debug and paper (default paper), for IRIS debug and paper "
                  "(default both)")
flags.DEFINE_enum("obs", "image", ["image", "vector"], "64x64x3 uint8 frames or a 4-d vector")
flags.DEFINE_integer("batch_size", 16, "replay batch size B")
flags.DEFINE_integer("batch_length", 64, "replay sequence length T")
flags.DEFINE_integer("updates", 5, "timed updates per size (after one warm-up)")
flags.DEFINE_integer("iris_imagine_batch", 0, "IRIS: imagined sequences for the frames/s "
                     "figures (0: the config's batch; the uncached rollout costs O(tokens^2))")
flags.DEFINE_integer("iris_tokenizer_microbatches", 1, "IRIS: agent.tokenizer.microbatches "
                     "(slices of the tokenizer step's 256 frames, for memory; 4 brings the "
                     "paper-size update from 31 to 18 GB on XLA:CPU)")
flags.DEFINE_enum("diamond_architecture", "frame_stack", ["frame_stack", "cross_attention"],
                  "DIAMOND: the denoiser network (DWM sec. 4.2.1)")
flags.DEFINE_bool("diamond_full_update", True, "DIAMOND: also time the full update (denoiser, "
                  "reward/end, actor-critic imagining 15 steps) at the config's batch; at the "
                  "paper size on a 2-core CPU that takes over 15 minutes")
flags.DEFINE_integer("diamond_imagine_steps", 8, "DIAMOND: imagined env steps timed per "
                     "frames/s figure")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"],
                  "auto: the config's precision on accelerators, float32 on CPU")


def flop_figures(fn, args, seconds: float, precision: str) -> dict:
  """Matmul + conv FLOPs of one call (counted on the jaxpr, scans times their length), the
  achieved TFLOP/s and, on a device kind with a known peak, the MFU."""
  counted = count_flops(fn, *args)
  figures = {"flops": counted["flops"],
             "tflops_per_s": round(counted["flops"] / seconds / 1e12, 3),
             "mfu": mfu(counted["flops"], seconds, precision)}
  if counted["while_loops_counted_once"]:
    figures["while_loops_counted_once"] = counted["while_loops_counted_once"]
  return figures


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
  flop_args = (agent.update, (state, batch, key))
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
          "update_flops": flop_figures(*flop_args, update_s, cfg.precision),
          "model_loss": float(metrics["model_loss"]),
          "peak_memory_bytes": peak_memory_bytes()}


def storm_config(size: str, precision: str):
  """STORM's atari100k agent config at the paper's size or the debug one (paper imagination)."""
  from experiments.configs import storm
  agent = storm.get_config("atari100k").agent
  if size == "debug":
    storm.shrink_for_debug(agent)
    agent.update(imag_batch=1024, imag_context=8, imag_horizon=16)
  elif size != "paper":
    raise app.UsageError(f"STORM sizes are 'debug' and 'paper', not {size!r}.")
  if precision == "auto":
    precision = "float32" if jax.default_backend() == "cpu" else agent.precision
  agent.precision = precision
  return agent


def timed(fn, args, repeats: int) -> tuple[float, float, object]:
  """(compile seconds, seconds per call after one warm-up call, last output) of jit(fn)(*args)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "?")
  # Progress on stderr, for a run cut short (IRIS's paper-size update had not returned 70 min
  # after the start on 2 CPU cores): the compile time once known, then each call's time.
  print(f"{name}: compiled in {compile_s:.1f} s", file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  print(f"{name}: warm-up call {time.perf_counter() - t0:.4f} s", file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = compiled(*args)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - t0) / repeats
  print(f"{name}: {seconds:.4f} s per call", file=sys.stderr, flush=True)
  return compile_s, seconds, out


def measure_storm(size: str, spec: EnvSpec, B: int, T: int, updates: int) -> dict:
  """STORM at `size`: full update, world-model update, imagination with and without the cache."""
  from wm_jax.agents.actor_critic import make_optimizer
  from wm_jax.agents.dreamer import world_model_step
  from wm_jax.agents.storm import make_storm
  from wm_jax.models.storm import StormNet, make_storm_model

  cfg = storm_config(size, FLAGS.precision)
  agent = make_storm(cfg, spec)
  state = agent.init(jax.random.key(0))
  batch, key = fake_batch(spec, B, T), jax.random.key(1)
  compile_s, update_s, (_, metrics) = timed(agent.update, (state, batch, key), updates)

  wm = make_storm_model(cfg, spec)
  opt = make_optimizer(cfg.model_opt)
  wm_update = lambda p, o, b, k: world_model_step(wm, opt, p, o, b, k)[:3]
  wm_compile_s, wm_update_s, _ = timed(
      wm_update, (state["wm"], state["wm_opt"], batch, key), updates)

  _, (_, out) = jax.jit(wm.loss)(state["wm"], batch, key)
  start, _ = jax.jit(wm.imagination_starts)(state["wm"], out["stoch"], batch, key)
  N, C, H = cfg.imag_batch, cfg.imag_context, cfg.imag_horizon
  ac = make_actor_critic(wm.cfg, spec.act)
  policy = lambda actor: lambda s, k: ac.policy.sample(
      ac.actor_net.apply(actor, jnp.concatenate([s["deter"], s["stoch"]], -1)), k)

  def cached(params, actor, start, key):
    return wm.imagine(params, policy(actor), start, H, key)

  def uncached(params, actor, start, key):
    """The same rollout, recomputing the causal pass over all C + t tokens at every step."""
    apply = lambda *a, method: wm.net.apply(params, *a, method=method)
    L = C + H
    tokens = jnp.zeros((N, L, cfg.transformer.width), wm.net.dtype)   # context left as zeros

    def step(carry, k):
      tokens, s, t = carry
      k1, k2 = jax.random.split(k)
      a = policy(actor)(s, k1)
      tokens = jax.lax.dynamic_update_slice_in_dim(
          tokens, apply(s["stoch"], a, method=StormNet.token)[:, None], t, 1)
      every = apply(tokens, jnp.ones((1, L, L), bool), method=StormNet.sequence)
      h = jax.lax.dynamic_index_in_dim(every, t, 1, keepdims=False)
      s = {"deter": h, "stoch": wm._sample_prior(params, h, k2)}
      return (tokens, s, t + 1), s

    s0 = {"deter": start["deter"], "stoch": start["stoch"]}
    return jax.lax.scan(step, (tokens, s0, C), jax.random.split(key, H))[1]

  frames = {}
  for name, fn in (("kv_cache", cached), ("no_cache", uncached)):
    _, seconds, _ = timed(fn, (state["wm"], state["ac"]["actor"], start, key), updates)
    frames[name] = round(N * H / seconds, 1)
  params = sum(x.size for x in jax.tree.leaves((state["wm"], state["ac"]["actor"],
                                                state["ac"]["critic"])))
  return {"size": size, "precision": cfg.precision, "params": int(params),
          "compile_s": round(compile_s, 2), "updates_per_s": round(1.0 / update_s, 4),
          "update_s": round(update_s, 3), "world_model_update_s": round(wm_update_s, 3),
          "world_model_compile_s": round(wm_compile_s, 2),
          "update_flops": flop_figures(agent.update, (state, batch, key), update_s, cfg.precision),
          "world_model_update_flops": flop_figures(
              wm_update, (state["wm"], state["wm_opt"], batch, key), wm_update_s, cfg.precision),
          "replayed_samples_per_s": round(B * T / update_s, 1),
          "imagined_frames_per_s": frames, "imagination": [N, C, H],
          "model_loss": float(metrics["model_loss"]), "peak_memory_bytes": peak_memory_bytes()}


def measure_iris(size: str, spec: EnvSpec, updates: int) -> dict:
  """IRIS at `size` ('debug' or 'paper'), batch run.batch_size x run.batch_length of its config:
  each stage's update, the full staged update, imagined frames/s with and without the cache."""
  from experiments.configs import iris
  from wm_jax.agents.iris import IrisLearner, check_agent_config, make_iris
  from wm_jax.models.iris import WorldModelNet

  config = iris.get_config("debug" if size == "debug" else "atari100k")
  if size not in ("debug", "paper"):
    raise app.UsageError(f"IRIS sizes are 'debug' and 'paper', not {size!r}.")
  cfg, run = config.agent, config.run
  cfg.schedule.update(tokenizer_start=0, world_model_start=0, actor_critic_start=0)
  cfg.tokenizer.microbatches = FLAGS.iris_tokenizer_microbatches
  if FLAGS.precision != "auto":
    cfg.precision = FLAGS.precision
  try:
    check_agent_config(cfg, run)
  except RunConfigError as e:
    raise app.UsageError(str(e)) from None
  learner = IrisLearner(cfg, spec)
  agent = make_iris(cfg, spec)
  state = agent.init(jax.random.key(0))
  batch, key = fake_batch(spec, run.batch_size, run.batch_length), jax.random.key(1)
  every_stage = functools.partial(agent.update, phase=agent.schedule(0))   # all start at 0
  compile_s, update_s, (_, metrics) = timed(every_stage, (state, batch, key), updates)
  params, opt = state["params"], state["opt"]
  stages = {}
  for name, fn, args in (("tokenizer", learner.train_tokenizer, (params, opt, batch, key)),
                         ("world_model", learner.train_transformer, (params, opt, batch)),
                         ("actor_critic", learner.train_actor_critic, (params, opt, batch, key))):
    stages[name] = round(timed(fn, args, updates)[1], 3)

  # Frames imagined per figure: the horizon, within the Transformer's context after the start
  # frame, so that neither path refills its context midway (the cached step would).
  model, K = learner.model, learner.model.K
  H = min(cfg.actor_critic.horizon, cfg.world_model.context - 1)
  N = FLAGS.iris_imagine_batch or run.batch_size
  tokens = jnp.zeros((N, 1, K), jnp.int32)
  actions = jnp.zeros((N, 1), jnp.int32)

  def cached(params, key):
    sim = model.reset_from_tokens(params, tokens, actions, jnp.zeros((N, 64, 64, 3)))
    step = lambda sim, k: (model.step(params, sim, jnp.zeros((N,), jnp.int32), k)[0], None)
    return jax.lax.scan(step, sim, jax.random.split(key, H))[0]["frame"]

  def uncached(params, key):
    """The same H frames, recomputing the causal pass over every token so far at each token."""
    wm = params["world_model"]
    apply = lambda *a, method: model.world_model.apply(wm, *a, method=method)
    L = (H + 1) * (K + 1)
    x = jnp.zeros((N, L, cfg.world_model.width), jnp.float32)
    x = x.at[:, :K].set(apply(tokens[:, 0], method=WorldModelNet.embed_frame))

    def token_step(carry, k):
      x, t, frame_tokens = carry
      h = jax.lax.dynamic_index_in_dim(apply(x, method=WorldModelNet.features), t - 1, 1, False)
      new = jax.random.categorical(k, apply(h, method=WorldModelNet.obs_logits))
      is_action = (t % (K + 1)) == K
      emb = jnp.where(is_action, apply(jnp.zeros((N,), jnp.int32), method=WorldModelNet.embed_action),
                      apply(new, method=WorldModelNet.embed_frame))
      x = jax.lax.dynamic_update_slice_in_dim(x, emb[:, None].astype(x.dtype), t, 1)
      return (x, t + 1, frame_tokens), new

    _, new = jax.lax.scan(token_step, (x, K, tokens[:, 0]), jax.random.split(key, H * (K + 1)))
    last = jnp.swapaxes(new[-K:], 0, 1)
    return model.decode(params["tokenizer"], last)

  frames = {}
  for name, fn in (("kv_cache", cached), ("no_cache", uncached)):
    frames[name] = round(N * H / timed(fn, (params, key), 1)[1], 1)
  n_params = {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in params.items()}
  return {"size": size, "precision": cfg.precision, "params": n_params,
          "batch": [run.batch_size, run.batch_length],
          "tokenizer_microbatches": cfg.tokenizer.microbatches, "compile_s": round(compile_s, 2),
          "update_s": round(update_s, 3), "stage_update_s": stages,
          "update_flops": flop_figures(every_stage, (state, batch, key), update_s, cfg.precision),
          "imagined_frames_per_s": frames, "imagination": [N, H, K + 1],
          "peak_memory_bytes": peak_memory_bytes()}


def diamond_agent_config(size: str):
  """DIAMOND's agent config at `size` ('debug' or 'paper' = atari100k), with --diamond_architecture and --precision applied."""
  from experiments.configs import diamond
  if size not in ("debug", "paper"):
    raise app.UsageError(f"DIAMOND sizes are 'debug' and 'paper', not {size!r}.")
  cfg = diamond.get_config("debug" if size == "debug" else "atari100k").agent
  cfg.denoiser.architecture = FLAGS.diamond_architecture
  cfg.schedule.update(denoiser_start=0, reward_end_start=0, actor_critic_start=0)
  if FLAGS.precision != "auto":
    cfg.precision = FLAGS.precision
  return cfg


def diamond_imagination(model, params, N: int, steps: int, key) -> float:
  """Imagined frames/s of DIAMOND's world model for N sequences over `steps` env steps (each a full sampler run plus the reward/end model), after a warm-up call."""
  H, image = model.H, model.image_shape
  context = {"image": jnp.zeros((N, H) + image, jnp.uint8),
             "action": jnp.zeros((N, H), jnp.int32)}

  def rollout(params, key):
    sim = model.reset_from(params, context, key)
    step = lambda sim, k: (model.step(params, sim, jnp.zeros((N,), jnp.int32), k)[0], None)
    return jax.lax.scan(step, sim, jax.random.split(key, steps))[0]["frame"]

  return N * steps / timed(rollout, (params, key), 2)[1]


def measure_diamond(size: str, spec: EnvSpec, updates: int) -> dict:
  """DIAMOND at `size`: the denoiser update at batch 8 and 32 (H + 1 frames each), the full
  update at the config's batch, imagined frames/s at batch 1 and 32 for 1, 3 and 10 Euler steps."""
  from experiments.configs import diamond
  from wm_jax.agents.diamond import DiamondLearner, make_diamond
  from wm_jax.models.diamond import make_diamond_model

  cfg = diamond_agent_config(size)
  run = diamond.get_config("debug" if size == "debug" else "atari100k").run
  learner = DiamondLearner(cfg, spec)
  agent = make_diamond(cfg, spec)
  state = agent.init(jax.random.key(0))
  params, opt, key = state["params"], state["opt"], jax.random.key(1)
  H = cfg.denoiser.num_cond_frames
  denoiser = {}
  for B in (8, 32):
    batch = fake_batch(spec, B, H + 1)
    compile_s, update_s, _ = timed(learner.train_denoiser, (params, opt, batch, key), updates)
    denoiser[B] = {"update_s": round(update_s, 3), "compile_s": round(compile_s, 2),
                   **flop_figures(learner.train_denoiser, (params, opt, batch, key), update_s,
                                  cfg.precision)}
  full = None
  if FLAGS.diamond_full_update:
    batch = fake_batch(spec, run.batch_size, run.batch_length)
    every_step = functools.partial(agent.update, phase=agent.schedule(0))   # all start at 0
    compile_s, update_s, _ = timed(every_step, (state, batch, key), max(1, updates // 2))
    full = {"batch": [run.batch_size, run.batch_length], "update_s": round(update_s, 3),
            "compile_s": round(compile_s, 2),
            **flop_figures(every_step, (state, batch, key), update_s, cfg.precision)}
  frames = {}
  for steps in (1, 3, 10):
    cfg.denoiser.sampler.num_steps = steps
    model = make_diamond_model(cfg, spec)
    for N in (1, 32):
      frames[f"batch{N}_euler{steps}"] = round(
          diamond_imagination(model, params, N, FLAGS.diamond_imagine_steps, key), 1)
  n_params = {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in params.items()}
  return {"size": size, "precision": cfg.precision,
          "architecture": cfg.denoiser.architecture, "params": n_params,
          "denoiser_update": {f"batch{B}": v for B, v in denoiser.items()},
          "full_update": full,
          "imagined_frames_per_s": frames, "imagined_steps": FLAGS.diamond_imagine_steps,
          "peak_memory_bytes": peak_memory_bytes()}


def main(_):
  spec = spec_for(FLAGS.obs)
  if FLAGS.method == "diamond":
    results = [measure_diamond(s, spec, FLAGS.updates) for s in FLAGS.sizes or ["paper"]]
  elif FLAGS.method == "iris":
    results = [measure_iris(s, spec, FLAGS.updates) for s in FLAGS.sizes or ["debug", "paper"]]
  elif FLAGS.method == "storm":
    results = [measure_storm(s, spec, FLAGS.batch_size, FLAGS.batch_length, FLAGS.updates)
               for s in FLAGS.sizes or ["paper"]]
  else:
    results = [measure(FLAGS.method, s, spec, FLAGS.batch_size, FLAGS.batch_length,
                       FLAGS.updates) for s in FLAGS.sizes or ["debug", "XS", "S"]]
  device = jax.devices()[0]
  print(json.dumps({"method": FLAGS.method, "obs": FLAGS.obs,
                    "batch": [FLAGS.batch_size, FLAGS.batch_length],
                    "backend": jax.default_backend(), "device": device.device_kind,
                    "num_devices": jax.device_count(), "results": results}, indent=1))


if __name__ == "__main__":
  app.run(main)
