"""Shared pieces of the learning benchmarks (dreamer_cartpole, dreamer_dmc, sprite_reach): the
CPU budget's flags and how they change a config, the eval- and training-return curves of a run
directory and their plot, and a wall-clock budget that stops a run with a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
from absl import flags

from wm_jax.eval import plots

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


def _returns_by_step(workdir: str, kind: str) -> dict[int, list[float]]:
  """{agent_step: [return, ...]} of the run's scores.jsonl lines of `kind` ('eval' or 'train')."""
  rounds: dict[int, list] = {}
  with open(os.path.join(workdir, "scores.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec["kind"] == kind:
        rounds.setdefault(rec["agent_step"], []).append(rec["return"])
  return rounds


def _curve(rounds: dict[int, list]) -> list[dict]:
  return [{"agent_step": s, "mean_return": round(float(np.mean(r)), 2), "episodes": len(r)}
          for s, r in sorted(rounds.items())]


def eval_curve(workdir: str) -> list[dict]:
  """[{agent_step, mean_return, episodes}] from the run's scores.jsonl eval lines."""
  return _curve(_returns_by_step(workdir, "eval"))


def train_curve(workdir: str, every: int) -> list[dict]:
  """[{agent_step, mean_return, episodes}]: the training episodes that ended in each window of
  `every` agent steps, (k - 1) * every < step <= k * every, at agent_step k * every."""
  windows: dict[int, list] = {}
  for step, returns in _returns_by_step(workdir, "train").items():
    windows.setdefault(-(-step // every) * every, []).extend(returns)
  return _curve(windows)


def plot_curves(path: str, task: str, curves: dict[str, list[dict]],
                references: dict[str, float]) -> None:
  """Writes a PNG at `path`: each curve of `curves` ({label: eval_curve/train_curve points})
  as return against agent steps, and `references` ({name: return}) as dashed lines."""
  as_xy = lambda points: [(np.array([p["agent_step"] for p in points]),
                           np.array([p["mean_return"] for p in points]))]
  figure = plots.learning_curves({task: {label: as_xy(points) for label, points in curves.items()
                                         if points}},
                                 {task: references}, xlabel="agent steps", ylabel="return",
                                 title="Return against agent steps (dashed: references)")
  figure.set_size_inches(7.0, 4.5)   # one panel: room for the legend under it
  figure.savefig(path, dpi=120)


def learning_results(workdir: str, task: str, method: str, every: int,
                     references: dict[str, float] | None = None) -> dict:
  """A finished run's 'eval_curve', 'train_curve' (per `every` agent steps) and 'plot', the path
  of <workdir>/curve.png that draws both beside `references` ({name: return})."""
  results = {"eval_curve": eval_curve(workdir), "train_curve": train_curve(workdir, every),
             "plot": os.path.join(workdir, "curve.png")}
  plot_curves(results["plot"], task, {f"{method} eval": results["eval_curve"],
                                      f"{method} training episodes": results["train_curve"]},
              references or {})
  return results


def stop_after(minutes: float) -> None:
  """Sends this process SIGTERM after `minutes` (0: never); the loop then saves and returns."""
  if minutes:
    timer = threading.Timer(minutes * 60, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
