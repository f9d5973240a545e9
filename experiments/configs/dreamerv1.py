"""DreamerV1 (Hafner et al. 2020, arXiv:1912.01603) as a configuration of the Dreamer module.
Variants: atari100k, dmc_proprio, dmc_vision, debug.

Overrides of dreamerv3.agent_config() with the paper's sec. 6 / App. A settings: Gaussian
latents (30 dims, 200-unit GRU, min std 0.1), KL with free nats 3 and scale 1, ELU networks
without LayerNorm and a plain GRU, MSE image/reward/value heads, no continue head (gamma only),
a tanh-Normal actor (mean scale 5, init std 5) trained by backpropagating lambda-returns
through the learned dynamics, exploration noise 0.3, Adam lr 6e-4 model / 8e-5 actor and
value, gradient clipping 100, batch 50 x 50, 100 updates every 1000 agent steps.
Dense sizes are those of the reference code (400 units; reward 2, value 3, actor 4 layers).
Discrete actions (which V1 did not use) also backpropagate, through straight-through one-hots.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv3
from experiments.configs.common import check_variant


def agent_config() -> ml_collections.ConfigDict:
  """DreamerV1's agent fields."""
  a = dreamerv3.agent_config()
  a.precision = "float32"
  elu = dict(act="elu", norm=False)
  a.rssm.update(deter=200, hidden=200, stoch=30, classes=0, min_std=0.1, initial="zeros",
                gru_norm=False, gru_update_bias=0.0, action_clip=0.0, **elu)
  a.encoder.update(units=400, layers=2, cnn_depth=32, symlog_inputs=False, **elu)
  a.decoder.update(units=400, layers=2, cnn_depth=32, symlog_vector=False, **elu)
  a.reward_head.update(units=400, layers=2, dist="mse", outscale=1.0, **elu)
  a.cont_head.update(units=400, layers=2, enabled=False, **elu)
  a.kl.update(kind="gaussian", free_nats=3.0, scale=1.0)
  a.model_opt.update(lr=6e-4, eps=1e-7, clip=100.0, wd=0.0)
  a.imag_horizon = 15
  a.gamma = 0.99
  a.return_lambda = 0.95
  a.actor.update(units=400, layers=4, dist_cont="tanh_normal", grad_disc="dynamics",
                 grad_cont="dynamics", entropy=0.0, unimix=0.0, min_std=1e-4, init_std=5.0,
                 mean_scale=5.0, outscale=1.0, expl_noise=0.3,
                 backprop_baseline=False,   # eq. 7 maximises V_lambda itself
                 eval_sample=False,         # the reference code evaluates the mode
                 **elu)
  a.critic.update(units=400, layers=3, dist="mse", outscale=1.0, slow_reg=0.0,
                  slow_target=False, **elu)
  a.return_norm.enabled = False
  a.actor_opt.update(lr=8e-5, eps=1e-7, clip=100.0, wd=0.0)
  a.critic_opt.update(lr=8e-5, eps=1e-7, clip=100.0, wd=0.0)
  return a


def get_config(variant: str = "debug") -> ml_collections.ConfigDict:
  """Run config of a DreamerV1 variant (atari100k, dmc_proprio, dmc_vision, debug)."""
  check_variant(variant, dreamerv3.VARIANTS)
  config = dreamerv3.get_config(variant)
  config.method = "dreamerv1"
  config.agent = agent_config()
  if variant == "debug":
    dreamerv3.shrink_for_debug(config.agent)
  else:
    config.run.batch_size, config.run.batch_length = 50, 50
    config.run.train_ratio = 100 * 50 * 50 / 1000   # 100 updates per 1000 agent steps
  return config
