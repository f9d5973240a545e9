"""Dyna-Q (Sutton & Barto 2018, sec. 8.2) on the 'tabular' suite: the planning speed-up benchmark.

  python -m experiments.dyna_q --config=experiments/configs/dyna_q.py:<variant> --out=DIR

Variants: 'taxi' (Taxi-v3, deterministic), 'frozenlake' (FrozenLake-v1, slippery: the model
keeps the last outcome, the book's deterministic assumption), 'debug' (a few seeds and
episodes). Fields:
  env.task              a tabular task (wm_jax/envs/classic.py, TABULAR_TASKS)
  seed, num_seeds       seeds seed .. seed + num_seeds - 1, all vmapped in one call per step
  episodes              episodes per seed
  planning_steps        the n values compared (n = 0 is one-step Q-learning)
  alpha, gamma, epsilon the book's Dyna maze values (Figure 8.2): 0.1, 0.95, 0.1
  threshold, window     'episodes to threshold': episodes until the mean return of the last
                        `window` episodes first reaches `threshold`
  one_by_one_seeds      seeds also run alone (one env, one seed per call) for the speed figure
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import check_variant

VARIANTS = {
    # Taxi: -1 per step, +20 for a delivery, -10 for an illegal pick-up or drop-off; 200 steps.
    "taxi": dict(task="Taxi-v3", num_seeds=20, episodes=800, threshold=-50.0, window=10),
    # FrozenLake 4x4: return 1 on reaching the goal; 100 steps.
    "frozenlake": dict(task="FrozenLake-v1", num_seeds=20, episodes=1000, threshold=0.2,
                       window=50),
    "debug": dict(task="Taxi-v3", num_seeds=3, episodes=20, threshold=-300.0, window=5),
}


def get_config(variant: str = "taxi") -> ml_collections.ConfigDict:
  settings = VARIANTS[check_variant(variant, VARIANTS)]
  config = ml_collections.ConfigDict()
  config.method = "dyna_q"
  config.variant = variant
  config.env = ml_collections.ConfigDict(dict(suite="tabular", task=settings["task"]))
  config.seed = 0
  config.num_seeds = settings["num_seeds"]
  config.episodes = settings["episodes"]
  config.planning_steps = (0, 5) if variant == "debug" else (0, 5, 50)
  config.alpha, config.gamma, config.epsilon = 0.1, 0.95, 0.1
  config.threshold = settings["threshold"]
  config.window = settings["window"]
  config.one_by_one_seeds = 1 if variant == "debug" else 3
  return config
