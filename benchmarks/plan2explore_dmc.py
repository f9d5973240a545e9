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
the random policy, i.e. of the random explorer's own episodes). `--adapt_after_updates=U`
measures few-shot adaptation instead: the task actor collects from update U on (few_shot.png).

The CPU budget (the defaults below) keeps the algorithm and shrinks the compute: 200 dense units
instead of 400, 16 x 32 batches instead of 50 x 50, 4000 agent steps at action repeat 8
(PlaNet's for cartpole; 32 episodes), about 0.4 updates per agent step, and the paper's learning
rates (model 6e-4, actor and critic 8e-5).

`--base=dreamerv3` runs the `dmc_proprio_dreamerv3` variant (the exploration on DreamerV3's
world model and actor-critic) at benchmarks.dreamer_dmc's DreamerV3 budget (debug size, action
repeat 2, 16 x 16 batches, train ratio 64, 4 envs, its learning rates, gamma and critic lr) for
every flag not given, e.g.

  python -m benchmarks.plan2explore_dmc --base=dreamerv3 --task=cheetah_run --steps=30000
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
flags.DEFINE_integer("adapt_after_updates", -1,
                     "agent.explore.adapt_after_updates: -1 explores for the whole run "
                     "(zero-shot), U hands collection to the task actor after U updates "
                     "(few-shot)")
flags.DEFINE_enum("base", "dreamerv1", ["dreamerv1", "dreamerv3"],
                  "the Dreamer under the exploration: the paper's V1 (variant dmc_proprio) or "
                  "DreamerV3 (dmc_proprio_dreamerv3)")
V1_BUDGET = dict(method="plan2explore", task="cartpole_swingup", action_repeat=8, units=200,
                 steps=4000, train_ratio=205.0, batch_size=16, batch_length=32, num_envs=1,
                 learning_starts=625, model_lr=6e-4, ac_lr=8e-5, eval_every=500,
                 eval_episodes=4)
# --base=dreamerv3 keeps benchmarks.dreamer_dmc's DreamerV3 budget for every flag not given.
DREAMERV3_BUDGET = {name: FLAGS[name].default
                    for name in V1_BUDGET if name not in ("method", "task", "steps")}
for name, value in V1_BUDGET.items():
  FLAGS.set_default(name, value)


def use_base_budget() -> str:
  """The config variant of --base; for DreamerV3 its budget replaces the defaults of the flags
  not given on the command line."""
  if FLAGS.base == "dreamerv1":
    return "dmc_proprio"
  for name, value in DREAMERV3_BUDGET.items():
    if not FLAGS[name].present:
      setattr(FLAGS, name, value)
  return "dmc_proprio_dreamerv3"


def collected_returns(workdir: str) -> list[float]:
  """Returns of the training (collected) episodes in the run's scores.jsonl."""
  with open(os.path.join(workdir, "scores.jsonl")) as f:
    return [r["return"] for r in map(json.loads, f) if r["kind"] == "train"]


def protocol() -> str:
  """'zero-shot' (exploration for the whole run) or 'few-shot' (--adapt_after_updates >= 0)."""
  return "zero-shot" if FLAGS.adapt_after_updates < 0 else "few-shot"


def plot(results: dict, random_return: float | None, path: str) -> None:
  """Task eval return against agent steps, one line per exploration."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, res in results.items():
    curve = res["eval_curve"]
    ax.plot([p["agent_step"] for p in curve], [p["mean_return"] for p in curve], marker="o",
            label=f"{name} exploration")
  if random_return is not None:
    ax.axhline(random_return, color="gray", ls="--", label="random policy")
  collection = ("reward-free exploration" if protocol() == "zero-shot" else
                f"the task actor collects from update {FLAGS.adapt_after_updates}")
  ax.set(xlabel=f"agent steps ({collection})", ylabel=f"{protocol()} task return",
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
  variant = use_base_budget()
  results = {}
  for exploration in FLAGS.explorations:
    config, default = dreamer_dmc.make_config(variant)
    config.agent.explore.update(policy=exploration,
                                adapt_after_updates=FLAGS.adapt_after_updates)
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
        "eval_curve": curve,
        "final_eval_return": curve[-1]["mean_return"] if curve else None,
        "deviations_from_dmc_proprio": devs,
        "command": dreamer_dmc.command(config, devs, workdir), "workdir": workdir}
  random_return = (results.get("random", {}).get("collected_mean_return")
                   if protocol() == "zero-shot" else None)   # few-shot: the task actor's too
  plot_path = os.path.join(FLAGS.out, protocol().replace("-", "_") + ".png")
  plot(results, random_return, plot_path)
  summary = {"task": FLAGS.task, "variant": variant, "seed": FLAGS.seed,
             "protocol": protocol(), "adapt_after_updates": FLAGS.adapt_after_updates,
             "cpu_count": os.cpu_count(), "random_policy_return": random_return,
             "explorations": results, "plot": plot_path}
  with open(os.path.join(FLAGS.out, "plan2explore_dmc.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  app.run(main)
