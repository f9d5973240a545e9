"""DreamerV2 (Hafner et al. 2021, arXiv:2010.02193) as a configuration of the Dreamer module.
Variants: atari100k, dmc_proprio, dmc_vision, debug.

Overrides of dreamerv3.agent_config() with the paper's App. C hyperparameters: 32 x 32
categorical latents without uniform mix, KL balancing 0.8 (scale 0.1 Atari / 1.0 DMC), ELU
MLPs without LayerNorm (the GRU keeps its LayerNorm), Gaussian (MSE) reward and critic heads,
a slow target critic copied every 100 updates, no return normalisation, REINFORCE for Atari
(rho = 1) and dynamics backprop for DMC (rho = 0), Adam with weight decay 1e-6.
Deviations: the truncated-normal continuous policy is the clipped Normal of DreamerV3, and the
Atari numbers are used with the shared 100k-step preset (the paper ran 200M frames).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv3
from experiments.configs.common import check_variant


def agent_config(atari: bool) -> ml_collections.ConfigDict:
  """DreamerV2's agent fields; `atari` picks the Atari column of App. C (else DMC)."""
  a = dreamerv3.agent_config()
  a.precision = "bfloat16"   # mixed precision, as the paper
  elu = dict(act="elu", norm=False)
  a.rssm.update(deter=600, hidden=600, stoch=32, classes=32, unimix=0.0, initial="zeros",
                gru_norm=True, gru_update_bias=-1.0, action_clip=0.0, **elu)
  a.encoder.update(units=400, layers=4, cnn_depth=48, symlog_inputs=False, **elu)
  a.decoder.update(units=400, layers=4, cnn_depth=48, symlog_vector=False, **elu)
  a.reward_head.update(units=400, layers=4, dist="mse", outscale=1.0, **elu)
  a.cont_head.update(units=400, layers=4, enabled=True, imagine="prob", **elu)   # discount mean
  a.loss_scales.update(cont=5.0 if atari else 1.0)
  a.reward_transform = "tanh" if atari else "none"
  a.kl.update(kind="balance", balance=0.8, scale=0.1 if atari else 1.0,
              free_nats=0.0 if atari else 1.0)
  a.model_opt.update(lr=2e-4 if atari else 3e-4, eps=1e-5, clip=100.0, wd=1e-6)
  a.imag_horizon = 15
  a.gamma = 0.999 if atari else 0.99
  a.return_lambda = 0.95
  a.actor.update(units=400, layers=4, unimix=0.0, grad_disc="reinforce", grad_cont="dynamics",
                 entropy=1e-3 if atari else 1e-4, outscale=1.0,
                 backprop_baseline=False,   # Algorithm 1: dynamics objective is V_lambda
                 eval_sample=False,         # the reference code evaluates the mode
                 **elu)
  a.critic.update(units=400, layers=4, dist="mse", outscale=1.0, slow_reg=0.0, slow_rate=1.0,
                  slow_every=100, slow_target=True, **elu)
  a.return_norm.enabled = False
  a.actor_opt.update(lr=4e-5 if atari else 8e-5, eps=1e-5, clip=100.0, wd=1e-6)
  a.critic_opt.update(lr=1e-4 if atari else 8e-5, eps=1e-5, clip=100.0, wd=1e-6)
  return a


def get_config(variant: str = "debug") -> ml_collections.ConfigDict:
  """Run config of a DreamerV2 variant (atari100k, dmc_proprio, dmc_vision, debug)."""
  check_variant(variant, dreamerv3.VARIANTS)
  config = dreamerv3.get_config(variant)
  config.method = "dreamerv2"
  config.agent = agent_config(atari=variant in ("atari100k", "debug"))
  run = config.run
  if variant == "debug":
    dreamerv3.shrink_for_debug(config.agent)
  else:
    # Train every 16 (Atari) / 5 (DMC) env steps on 16 x 50 sequences.
    run.batch_size, run.batch_length = 16, 50
    run.train_ratio = 16 * 50 / (16 if variant == "atari100k" else 5)
  return config
