"""The DIAMOND agent: EDM denoiser + reward/end model (wm_jax/models/diamond.py) + the CNN-LSTM
actor-critic trained in their imagination (Alonso et al. 2024, arXiv:2405.12399, sec. 3;
DIAMOND code src/agent.py, src/trainer.py, src/models/actor_critic.py).

`make_diamond(config, spec)` returns an `Agent` (wm_jax/agents/base.py). Each update runs up to
three steps on one replay batch [B, T], in DIAMOND's order (trainer.train_agent):
  1. denoiser on each sequence's last frame given the H before it, from update
     `schedule.denoiser_start`;
  2. reward/end model on the T - 1 transitions of each sequence, from `schedule.reward_end_start`;
     steps 1-2 read the first `world_model_batch_size` sequences of the batch (all if None);
  3. actor-critic from `schedule.actor_critic_start`, then on every `schedule.actor_critic_every`-th
     update, from every sequence: the LSTM is burnt in on the real frames
     of the world model's context but its last one (DIAMOND's `burnin_obs`, H - 1 frames), the
     world model is reset on the last H frames and rolled out for `horizon` steps (one
     `lax.scan` over horizon x sampler steps); REINFORCE with a value baseline on
     lambda-returns, an entropy bonus and an MSE value loss (wm_jax/agents/cnn_lstm.py).
Which steps run is a phase of the update count (`Agent.schedule`), and the update is compiled
once per phase (wm_jax/agents/components.py). The policy acts on the real frames (DIAMOND's agent sees env observations).
`make_diamond_world_model(config, spec)` returns steps 1-2 alone as a `WorldModel`, for
offline training on a dataset (experiments.train_offline).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from wm_jax.agents.base import Agent, WorldModel, jit_init
from wm_jax.agents.cnn_lstm import ImaginedActorCritic, check_actor_critic_config, reset_carry
from wm_jax.agents.components import (ComponentLearner, check_schedule, check_world_model_batch,
                                      component_world_model, schedule_phase, staged)
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.diffusion import make_denoiser_net
from wm_jax.models.diamond import DTYPES, DiamondModel, make_diamond_model, sampler_config

sg = jax.lax.stop_gradient


def check_agent_config(agent: ml_collections.ConfigDict, run=None) -> None:
  """Start-up check called by wm_jax.train.validate: one sentence on an impossible DIAMOND
  setting, and with the run config on replay sequences shorter than an imagined rollout (H
  context frames + horizon), which the reward/end model's LSTM must learn on: trained on
  6-step sprite sequences, it predicted +1 on most imagined steps past the fifth and the
  actor-critic learnt to chase those (README, issue 9)."""
  if agent.precision not in DTYPES:
    raise RunConfigError(f"agent.precision={agent.precision!r} is not one of "
                         f"{', '.join(DTYPES)}.")
  d, ac = agent.denoiser, agent.actor_critic
  sampler_config(agent)                 # checks order, steps and sigmas
  make_denoiser_net(d, num_actions=1)   # checks the network's sizes (nothing is built)
  if not (0.0 <= d.obs_dropout < 1.0 and 0.0 <= d.act_dropout < 1.0 and d.cfg_weight >= 0.0):
    raise RunConfigError("agent.denoiser.obs_dropout and act_dropout must lie in [0, 1) and "
                         "agent.denoiser.cfg_weight must be >= 0.")
  if d.cfg_weight and not d.act_dropout:
    raise RunConfigError(
        f"agent.denoiser.cfg_weight={d.cfg_weight} guides against the action-dropped "
        f"prediction, which the denoiser only learns with agent.denoiser.act_dropout > 0 "
        f"(DWM uses 0.2): set both or neither.")
  if ac.horizon < 1 or not 0 <= ac.burn_in < d.num_cond_frames:
    raise RunConfigError(
        f"agent.actor_critic.horizon must be at least 1 and burn_in in [0, "
        f"num_cond_frames={d.num_cond_frames}) (the LSTM reads the world model's context "
        f"frames but the last).")
  check_actor_critic_config(ac)
  check_schedule(agent.schedule)
  check_world_model_batch(agent, run)
  rollout = d.num_cond_frames + ac.horizon
  if run is not None and run.batch_length < rollout:
    raise RunConfigError(
        f"DIAMOND's reward/end LSTM runs num_cond_frames + actor_critic.horizon = {rollout} "
        f"steps in imagination but would learn on replay sequences of run.batch_length="
        f"{run.batch_length}: raise run.batch_length to {rollout} (DIAMOND: rew_end "
        f"seq_length 19) or shorten the horizon.")


def make_optimizers(cfg: ml_collections.ConfigDict) -> dict:
  """Per-component optimisers of DIAMOND (config/trainer.yaml): AdamW(lr, weight decay on kernels, eps) after a global-norm clip, with a linear learning-rate warm-up over `warmup` updates."""
  def adamw(opt):
    lr = optax.linear_schedule(opt.lr / opt.warmup, opt.lr, opt.warmup) if opt.warmup else opt.lr
    kernels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
    return optax.chain(optax.clip_by_global_norm(opt.clip),
                       optax.adamw(lr, eps=opt.eps, weight_decay=opt.wd, mask=kernels))
  return {name: adamw(cfg[name].opt) for name in ("denoiser", "reward_end", "actor_critic")}


COMPONENTS = ("denoiser", "reward_end", "actor_critic")   # in update order


class DiamondLearner(ComponentLearner):
  """The agent's pure functions around a `DiamondModel` and an `ImaginedActorCritic`."""
  world_model_parts = ("denoiser", "reward_end")

  def __init__(self, cfg: ml_collections.ConfigDict, spec: EnvSpec):
    self.cfg = cfg
    self.model: DiamondModel = make_diamond_model(cfg, spec)
    self.ac = ImaginedActorCritic(cfg.actor_critic, spec.act, DTYPES[cfg.precision])
    self.opts = make_optimizers(cfg)

  def actor_critic_loss(self, ac_params, model_params, batch: dict, key: jax.Array):
    """Replay batch [B, T] -> (loss [], metrics): the LSTM burnt in on the H - 1 context frames before the last (real frames), the world model reset on the last H, then imagination and the actor-critic loss (DIAMOND env_loop + ActorCritic.forward). Starts at a terminal frame get weight 0."""
    H, burn_in = self.model.H, self.cfg.actor_critic.burn_in
    model_params = sg(model_params)
    is_first = batch["is_first"]
    context = jax.tree.map(lambda x: x[:, -H:], {k: batch[k] for k in ("image", "action",
                                                                        "is_first")})
    carry = self.ac.zero_carry(is_first.shape[0])
    if burn_in:
      seen = batch["image"][:, -1 - burn_in:-1].astype(jnp.float32) / 255.0
      carry, _, _ = self.ac.unroll(sg(ac_params), carry, seen, is_first[:, -1 - burn_in:-1])
    carry = reset_carry(carry, is_first[:, -1])
    sim = self.model.reset_from(model_params, context, key)
    weight = 1.0 - batch["is_terminal"][:, -1].astype(jnp.float32)
    env_step = lambda sim, action, key: self.model.step(model_params, sim, action, key)
    return self.ac.loss(ac_params, env_step, carry, sim, weight, key)

  def train_denoiser(self, params, opt, batch, key):
    return self._train("denoiser", lambda p: self.model.denoiser_loss(p, batch, key), params, opt)

  def train_reward_end(self, params, opt, batch):
    return self._train("reward_end", lambda p: self.model.reward_end_loss(p, batch), params, opt)

  def train_world_model(self, phase: tuple, params, opt, batch, key):
    """Denoiser then reward/end step on the world model's sequences of the batch, each where
    phase (bool, bool) says it trains."""
    batch = self.world_model_batch(batch)
    params, opt, m_den = staged(phase[0], self.train_denoiser, params, opt, batch, key)
    params, opt, m_rew = staged(phase[1], self.train_reward_end, params, opt, batch)
    return params, opt, {**m_den, **m_rew}


