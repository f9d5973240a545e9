"""Dyna-Q's planning speed-up (Sutton & Barto 2018, Figure 8.2) on a tabular task, as a table,
a plot and JSON:

  python -m experiments.dyna_q --config=experiments/configs/dyna_q.py:taxi --out=DIR

For every n in config.planning_steps, `num_seeds` seeds learn together (one vmapped jitted call
per real step, wm_jax/agents/dyna_q.py) for `episodes` episodes each. Writes to DIR:
  dyna_q.json            per n: episodes to the return threshold (mean and 95% bootstrap CI
                         over seeds, censored seeds counted at episodes + 1), mean steps and
                         return per episode, wall clock; the speed of vmapped seeds against
                         seeds run one by one; the config
  dyna_q.md              the table
  steps_per_episode.png  steps per episode against episodes, one curve per n (Figure 8.2's axes)
  return_per_episode.png the return per episode
A Dyna-Q run is not a training run of experiments.train: it learns from each real step, not
from replayed batches, so it has this entry point instead.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.config_files import parse_flags
from wm_jax.agents.dyna_q import DynaQConfig, episodes_to_threshold, run_dyna_q
from wm_jax.envs import make_env
from wm_jax.errors import UserError
from wm_jax.eval.aggregate import interval_estimates
from wm_jax.eval.plots import learning_curves

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiments/configs/dyna_q.py:<variant>", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "folder for dyna_q.json, dyna_q.md and the plots")
flags.mark_flags_as_required(["config", "out"])


def run_planning_steps(config, n: int) -> dict:
  """All seeds at planning steps n: episodes, the threshold statistic and the wall clock."""
  env = make_env(config.env.suite, config.env.task, config.num_seeds, config.seed)
  start = time.time()
  episodes, _ = run_dyna_q(env, dyna_q_config(config, n), config.episodes, config.seed)
  seconds = time.time() - start
  env.close()
  reached = episodes_to_threshold(episodes.returns, config.threshold, config.window)
  point, low, high = interval_estimates({"n": reached[:, None].astype(float)})["n"]["mean"]
  return {"planning_steps": n, "episodes_to_threshold": reached.tolist(),
          "episodes_to_threshold_mean": point, "ci95": [low, high],
          "seeds_never_reaching": int(np.sum(reached > config.episodes)),
          "mean_steps_per_episode": episodes.lengths.mean(0).round(2).tolist(),
          "mean_return_per_episode": episodes.returns.mean(0).round(3).tolist(),
          "env_steps": int(episodes.end_steps[:, -1].max()), "seconds": round(seconds, 2),
          "steps_per_episode": episodes.lengths, "returns": episodes.returns}


def dyna_q_config(config, n: int) -> DynaQConfig:
  return DynaQConfig(planning_steps=n, alpha=config.alpha, gamma=config.gamma,
                     epsilon=config.epsilon)


def speed_of_seeds(config, n: int, vmapped: dict) -> dict:
  """Seed-steps per second of the vmapped run against the first seeds run one by one (one env,
  one seed per call) for the same episodes."""
  steps, seconds = 0, 0.0
  for seed in range(config.seed, config.seed + config.one_by_one_seeds):
    env = make_env(config.env.suite, config.env.task, 1, seed)
    start = time.time()
    episodes, _ = run_dyna_q(env, dyna_q_config(config, n), config.episodes, seed)
    seconds += time.time() - start
    steps += int(episodes.end_steps[0, -1])
    env.close()
  # The vmapped run steps every seed until the slowest finished: count those steps.
  vmapped_rate = config.num_seeds * vmapped["env_steps"] / vmapped["seconds"]
  return {"planning_steps": n, "vmapped_seeds": config.num_seeds,
          "vmapped_seed_steps_per_s": round(vmapped_rate, 1),
          "one_by_one_seeds": config.one_by_one_seeds,
          "one_by_one_seed_steps_per_s": round(steps / seconds, 1),
          "speedup": round(vmapped_rate / (steps / seconds), 2)}


def table(config, results: list[dict]) -> str:
  lines = [f"# Dyna-Q on {config.env.task}: episodes until the mean return of {config.window} "
           f"episodes reaches {config.threshold}",
           "", f"{config.num_seeds} seeds, {config.episodes} episodes each; alpha "
           f"{config.alpha}, gamma {config.gamma}, epsilon {config.epsilon}. A seed that never "
           f"reaches it counts as {config.episodes + 1}.", "",
           "| planning steps n | episodes to threshold (mean) | 95% CI | seeds never reaching | "
           "steps per episode, last 10 | wall clock (s) |", "| --- | --- | --- | --- | --- | --- |"]
  for r in results:
    lines.append(f"| {r['planning_steps']} | {r['episodes_to_threshold_mean']:.1f} | "
                 f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | {r['seeds_never_reaching']} | "
                 f"{np.mean(r['mean_steps_per_episode'][-10:]):.1f} | {r['seconds']} |")
  return "\n".join(lines) + "\n"


def plot(config, results: list[dict], key: str, ylabel: str, path: str) -> None:
  episode = np.arange(1, config.episodes + 1)
  curves = {config.env.task: {f"n={r['planning_steps']}": [(episode, r[key].mean(axis=0))]
                              for r in results}}
  learning_curves(curves, {}, xlabel="episode", ylabel=ylabel,
                  title=f"Dyna-Q, mean over {config.num_seeds} seeds").savefig(path, dpi=120)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  try:
    os.makedirs(_OUT.value, exist_ok=True)
    results = []
    for n in config.planning_steps:
      results.append(run_planning_steps(config, n))
      r = results[-1]
      print(f"n={n}: {r['episodes_to_threshold_mean']:.1f} episodes to threshold "
            f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}], {r['seconds']} s", file=sys.stderr)
    speed = speed_of_seeds(config, max(config.planning_steps), results[-1])
  except UserError as e:
    sys.exit(f"error: {e}")
  plot(config, results, "steps_per_episode", "steps per episode",
       os.path.join(_OUT.value, "steps_per_episode.png"))
  plot(config, results, "returns", "return", os.path.join(_OUT.value, "return_per_episode.png"))
  for r in results:   # the per-seed arrays are in the plots; the JSON keeps the means
    del r["steps_per_episode"], r["returns"]
  summary = {"task": config.env.task, "config": json.loads(config.to_json_best_effort()),
             "results": results, "speed": speed}
  with open(os.path.join(_OUT.value, "dyna_q.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(_OUT.value, "dyna_q.md"), "w") as f:
    f.write(table(config, results))
  print(table(config, results))
  print(json.dumps({"speed": speed}))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
