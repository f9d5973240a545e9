"""What bfloat16 compute changes in DreamerV3's learning, on identical data (CPU-friendly).

  python -m benchmarks.precision_losses [--game=Pong] [--size=debug] [--updates=200]

Collects `--collect_steps` agent steps of an Atari-100k game with a uniform random policy into
the suite's replay, then trains the `atari100k` variant's agent from the same initial params on
the same sequence of replay batches and RNG keys once per precision. Prints JSON: each
precision's loss curves (mean over every `--log_every` updates), the mean absolute and relative
gap of each loss to float32 over the last quarter of the updates, and the seconds per update.
Speed on CPU says little (bfloat16 is emulated there); on a GPU, `benchmarks.train_speed
--precision=...` measures it.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

from experiments.configs import dreamerv3
from experiments.configs.common import ATARI_PROTOCOL
from wm_jax.agents.dreamer import make_dreamer
from wm_jax.envs import make_env
from wm_jax.replay import make_replay, to_stored

FLAGS = flags.FLAGS
flags.DEFINE_string("game", "Pong", "Atari-100k game")
flags.DEFINE_string("size", "debug", "agent.size (debug, XS, S, ...)")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "compute dtypes to compare")
flags.DEFINE_integer("collect_steps", 4_000, "random-policy agent steps in the replay")
flags.DEFINE_integer("updates", 200, "updates per precision")
flags.DEFINE_integer("log_every", 20, "updates per point of the loss curves")
flags.DEFINE_integer("batch_size", 16, "replay batch size")
flags.DEFINE_integer("batch_length", 64, "replay sequence length")
flags.DEFINE_integer("seed", 0, "seed of the data, the params and the updates")

CURVES = ("model_loss", "image_loss", "reward_loss", "cont_loss", "dyn_loss", "actor_loss",
          "critic_loss")


def collect(spec_env, replay, steps: int, seed: int):
  """A replay state holding `steps` random-policy steps of one env."""
  rng = np.random.default_rng(seed)
  add = jax.jit(replay.add)
  state = replay.init()
  step = spec_env.reset()
  action = np.zeros((1,), np.int32)
  keys = list(spec_env.spec.obs) + ["reward", "is_first", "is_last", "is_terminal"]
  for _ in range(steps):
    state = add(state, to_stored({k: step[k] for k in keys}, action, spec_env.spec))
    action = rng.integers(0, spec_env.spec.act.num_actions, (1,)).astype(np.int32)
    step = spec_env.step(action)
  return state


def agent_config(precision: str):
  agent = dreamerv3.get_config("atari100k").agent
  if FLAGS.size == "debug":
    dreamerv3.shrink_for_debug(agent)
  else:
    agent.size = FLAGS.size
  agent.precision = precision
  return agent


def train_curves(precision: str, spec, replay, replay_state) -> dict:
  """Loss curves and seconds per update of `--updates` updates at `precision`."""
  agent = make_dreamer(agent_config(precision), spec)
  state = agent.init(jax.random.key(FLAGS.seed))
  update = jax.jit(agent.update)
  sample = jax.jit(replay.sample)
  history, seconds = [], []
  for i in range(FLAGS.updates):
    k_sample, k_update = jax.random.split(jax.random.fold_in(jax.random.key(FLAGS.seed), i))
    batch = sample(replay_state, k_sample)
    t0 = time.perf_counter()
    state, metrics = update(state, batch, k_update)
    metrics = jax.device_get(metrics)
    seconds.append(time.perf_counter() - t0)
    history.append({k: float(metrics[k]) for k in CURVES})
  n = FLAGS.log_every
  curves = {k: [round(float(np.mean([h[k] for h in history[j:j + n]])), 4)
                for j in range(0, len(history), n)] for k in CURVES}
  return {"curves": curves, "history": history,
          "median_update_seconds": round(float(np.median(seconds[1:])), 4)}


def main(_):
  env = make_env("atari", FLAGS.game, 1, FLAGS.seed, **ATARI_PROTOCOL)
  replay = make_replay(env.spec, 1, FLAGS.collect_steps, FLAGS.batch_size, FLAGS.batch_length)
  replay_state = collect(env, replay, FLAGS.collect_steps, FLAGS.seed)
  env.close()
  results = {p: train_curves(p, env.spec, replay, replay_state) for p in FLAGS.precisions}
  ref = results[FLAGS.precisions[0]]["history"]
  tail = slice(3 * FLAGS.updates // 4, None)
  for p, res in results.items():
    hist = res.pop("history")
    res["last_quarter_gap_to_" + FLAGS.precisions[0]] = {
        k: {"mean_abs": round(float(np.mean([abs(a[k] - b[k]) for a, b in
                                             zip(hist[tail], ref[tail])])), 4),
            "mean_rel": round(float(np.mean([abs(a[k] - b[k]) / max(abs(b[k]), 1e-8)
                                             for a, b in zip(hist[tail], ref[tail])])), 4)}
        for k in CURVES}
  print(json.dumps({"game": FLAGS.game, "size": FLAGS.size, "variant": "atari100k",
                    "collect_steps": FLAGS.collect_steps, "updates": FLAGS.updates,
                    "batch": [FLAGS.batch_size, FLAGS.batch_length],
                    "log_every": FLAGS.log_every, "backend": jax.default_backend(),
                    "device": jax.devices()[0].device_kind, "results": results}, indent=1))


if __name__ == "__main__":
  app.run(main)
