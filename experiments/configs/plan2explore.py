"""Plan2Explore (Sekar et al. 2020, arXiv:2005.05960): reward-free exploration by ensemble
disagreement, then zero-shot / few-shot adaptation (wm_jax/agents/plan2explore.py).
Variants: dmc_proprio, dmc_vision, debug.

The paper builds on Dreamer V1: its world model, actor-critics and schedule are dreamerv1.py's
(batch 50 x 50, 100 updates per 1000 agent steps, action repeat 2 on DMC as the presets). The
exploration part follows the paper (sec. 3) and its reference code's defaults
(github.com/ramanans1/plan2explore, scripts/configs.py): 5 one-step predictors of the next
embedding, 2 hidden ReLU layers as wide as the embedding (units 0 = the embedding size),
bootstrap resampling per member, intrinsic reward scale 10000, the model's Adam (lr 6e-4,
clip 100) for the ensemble, and a reward head that does not shape the representation
(`reward_head.stop_grad`, the reference code's freeze_extrinsic_heads).

`explore.policy='random'` explores with uniform random actions instead (the paper's random
baseline at the same budget); `explore.adapt_after_updates=U` hands collection to the task actor
after U updates (few-shot adaptation), -1 explores for the whole run (zero-shot: evaluation
always runs the task actor, trained in imagination on the reward head).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv1, dreamerv3
from experiments.configs.common import check_variant

VARIANTS = ("dmc_proprio", "dmc_vision", "debug")


def agent_config() -> ml_collections.ConfigDict:
  a = dreamerv1.agent_config()
  a.reward_head.stop_grad = True
  a.explore = ml_collections.ConfigDict(dict(
      policy="disagreement", members=5, layers=2, units=0, act="relu", intr_scale=10000.0,
      bootstrap=True, adapt_after_updates=-1))
  a.explore.opt = ml_collections.ConfigDict(a.model_opt.to_dict())
  return a


def get_config(variant: str = "dmc_proprio") -> ml_collections.ConfigDict:
  """Run config of a Plan2Explore variant (dmc_proprio, dmc_vision, debug)."""
  check_variant(variant, VARIANTS)
  config = dreamerv1.get_config(variant)
  config.method = "plan2explore"
  config.agent = agent_config()
  if variant == "debug":
    dreamerv3.use_continuous_debug_task(config)
    config.agent.explore.update(members=3, units=32)
  return config
