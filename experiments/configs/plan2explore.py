"""Plan2Explore (Sekar et al. 2020, arXiv:2005.05960): reward-free exploration by ensemble
disagreement, then zero-shot / few-shot adaptation (wm_jax/agents/plan2explore.py).
Variants: dmc_proprio, dmc_vision, debug, dmc_proprio_dreamerv3.

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

`dmc_proprio_dreamerv3` (a named deviation from the paper's base) puts the same exploration on
DreamerV3's world model and actor-critic (dreamerv3.py:dmc_proprio: categorical latents,
symlog-twohot heads, return normalisation, an entropy bonus), as the 2023 DreamerV3 code's
`Explore` behaviour with its `Disag` reward does (dreamerv3 1.5.0, behaviors.py / expl.py; that
code's ensemble is 8 heads of 5 x 1024 predicting the stochastic state, and it mixes in the
task reward at 1.0; here the paper's embedding target, 5 members and reward-free exploration
stay). Dreamer V1's tanh-Normal actor, without an entropy bonus, collapses to a constant action
within a few hundred updates at a CPU budget (README, Plan2Explore, gives the runs).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv1, dreamerv3
from experiments.configs.common import check_variant

VARIANTS = ("dmc_proprio", "dmc_vision", "debug", "dmc_proprio_dreamerv3")
ON_DREAMERV3 = "_dreamerv3"   # variant suffix: DreamerV3's world model and actor-critic as base


def add_exploration(agent: ml_collections.ConfigDict) -> None:
  """A Dreamer agent config -> Plan2Explore's, in place: the exploration section and a reward
  head that reads stop-gradient features."""
  agent.reward_head.stop_grad = True
  agent.explore = ml_collections.ConfigDict(dict(
      policy="disagreement", members=5, layers=2, units=0, act="relu", intr_scale=10000.0,
      bootstrap=True, adapt_after_updates=-1))
  agent.explore.opt = ml_collections.ConfigDict(agent.model_opt.to_dict())


def get_config(variant: str = "dmc_proprio") -> ml_collections.ConfigDict:
  """Run config of a Plan2Explore variant (one of VARIANTS): the base Dreamer's run config
  with the exploration added."""
  check_variant(variant, VARIANTS)
  base = dreamerv3 if variant.endswith(ON_DREAMERV3) else dreamerv1
  config = base.get_config(variant.removesuffix(ON_DREAMERV3))
  config.method, config.variant = "plan2explore", variant
  add_exploration(config.agent)
  if variant == "debug":
    dreamerv3.use_continuous_debug_task(config)
    config.agent.explore.update(members=3, units=32)
  return config
