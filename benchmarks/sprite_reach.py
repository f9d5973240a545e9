"""Learning benchmark from pixels: a method's `debug` variant on sprite/reach (64 x 64 RGB, or
the variant's own frame size: DIAMOND's is 32 x 32; wm_jax/envs/sprite.py) through the real
training loop (wm_jax.train), printing the eval-return curve, the mean training return per
evaluation interval (many more episodes than an evaluation), a uniformly random policy's return
and the wall clock as JSON, and plotting the curves against the random return in
<workdir>/curve.png.

  python -m benchmarks.sprite_reach [--method=iris] [--steps=20000] [--max_minutes=30] \
      [--override=agent.imag_batch=256 ...]

Everything but the run length, evaluation schedule, seed and the `--override` fields is the
variant's own (network sizes, replay batch, train ratio, learning rates, IRIS's stage starts):
see experiments/configs/<method>.py; the overrides are printed with the result. The random
baseline plays `--random_episodes` episodes of the same env with uniformly random actions
(about 1.2 per 50-step episode; walking straight to the goal scores about 18). `--max_minutes`
stops the run (with a checkpoint) when the wall-clock budget is spent; the same command with a
larger `--steps` resumes a finished or stopped run (keeping its replay size).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks.learning import learning_results, stop_after
from wm_jax.envs import sprite
from wm_jax.errors import UserError
from wm_jax.quality import apply_override
from wm_jax.train import train

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "iris", ["iris", "storm", "diamond", "dreamerv3"],
                  "config file experiments/configs/<method>.py (its debug variant)")
flags.DEFINE_integer("steps", 20_000, "agent steps")
flags.DEFINE_integer("eval_every", 2_000, "agent steps between evaluations")
flags.DEFINE_integer("eval_episodes", 8, "episodes per evaluation")
flags.DEFINE_integer("random_episodes", 256, "episodes of the random baseline")
flags.DEFINE_float("max_minutes", 0.0, "stop after this many minutes (0: no limit)")
flags.DEFINE_integer("seed", 0, "seed")
flags.DEFINE_string("workdir", "", "run directory (default: a fresh temporary one)")
flags.DEFINE_multi_string("override", [], "field=value set on the debug variant's config, "
                          "e.g. agent.actor_opt.lr=1e-4 (repeatable)")


def random_policy_return(episodes: int, key: jax.Array) -> float:
  """Mean undiscounted return of uniformly random actions over `episodes` sprite episodes."""
  length = sprite.SpriteProtocol().episode_length

  def episode(key):
    k_reset, k_act, k_env = jax.random.split(key, 3)
    state, _ = sprite.reset(k_reset)
    actions = jax.random.randint(k_act, (length,), 0, 5)
    step = lambda state, xs: sprite.step(state, *xs)
    _, steps = jax.lax.scan(step, state, (actions, jax.random.split(k_env, length)))
    return jnp.sum(steps["reward"])

  return float(jnp.mean(jax.jit(jax.vmap(episode))(jax.random.split(key, episodes))))


def saved_replay_capacity(workdir: str) -> int | None:
  """The replay size of the run in `workdir` (None: no run there yet), kept when a longer
  --steps resumes it: the replay is part of the checkpoint."""
  path = os.path.join(workdir, "config.json")
  if not workdir or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)["run"]["replay_capacity"]


def make_config():
  config = importlib.import_module(f"experiments.configs.{FLAGS.method}").get_config("debug")
  config.seed = FLAGS.seed
  if (config.env.suite, config.env.task) != ("sprite", "reach"):
    config.env.update(suite="sprite", task="reach", protocol={})
  config.env.eval_envs = min(FLAGS.eval_episodes, 4)
  config.run.update(steps=FLAGS.steps, eval_every=FLAGS.eval_every,
                    eval_episodes=FLAGS.eval_episodes, log_every=FLAGS.eval_every,
                    checkpoint_every=FLAGS.eval_every,
                    replay_capacity=saved_replay_capacity(FLAGS.workdir)
                    or max(FLAGS.steps, config.run.replay_capacity))
  for override in FLAGS.override:
    apply_override(config, override)
  return config


def main(_):
  try:
    run()
  except UserError as e:
    sys.exit(f"error: {e}")


def run():
  config = make_config()
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="sprite_reach_")
  random_return = random_policy_return(FLAGS.random_episodes, jax.random.key(FLAGS.seed))
  stop_after(FLAGS.max_minutes)
  t0 = time.time()
  counters = train(config, workdir, progress=False)
  wall = time.time() - t0
  size = config.env.protocol.get("image_size", sprite.SpriteProtocol().image_size)
  task = f"sprite/reach ({size}x{size} pixels)"
  results = learning_results(workdir, task, FLAGS.method,
                             FLAGS.eval_every, {"uniformly random policy": random_return})
  print(json.dumps({
      "task": task, "method": FLAGS.method, "variant": "debug",
      "settings": {"steps": FLAGS.steps, "eval_every": FLAGS.eval_every,
                   "eval_episodes": FLAGS.eval_episodes, "seed": FLAGS.seed,
                   "train_ratio": config.run.train_ratio, "batch_size": config.run.batch_size,
                   "batch_length": config.run.batch_length,
                   "learning_starts": config.run.learning_starts,
                   "overrides": FLAGS.override},
      "random_policy_mean_return": round(random_return, 2),
      "agent_steps": counters["agent_step"], "updates": counters["updates"],
      "wall_seconds": round(wall, 1),
      "run_wall_seconds": round(counters["wall_seconds"], 1),   # over every resume of the run
      "cpu_count": os.cpu_count(),
      **results,
      "best_mean_eval_return": max((p["mean_return"] for p in results["eval_curve"]),
                                   default=None),
      "workdir": workdir}, indent=1))


if __name__ == "__main__":
  app.run(main)
