"""Shared pieces of the learning benchmarks (dreamer_cartpole, dreamer_dmc): the CPU budget's
flags and how they change a config, the eval-return curve of a run directory, and a
wall-clock budget that stops a run with a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
from absl import flags

FLAGS = flags.FLAGS


def define_budget_flags(steps: int, batch_length: int = 64) -> None:
  """The flags both benchmarks share, with their defaults for run length (agent steps) and
  replay sequence length."""
  flags.DEFINE_string("size", "debug", "agent.size (debug, XS, S, ...)")
  flags.DEFINE_integer("steps", steps, "agent steps")
  flags.DEFINE_float("train_ratio", 64.0, "replayed steps per agent step")
  flags.DEFINE_integer("batch_size", 16, "replay batch size")
  flags.DEFINE_integer("batch_length", batch_length, "replay sequence length (paper: 64)")
  flags.DEFINE_integer("num_envs", 4, "training envs")
  flags.DEFINE_integer("learning_starts", 2_000, "agent steps collected before the first update")
  flags.DEFINE_float("model_lr", 3e-4, "world-model learning rate (paper: 1e-4)")
  flags.DEFINE_float("ac_lr", 1e-4, "actor and critic learning rate (paper: 3e-5)")
  flags.DEFINE_integer("eval_every", 2_500, "agent steps between evaluations")
  flags.DEFINE_integer("eval_episodes", 4, "episodes per evaluation")
  flags.DEFINE_float("max_minutes", 0.0, "stop after this many minutes (0: no limit)")
  flags.DEFINE_integer("seed", 0, "seed")
  flags.DEFINE_string("workdir", "", "run directory (default: a fresh temporary one)")


def apply_budget(config) -> None:
  """Sets the run schedule, seed and (for learners) the replay batch and learning rates of
  `config` from the budget flags, in place."""
  config.seed = FLAGS.seed
  config.env.update(num_envs=FLAGS.num_envs, eval_envs=min(FLAGS.eval_episodes, 4))
  config.run.update(steps=FLAGS.steps, eval_every=FLAGS.eval_every,
                    eval_episodes=FLAGS.eval_episodes, log_every=FLAGS.eval_every,
                    checkpoint_every=FLAGS.eval_every)
  if config.method == "random":
    return
  config.run.update(train_ratio=FLAGS.train_ratio, batch_size=FLAGS.batch_size,
                    batch_length=FLAGS.batch_length, learning_starts=FLAGS.learning_starts)
  agent = config.agent
  agent.model_opt.lr = FLAGS.model_lr
  agent.actor_opt.lr = agent.critic_opt.lr = FLAGS.ac_lr


def eval_curve(workdir: str) -> list[dict]:
  """[{agent_step, mean_return, episodes}] from the run's scores.jsonl eval lines."""
  rounds: dict[int, list] = {}
  with open(os.path.join(workdir, "scores.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec["kind"] == "eval":
        rounds.setdefault(rec["agent_step"], []).append(rec["return"])
  return [{"agent_step": s, "mean_return": round(float(np.mean(r)), 1), "episodes": len(r)}
          for s, r in sorted(rounds.items())]


def stop_after(minutes: float) -> None:
  """Sends this process SIGTERM after `minutes` (0: never); the loop then saves and returns."""
  if minutes:
    timer = threading.Timer(minutes * 60, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
