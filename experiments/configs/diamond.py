"""DIAMOND (Alonso et al. 2024, "Diffusion for world modeling: visual details matter in Atari",
arXiv:2405.12399) and its DWM variants (../shared/seeds/003, sec. 4). Variants: atari100k,
atari100k_paper_protocol, atari100k_cross_attention, atari100k_cfg, debug.

Defaults are DIAMOND's official code (eloialonso/diamond: config/agent/default.yaml,
config/trainer.yaml, config/env/atari.yaml), cited per field. The DWM settings are named
variants: `atari100k_cross_attention` (DWM sec. 4.2.1's cross-attention U-Net; its sizes are
ours, DWM gives none) and `atari100k_cfg` (observation/action dropout 0.2 and classifier-free
guidance weight 1, DWM sec. 4.2.2 and eq. 4).

Named deviations:
  * One replay batch [B, T] = [32, 19] feeds all three components per update (DIAMOND samples
    a batch per component: 32 x 5 frames for the denoiser, 32 x 19 for the reward/end model,
    32 starts for the actor-critic). The denoiser trains on each sequence's last frame.
  * DIAMOND's epochs (collect 100 steps, then 400 steps per component; 10000 / 10000 / 5000
    steps after the first 5000 random steps) become 4 updates per env step
    (`run.train_ratio = 4 * B * T`) with the actor-critic starting after 10000 updates; the 50
    final epochs without collection are not run.
  * Imagined episodes restart from replay at every update
    (DIAMOND's world-model env runs on, restarting an episode after `horizon` steps or an
    imagined end; with horizon = backup_every = 15 the two mostly coincide).
  * The debug variant's actor-critic imagines from 32 sequences on every 8th update while the
    world model trains on 16 per update (common.use_sprite_debug_run, shrink_for_debug), and
    its sprite frames are 32x32, not the other families' 64x64; its sampler starts from
    N(0, sigma_max^2) noise with 5 Euler steps, and its actor-critic's heads start at Flax's
    default init, not zeros (shrink_for_debug says why for each).
  * Fan-average weight init; see wm_jax/models/diffusion.py for the network's deviations.
    (Weight decay applies to Dense/Conv/LSTM kernels only, as DIAMOND's configure_opt.)
  * The sampler starts from N(0, 1) noise as DIAMOND's code (`denoiser.sampler.init_sigma = 1`);
    Karras' Algorithm 1 would start from N(0, sigma_max^2): set init_sigma to None for that.
The suite's Atari card (common.ATARI_PROTOCOL) is the `atari100k` default so that every family
runs one protocol; DIAMOND's own (a lost life ends a training episode) is the
`atari100k_paper_protocol` variant.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import (ATARI_PROTOCOL, base_config, check_variant,
                                        use_sprite_debug_run)

VARIANTS = ("atari100k", "atari100k_paper_protocol", "atari100k_cross_attention",
            "atari100k_cfg", "debug")


def _opt(**kw) -> ml_collections.ConfigDict:
  # AdamW, eps 1e-8, lr 1e-4, 100 warm-up updates (trainer.yaml *.optimizer, lr_warmup_steps).
  return ml_collections.ConfigDict(dict(lr=1e-4, eps=1e-8, warmup=100, **kw))


def agent_config() -> ml_collections.ConfigDict:
  """Every DIAMOND hyperparameter, as a named field (official code defaults)."""
  a = ml_collections.ConfigDict()
  a.precision = "float32"        # DIAMOND trains in fp32; 'bfloat16' for compute only
  # Replay sequences the denoiser and reward/end model train on: the first N of each batch;
  # None = all run.batch_size, which the actor-critic always imagines from (DIAMOND: 32 each).
  a.world_model_batch_size = ml_collections.FieldReference(None, field_type=int)
  a.denoiser = ml_collections.ConfigDict(dict(
      architecture="frame_stack",   # 'frame_stack' (DIAMOND) or 'cross_attention' (DWM 4.2.1)
      num_cond_frames=4,            # H (agent/default.yaml inner_model.num_steps_conditioning)
      channels=(64, 64, 64, 64),    # inner_model.channels
      depths=(2, 2, 2, 2),          # inner_model.depths
      attn_depths=(False, False, False, False),  # inner_model.attn_depths
      cond_channels=256,            # inner_model.cond_channels
      prev_frame_scale=2.0,         # previous frames enter as obs / sigma_data (denoiser.py)
      # cross_attention only (ours: DWM gives no sizes)
      cross_attn_depths=(False, False, True, True),
      # levels whose pixels attend to the H history features at that pixel only (U-Net 3D's
      # temporal attention); None = none
      per_pixel_cross_attn_depths=ml_collections.FieldReference(None, field_type=tuple),
      history_channels=(32, 32, 32, 32),
      history_depths=(1, 1, 1, 1),
      obs_dropout=0.0,              # DWM sec. 4.2.2: 0.2 for CFG; DIAMOND: none
      act_dropout=0.0,
      cfg_weight=0.0,               # w of DWM eq. 4; 0 = conditional sampling (DIAMOND)
      edm=ml_collections.ConfigDict(dict(
          sigma_data=0.5,           # agent/default.yaml denoiser.sigma_data
          sigma_offset_noise=0.3,   # denoiser.sigma_offset_noise
          loc=-0.4, scale=1.2,      # trainer.yaml denoiser.sigma_distribution
          sigma_min_train=2e-3, sigma_max_train=20.0)),
      sampler=ml_collections.ConfigDict(dict(
          num_steps=3,              # trainer.yaml world_model_env.diffusion_sampler
          sigma_min=2e-3, sigma_max=5.0, rho=7.0,
          # 1 = Euler (DIAMOND's), 2 = Heun. Heun wants more steps: at 3 its correction reads the
          # denoiser at sigma_min = 2e-3 after a jump from 0.28, a noise level training almost
          # never draws (P(sigma < 0.01) ~ 2e-4), and frames break (Breakout, 150 updates: PSNR@1
          # 10.0 vs Euler's 23.3); at 10 steps Heun matches Euler (24.0 vs 23.8). Measured in issue 12.
          order=1,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
          # DIAMOND starts from torch.randn (see the docstring); typed, so that a None (the
          # debug variant's) can be overridden from the command line
          init_sigma=ml_collections.FieldReference(1.0, field_type=float))),
      opt=_opt(wd=1e-2, clip=1.0)))  # trainer.yaml denoiser.optimizer, max_grad_norm 1
  a.reward_end = ml_collections.ConfigDict(dict(
      lstm=512,                     # agent/default.yaml rew_end_model.lstm_dim
      cond_channels=128,
      channels=(32, 32, 32, 32),
      depths=(2, 2, 2, 2),
      opt=_opt(wd=1e-2, clip=100.0)))  # trainer.yaml rew_end_model.optimizer, max_grad_norm
  a.actor_critic = ml_collections.ConfigDict(dict(
      net="diamond",                # conv + SmallResBlock trunk (actor_critic.py)
      zero_heads=True,              # actor_critic.py zero-initialises both linear heads
      channels=(32, 32, 64, 64),    # agent/default.yaml actor_critic.channels
      lstm=512,                     # actor_critic.lstm_dim
      horizon=15,                   # trainer.yaml world_model_env.horizon (backup_every 15)
      burn_in=3,                    # the H - 1 context frames before the start (burnin_obs)
      gamma=0.985,                  # trainer.yaml actor_critic_loss.gamma
      lambda_=0.95,
      entropy=0.001,                # weight_entropy_loss
      collect_epsilon=0.01,         # collection.train.epsilon
      collect_temperature=1.0,      # env_loop samples Categorical(logits) in both phases
      eval_temperature=1.0,
      opt=_opt(wd=0.0, clip=100.0)))  # trainer.yaml actor_critic.optimizer
  # First update of each component (see the docstring's epochs).
  # The actor-critic then trains on every actor_critic_every-th update (DIAMOND: every one).
  a.schedule = ml_collections.ConfigDict(dict(
      denoiser_start=0, reward_end_start=0, actor_critic_start=10_000, actor_critic_every=1))
  return a


def get_config(variant: str = "debug") -> ml_collections.ConfigDict:
  """Run config of a DIAMOND variant (one of VARIANTS)."""
  check_variant(variant, VARIANTS)
  preset = "debug" if variant == "debug" else "atari100k"
  config = base_config("diamond", preset)
  config.variant = variant
  config.agent = agent_config()
  run = config.run
  run.batch_size = 32            # trainer.yaml *.training.batch_size
  run.batch_length = 19          # rew_end seq_length = horizon 15 + H 4
  run.train_ratio = 4.0 * 32 * 19  # 400 updates per 100-step epoch: 4 updates per env step
  run.learning_starts = 5000     # collection.train.first_epoch.min
  if variant == "atari100k_paper_protocol":
    # DIAMOND trains with life loss as episode end (env/atari.yaml done_on_life_loss: True);
    # evaluation plays whole games.
    config.env.protocol = dict(ATARI_PROTOCOL, life_loss_terminal=True)
  elif variant == "atari100k_cross_attention":
    config.agent.denoiser.architecture = "cross_attention"
  elif variant == "atari100k_cfg":
    config.agent.denoiser.update(dict(obs_dropout=0.2, act_dropout=0.2, cfg_weight=1.0))
  elif variant == "debug":
    shrink_for_debug(config)
  return config


def shrink_for_debug(config: ml_collections.ConfigDict) -> None:
  """The tiny CPU variant, in place: the sprite env at 32x32, small nets, early starts."""
  use_sprite_debug_run(config)
  # Replay sequences of 19 steps as DIAMOND's (rew_end seq_length = H 4 + horizon 15), not
  # use_sprite_debug_run's 6, at one update per 4 env steps as there: the reward/end model's
  # LSTM runs H + horizon steps in imagination. Trained on 6 (an online run, 6,484 updates;
  # the run's actor-critic from 128 real starts), it gave +1 without the agent entering the
  # goal's cell on 0-5% of the imagined steps 1-4 and on 84-97% of steps 12-15 (93% of its +1
  # were such), and the actor-critic chased those. check_agent_config refuses sequences shorter
  # than H + horizon (README, issue 9).
  config.run.batch_length = 19
  config.run.train_ratio = 32 * 19 / 4
  # Sprite frames of 32x32 (the same 4x4 board and rewards as the other families' 64x64): the
  # debug denoiser learns the moves only after ~3,500 updates of 16 windows, and 32x32 makes
  # those 4x cheaper. Offline on random sprite windows (one step from 4 real frames and the
  # real action), the generated agent was in the real agent's cell on 98% of the steps where
  # it moved after 5,000 updates at 32x32; on 1-19% up to 3,000 updates, and on 0-15% at 64x64
  # up to 1,200 (channels (8, 8, 8) or (16, 16, 16, 16)) (README, issue 9).
  config.env.protocol = {"image_size": 32}
  # Sampling from Karras' N(0, sigma_max^2) noise with 5 Euler steps, not DIAMOND's N(0, 1) and
  # 3 steps: a reached sprite goal respawns on a random cell, and from N(0, 1) noise the sampler
  # cannot pick one. With DIAMOND's sampler, the 32x32 online run's denoiser (7,357 updates)
  # drew the respawned goal as a faint blob on the agent's previous cell in 98% of real reach
  # windows (the real env: 8%), erased it on the next step, and the goal walker then got 0.85
  # imagined reward per step (the real env: 0.37). The same denoiser sampling from
  # N(0, sigma_max^2): 3 / 5 / 10 steps gave 0.67 / 0.42 / 0.37, and 61% / 35% / 27% of the
  # respawns on the previous cell (README, issue 9).
  a = config.agent
  a.denoiser.sampler.update(dict(init_sigma=None, num_steps=5))
  # Policy and value heads at Flax's default init, not DIAMOND's zeros: trained in the true
  # sprite dynamics (a perfect world model: the env state read from each start frame, 32
  # imagined episodes of 15 steps per update), this actor-critic with zero heads stayed at a
  # real return of 1.6-2.1 for 800 updates (random: 1.4; also at lr 3e-3 and on 64x64 frames
  # for 400 updates, and with Flax's LSTM init for 600); with default heads it reached 6.2 at
  # 400 updates and 12.0 at 600 (README, issue 9).
  a.actor_critic.zero_heads = False
  a.denoiser.update(dict(channels=(8, 8, 8), depths=(1, 1, 1),
                         attn_depths=(False, False, False), cond_channels=32,
                         cross_attn_depths=(False, False, True), history_channels=(8, 8, 8),
                         history_depths=(1, 1, 1)))
  a.reward_end.update(dict(lstm=32, cond_channels=16, channels=(8, 8, 8), depths=(1, 1, 1)))
  for component in (a.denoiser, a.reward_end, a.actor_critic):
    component.opt.update(lr=1e-3, warmup=0)
  a.schedule.update(dict(denoiser_start=0, reward_end_start=0, actor_critic_start=40))
  # 16 sequences for the denoiser and the reward/end model, not use_sprite_debug_run's 4: on 4
  # random-policy sprite windows [4, 6] per step this reward/end model stays at the base rate
  # (reward-sign loss 0.114 = the entropy of 2.4% rewards, recall of +1 zero after 1,500
  # steps; 8: the same after 600), so imagined rewards ignore the actions and the actor-critic
  # gets no signal (sprite run, 20k steps: 0.026 reward per imagined step for the goal walker
  # and for random actions alike). On 16 it is a draw: seed 0 reached recall 0.97 and precision
  # 1.0 on held-out windows in 240 steps, seeds 1 and 2 stayed at the base rate for 600; on 32
  # (seed 0) recall 1.0 in 300 (24k random steps, issue 9). Online, the run on 16 learned it
  # (reward loss 0.032 at 1k updates, 1e-4 at 2k).
  a.world_model_batch_size = 16