def make_diamond(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The DIAMOND `Agent` for the `agent` sub-config `cfg` and an env with image observations and discrete actions."""
  check_agent_config(cfg)
  learner = DiamondLearner(cfg, spec)

  def init(key):
    k_model, k_ac = jax.random.split(key)
    params = learner.model.init(k_model)
    params["actor_critic"] = learner.ac.init(k_ac, learner.model.image_shape)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt": {name: learner.opts[name].init(params[name]) for name in learner.opts}}

  def initial_carry(num_envs: int):
    """Zero LSTM state; the first observation is always is_first, which resets it anyway."""
    return learner.ac.zero_carry(num_envs)

  def act(state, carry, obs, key, explore: bool):
    """Policy on the real frame obs['image'] [N] (ImaginedActorCritic.act). Collection is
    uniformly random until the actor-critic trains (update `schedule.actor_critic_start`), as
    DIAMOND's zero-initialised heads make it; the same whatever `actor_critic.zero_heads`."""
    frame = obs["image"].astype(jnp.float32) / 255.0
    untrained = state["step"] < cfg.schedule.actor_critic_start
    epsilon = jnp.where(untrained, 1.0, cfg.actor_critic.collect_epsilon)
    return learner.ac.act(state["params"]["actor_critic"], carry, frame, obs["is_first"], key,
                          explore, epsilon)

  def update(state, batch, key, phase):
    """Denoiser, reward/end model and actor-critic steps on a replay batch [B, T], each where
    the static phase (from `schedule`: update count >= its `schedule.*_start`) says it trains
    (DIAMOND trainer.train_agent)."""
    k_wm, k_ac = jax.random.split(key)
    params, opt, m_wm = learner.train_world_model(phase[:2], state["params"], state["opt"],
                                                  batch, k_wm)
    params, opt, m_ac = staged(phase[2], learner.train_actor_critic, params, opt, batch, k_ac)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {**m_wm, **m_ac})
    return {"step": state["step"] + 1, "params": params, "opt": opt}, metrics

  return Agent(init=jit_init(init), initial_carry=initial_carry, act=act, update=update,
               schedule=schedule_phase(cfg.schedule, COMPONENTS))


def make_diamond_world_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """DIAMOND's world model alone (denoiser + reward/end model, no actor-critic) as a
  `WorldModel` for offline training, reset on its H conditioning frames."""
  check_agent_config(cfg)
  learner = DiamondLearner(cfg, spec)
  return component_world_model(learner, cfg.schedule, learner.model.init, learner.model.H)
