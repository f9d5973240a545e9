"""Open-loop prediction of Transformer world models against copying the last frame, on sprite.

  python -m benchmarks.wm_prediction [--methods=storm,iris] [--updates=600] [--horizon=16]

A fixed dataset of real frames: sprite/reach (wm_jax/envs/sprite.py, 64 x 64 RGB) under a
uniformly random policy, `--train_sequences` sequences of 64 steps to train on and
`--test_sequences` held-out episodes of `--context + --horizon` steps. Each method's world
model (its `debug` config, float32; IRIS: the tokenizer alone for `--iris_world_model_start`
updates, then tokenizer and world model together, IRIS's staged schedule) is trained for
`--updates` updates of `--batch_size` x `--batch_length` from that dataset only, then rolled
out open loop through its env interface (`reset_from` the real context, then `step` with the
real actions): per imagined step, the mean squared error (pixels in [0, 1]) over the held-out
sequences and its PSNR, next to the copy-the-last-context-frame baseline (exact for every
pixel the agent's moves leave alone).
Prints one JSON object with the curves, their means, and the training wall clock.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from wm_jax.agents.actor_critic import make_optimizer
from wm_jax.agents.dreamer import world_model_step
from wm_jax.envs import sprite
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["storm", "iris"], "world models to train and roll out")
flags.DEFINE_integer("updates", 600, "training updates per method")
flags.DEFINE_integer("batch_size", 16, "B")
flags.DEFINE_integer("batch_length", 32, "T")
flags.DEFINE_integer("train_sequences", 256, "training sequences of 64 steps")
flags.DEFINE_integer("test_sequences", 64, "held-out episodes")
flags.DEFINE_integer("context", 8, "real frames before the open-loop rollout")
flags.DEFINE_integer("horizon", 16, "imagined steps compared with the real ones")
flags.DEFINE_float("lr", 0.0, "world-model learning rate(s), 0: each config's (1e-4 in both "
                   "papers); the CPU budget's fewer updates want more")
flags.DEFINE_integer("iris_world_model_start", 0, "IRIS: updates of the tokenizer alone before "
                     "the world model trains too (IRIS's staged schedule)")
flags.DEFINE_integer("seed", 0, "seed")

SPEC = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")}, act=ActionSpec(True, num_actions=5))


def collect(key: jax.Array, sequences: int, length: int) -> dict:
  """`sequences` random-policy runs of `length` steps from a reset, in the replay format of wm_jax/agents/base.py: image uint8 [N, L, 64, 64, 3], action [N, L] (led to each frame), reward, is_first, is_last, is_terminal [N, L]."""
  def one(key):
    k_reset, k_act, k_env = jax.random.split(key, 3)
    state, first = sprite.reset(k_reset)
    actions = jax.random.randint(k_act, (length - 1,), 0, 5)

    def move(state, xs):
      action, k = xs
      state, step = sprite.step(state, action, k)
      return state, step

    _, steps = jax.lax.scan(move, state, (actions, jax.random.split(k_env, length - 1)))
    steps = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, steps)
    steps["action"] = jnp.concatenate([jnp.zeros((1,), jnp.int32), actions.astype(jnp.int32)])
    return steps

  data = jax.jit(jax.vmap(one))(jax.random.split(key, sequences))
  data.pop("is_game_over")
  return data


def sample(data: dict, key: jax.Array, B: int, T: int) -> dict:
  """B random windows of T steps from the training sequences [N, L]."""
  N, L = data["is_first"].shape
  k1, k2 = jax.random.split(key)
  rows = jax.random.randint(k1, (B,), 0, N)
  starts = jax.random.randint(k2, (B,), 0, L - T + 1)
  window = lambda x: jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(x[r], s, T, 0))(
      rows, starts)
  batch = jax.tree.map(window, data)
  batch["is_first"] = batch["is_first"].at[:, 0].set(True)
  batch["action"] = jnp.where(batch["is_first"], 0, batch["action"])
  return batch


def storm_model():
  """(world model, params, opt state, update(params, opt, batch, key, update index)) of STORM's debug config."""
  from experiments.configs import storm
  from wm_jax.models.storm import make_storm_model
  cfg = storm.get_config("debug").agent
  cfg.model_opt.lr = FLAGS.lr or cfg.model_opt.lr
  wm = make_storm_model(cfg, SPEC)
  opt = make_optimizer(cfg.model_opt)
  params = jax.jit(wm.init)(jax.random.key(FLAGS.seed))
  step = jax.jit(lambda p, o, b, k: world_model_step(wm, opt, p, o, b, k)[:3])
  return wm, params, opt.init(params), lambda p, o, b, k, update: step(p, o, b, k)


