"""PlaNet (Hafner et al. 2019, arXiv:1811.04551): the Gaussian RSSM trained as PlaNet trains it
and online planning with CEM in latent space, as `agent.behavior='cem'` of the Dreamer module
(wm_jax/agents/dreamer.py; the planner is wm_jax/core/planning.py). Variants: dmc_proprio,
dmc_vision, debug.

From the paper (sec. 3-5, App. A): deterministic GRU state 200, Gaussian stochastic state 30
(min std 0.1), free nats 3, Adam lr 1e-3 eps 1e-4 with gradient clipping 1000, batches of
50 sequences x 50 steps, 100 updates per collected episode (1000 env steps = 1000 / R agent
steps: train_ratio 100 x 2500 / (1000 / R)), exploration noise Normal(0, 0.3) on the planned
action, CEM with horizon 12, 1000 candidates, top 100, 10 iterations, and the action repeat R
per task (cartpole 8, reacher 4, cheetah 4, finger 2, cup 4, walker 2; the default task here,
cheetah_run, uses 4: set --config.env.protocol.action_repeat for another task).

Deviations, named: no latent overshooting (the paper's optional multi-step KL); dense layer
sizes, the conv encoder/decoder and ELU activations are DreamerV1's (dreamerv1.py), the
successor that kept PlaNet's RSSM; the planner sums reward means along sampled prior
trajectories, one trajectory per candidate, as the paper does.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv1, dreamerv3
from experiments.configs.common import check_variant

VARIANTS = ("dmc_proprio", "dmc_vision", "debug")
ACTION_REPEAT = {"cartpole": 8, "reacher": 4, "cheetah": 4, "finger": 2, "cup": 4, "walker": 2}


def agent_config() -> ml_collections.ConfigDict:
  a = dreamerv1.agent_config()
  a.behavior = "cem"
  a.planner = ml_collections.ConfigDict(dict(horizon=12, candidates=1000, top_k=100,
                                             iterations=10))
  a.rssm.update(deter=200, hidden=200, stoch=30, min_std=0.1)
  a.kl.update(kind="gaussian", free_nats=3.0, scale=1.0)
  a.model_opt.update(lr=1e-3, eps=1e-4, clip=1000.0, wd=0.0)
  a.actor.expl_noise = 0.3
  return a


def get_config(variant: str = "dmc_proprio") -> ml_collections.ConfigDict:
  """Run config of a PlaNet variant (dmc_proprio, dmc_vision, debug)."""
  check_variant(variant, VARIANTS)
  config = dreamerv3.get_config(variant)
  config.method = "planet"
  config.agent = agent_config()
  run = config.run
  if variant == "debug":
    dreamerv3.use_continuous_debug_task(config)
    config.agent.planner.update(horizon=4, candidates=32, top_k=4, iterations=2)
  else:
    repeat = ACTION_REPEAT["cheetah"]
    config.env.protocol.action_repeat = repeat
    run.batch_size, run.batch_length = 50, 50
    run.train_ratio = 100 * 50 * 50 / (1000 / repeat)
    run.learning_starts = 5 * 1000 // repeat   # the paper's 5 random seed episodes
  return config
