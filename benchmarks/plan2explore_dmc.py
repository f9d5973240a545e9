"""Plan2Explore's zero-shot benchmark on a DMC proprio task (Sekar et al. 2020, sec. 4.1):
reward-free exploration by ensemble disagreement against uniform random exploration at the same
budget, each followed by the zero-shot task policy, through the real training loop.

  python -m benchmarks.plan2explore_dmc --task=cartpole_swingup --out=DIR

For each exploration (`--explorations`, default disagreement,random) it trains
experiments/configs/plan2explore.py:dmc_proprio with `agent.explore.policy` set, into
DIR/<exploration> (rerunning resumes), through `benchmarks.dreamer_dmc`'s budget flags. The
collecting policy never sees the task reward; the task actor-critic learns in imagination on the
reward head, and every evaluation runs it: that return is the zero-shot score. Writes
DIR/plan2explore_dmc.json (per exploration: the zero-shot eval curve, the mean return of the
episodes the explorer collected, updates, wall clock, the deviations from the variant and the
equivalent `experiments.train` command) and DIR/zero_shot.png (both curves and the return of
the random policy, i.e. of the random explorer's own episodes).

The CPU budget (the defaults below) keeps the algorithm and shrinks the compute: 200 dense units
instead of 400, 16 x 32 batches instead of 50 x 50, 4000 agent steps at action repeat 8
(PlaNet's for cartpole; 32 episodes), about 0.4 updates per agent step, and the paper's learning
rates (model 6e-4, actor and critic 8e-5).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags, logging

from benchmarks import dreamer_dmc
from benchmarks.learning import eval_curve, stop_after
from wm_jax.train import train

FLAGS = flags.FLAGS
flags.DEFINE_list("explorations", ["disagreement", "random"], "agent.explore.policy values")
flags.DEFINE_string("out", "runs/plan2explore_dmc", "output folder (one run folder each)")
for name, value in dict(method="plan2explore", task="cartpole_swingup", action_repeat=8,
                        units=200, steps=4000, train_ratio=205.0, batch_size=16,
                        batch_length=32, num_envs=1, learning_starts=625, model_lr=6e-4,
                        ac_lr=8e-5, eval_every=500, eval_episodes=4).items():
  FLAGS.set_default(name, value)


def collected_returns(workdir: str) -> list[float]:
  """Returns of the training (collected) episodes in the run's scores.jsonl."""
  with open(os.path.join(workdir, "scores.jsonl")) as f:
    return [r["return"] for r in map(json.loads, f) if r["kind"] == "train"]


def plot(results: dict, random_return: float | None, path: str) -> None:
  """Zero-shot eval return against agent steps, one line per exploration."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, res in results.items():
    curve = res["zero_shot_eval_curve"]
    ax.plot([p["agent_step"] for p in curve], [p["mean_return"] for p in curve], marker="o",
            label=f"{name} exploration")
  if random_return is not None:
    ax.axhline(random_return, color="gray", ls="--", label="random policy")
  ax.set(xlabel="agent steps (reward-free exploration)", ylabel="zero-shot task return",
         title=f"Plan2Explore, {FLAGS.task}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(_):
  logging.set_verbosity(logging.WARNING)
  if FLAGS.method != "plan2explore":
    raise app.UsageError("--method must stay plan2explore here; use benchmarks.dreamer_dmc "
                         "for the other agents.")
  os.makedirs(FLAGS.out, exist_ok=True)
  stop_after(FLAGS.max_minutes)
  results = {}
  for exploration in FLAGS.explorations:
    config, default = dreamer_dmc.make_config()
    config.agent.explore.policy = exploration
    workdir = os.path.join(FLAGS.out, exploration)
    t0 = time.time()
    counters = train(config, workdir, progress=False)
    devs = dreamer_dmc.deviations(config, default)
    collected = collected_returns(workdir)
    curve = eval_curve(workdir)
    results[exploration] = {
        "agent_steps": counters["agent_step"],
        "env_frames": FLAGS.action_repeat * counters["agent_step"],
        "updates": counters["updates"], "wall_seconds": round(counters["wall_seconds"], 1),
        "this_call_seconds": round(time.time() - t0, 1),
        "collected_episodes": len(collected),
        "collected_mean_return": round(float(np.mean(collected)), 1) if collected else None,
        "zero_shot_eval_curve": curve,
        "final_zero_shot_return": curve[-1]["mean_return"] if curve else None,
        "deviations_from_dmc_proprio": devs,
        "command": dreamer_dmc.command(config, devs, workdir), "workdir": workdir}
  random_return = results.get("random", {}).get("collected_mean_return")
  plot(results, random_return, os.path.join(FLAGS.out, "zero_shot.png"))
  summary = {"task": FLAGS.task, "seed": FLAGS.seed, "cpu_count": os.cpu_count(),
             "random_policy_return": random_return, "explorations": results,
             "plot": os.path.join(FLAGS.out, "zero_shot.png")}
  with open(os.path.join(FLAGS.out, "plan2explore_dmc.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  app.run(main)