def iris_model():
  """(world model, params, opt states, update(params, opt, batch, key, update index)) of IRIS's debug config."""
  from experiments.configs import iris
  from wm_jax.agents.iris import IrisLearner
  cfg = iris.get_config("debug").agent
  for opt in (cfg.tokenizer.opt, cfg.world_model.opt):
    opt.lr = FLAGS.lr or opt.lr
  learner = IrisLearner(cfg, SPEC)
  params = jax.jit(learner.model.init)(jax.random.key(FLAGS.seed))
  opt = {name: learner.opts[name].init(params[name]) for name in params}

  @jax.jit
  def fit_tokenizer(params, opt, batch, key):
    return learner.train_tokenizer(params, opt, batch, key)

  @jax.jit
  def fit_both(params, opt, batch, key):
    params, opt, tokenizer = learner.train_tokenizer(params, opt, batch, key)
    params, opt, world_model = learner.train_transformer(params, opt, batch)
    return params, opt, {**tokenizer, **world_model}

  def fit(params, opt, batch, key, update):
    """IRIS's staged schedule: the tokenizer alone, then both from --iris_world_model_start."""
    step = fit_both if update >= FLAGS.iris_world_model_start else fit_tokenizer
    return step(params, opt, batch, key)

  return learner.model, params, opt, fit


MODELS = {"storm": storm_model, "iris": iris_model}


def rollout(wm, params, test: dict, key: jax.Array) -> jax.Array:
  """Open loop from the real context: predicted frames float32 [N, H, 64, 64, 3] in [0, 1]."""
  C, H = FLAGS.context, FLAGS.horizon
  k_reset, k_steps = jax.random.split(key)
  sim = wm.reset_from(params, {"image": test["image"][:, :C], "action": test["action"][:, :C]},
                      k_reset)

  def step(sim, xs):
    action, k = xs
    sim, obs, _, _ = wm.step(params, sim, action, k)
    return sim, obs["image"]

  actions = jnp.swapaxes(test["action"][:, C:C + H], 0, 1)
  _, frames = jax.lax.scan(step, sim, (actions, jax.random.split(k_steps, H)))
  return jnp.swapaxes(frames, 0, 1)


def errors(pred: jax.Array, real: jax.Array) -> dict:
  """Per-step MSE over sequences and its PSNR (dB, peak 1): pred/real [N, H, 64, 64, 3] in [0, 1].

  PSNR is taken of the mean MSE, not averaged over sequences: an exact copy (the agent did not
  move) has infinite PSNR, which would swamp a per-sequence average.
  """
  mse = jnp.mean(jnp.square(pred - real), axis=(0, 2, 3, 4))               # [H]
  psnr = lambda m: round(float(-10.0 * jnp.log10(m)), 2)
  return {"mse": [round(float(v), 5) for v in mse], "psnr": [psnr(v) for v in mse],
          "mean_mse": round(float(jnp.mean(mse)), 5), "psnr_of_mean_mse": psnr(jnp.mean(mse))}


def main(_):
  for method in FLAGS.methods:
    if method not in MODELS:
      raise app.UsageError(f"Unknown method {method!r}: choose from {', '.join(MODELS)}.")
  key = jax.random.key(FLAGS.seed)
  k_train, k_test, key = jax.random.split(key, 3)
  train = collect(k_train, FLAGS.train_sequences, 64)
  test = collect(k_test, FLAGS.test_sequences, FLAGS.context + FLAGS.horizon)
  real = test["image"][:, FLAGS.context:].astype(jnp.float32) / 255.0
  last = test["image"][:, FLAGS.context - 1:FLAGS.context].astype(jnp.float32) / 255.0
  results = {"copy_last_frame": errors(jnp.broadcast_to(last, real.shape), real)}
  for method in FLAGS.methods:
    wm, params, opt_state, fit = MODELS[method]()
    t0 = time.perf_counter()
    for i in range(FLAGS.updates):
      k_batch, k_fit = jax.random.split(jax.random.fold_in(key, i))
      batch = sample(train, k_batch, FLAGS.batch_size, FLAGS.batch_length)
      params, opt_state, metrics = fit(params, opt_state, batch, k_fit, i)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    pred = jax.jit(lambda p, t, k: rollout(wm, p, t, k))(params, test, key)
    results[method] = {**errors(pred, real), "train_seconds": round(seconds, 1),
                       "final_losses": {k: round(float(v), 4) for k, v in metrics.items()
                                        if k.endswith("_loss")}}
  print(json.dumps({
      "task": "sprite/reach, random policy", "context": FLAGS.context, "horizon": FLAGS.horizon,
      "updates": FLAGS.updates, "iris_world_model_start": FLAGS.iris_world_model_start, "batch": [FLAGS.batch_size, FLAGS.batch_length],
      "lr": FLAGS.lr or "config",
      "train_sequences": FLAGS.train_sequences, "test_sequences": FLAGS.test_sequences,
      "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "results": results},
      indent=1))


if __name__ == "__main__":
  app.run(main)
