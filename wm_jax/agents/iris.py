"""The IRIS agent: tokenizer + GPT world model (wm_jax/models/iris.py) + a CNN-LSTM actor-critic
learned in imagination (Micheli et al. 2023, arXiv:2209.00588, sec. 2.3; IRIS code
src/models/actor_critic.py).

`make_iris(config, spec)` returns an `Agent` (wm_jax/agents/base.py). Each update runs up to
three stages on one replay batch [B, T], in the IRIS code's order (trainer.train_agent):
  1. tokenizer on `tokenizer.frames_per_sequence` random frames per sequence (256 in all for
     B = 64, IRIS's tokenizer batch), from update `schedule.tokenizer_start`;
  2. world model on the last min(T, context + 1) frames (20 steps, IRIS's sequence length),
     from update `schedule.world_model_start`; steps 1-2 read the first
     `world_model_batch_size` sequences of the batch (all if None);
  3. actor-critic from update `schedule.actor_critic_start`, then on every
     `schedule.actor_critic_every`-th update, from every sequence: the LSTM is burnt in on the
     reconstructions D(E(x)) of frames T - 1 - burn_in .. T - 2 without gradient, then the
     world model, reset on the last frame(s), is rolled out for `horizon` steps; REINFORCE with
     a value baseline on lambda-returns, an entropy bonus and an MSE value loss (IRIS sec. 2.3).
Which stages run is a phase of the update count (`Agent.schedule`), and the update is compiled
once per phase (wm_jax/agents/components.py); IRIS's epochs of 200 env steps with 200 steps per component
become update counts (the config says how); a stage logs metrics on the updates it runs.
The policy acts on D(E(x)), as in the IRIS code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from wm_jax.agents.base import Agent, WorldModel, jit_init
from wm_jax.agents.cnn_lstm import ImaginedActorCritic, check_actor_critic_config, reset_carry
from wm_jax.agents.components import (ComponentLearner, apply_gradient, check_schedule,
                                      check_world_model_batch, component_world_model,
                                      schedule_phase, sliced_value_and_grad, staged)
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.iris import (DTYPES, RECONSTRUCTION_LOSSES, IrisModel, channel_mults,
                                 make_iris_model)

sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------- config checks


def _check_model(agent: ml_collections.ConfigDict) -> None:
  """One sentence naming the fix on an impossible IRIS agent setting (sizes, stages, sampling)."""
  if agent.precision not in DTYPES:
    raise RunConfigError(f"agent.precision={agent.precision!r} is not one of "
                         f"{', '.join(DTYPES)}.")
  K = agent.tokens_per_frame
  tok, wm, ac, sched = agent.tokenizer, agent.world_model, agent.actor_critic, agent.schedule
  mults = channel_mults(tok, K)    # also checks that K is a square grid
  if tok.reconstruction not in RECONSTRUCTION_LOSSES:
    raise RunConfigError(f"agent.tokenizer.reconstruction={tok.reconstruction!r} is not one of "
                         f"{', '.join(RECONSTRUCTION_LOSSES)}.")
  bad = [tok.ch * m for m in mults if (tok.ch * m) % tok.norm_groups]
  if bad:
    raise RunConfigError(f"agent.tokenizer.norm_groups={tok.norm_groups} does not divide "
                         f"{bad[0]} channels: pick a divisor of tokenizer.ch * ch_mult.")
  if wm.width % wm.heads:
    raise RunConfigError(f"agent.world_model.width={wm.width} does not split over "
                         f"heads={wm.heads}: use a multiple of the head count.")
  max_len = wm.context * (K + 1)
  if (ac.wm_context + 1) * (K + 1) > max_len or ac.wm_context < 1:
    raise RunConfigError(
        f"agent.actor_critic.wm_context={ac.wm_context} real frames plus one imagined step "
        f"need {(ac.wm_context + 1) * (K + 1)} tokens but the Transformer holds "
        f"world_model.context * (K + 1) = {max_len}: use 1 <= wm_context < world_model.context.")
  if ac.horizon < 1 or ac.burn_in < 0 or tok.frames_per_sequence < 1:
    raise RunConfigError("agent.actor_critic.horizon and agent.tokenizer.frames_per_sequence "
                         "must be at least 1 and agent.actor_critic.burn_in at least 0.")
  check_schedule(sched)
  check_actor_critic_config(ac)


def check_sequence_length(agent: ml_collections.ConfigDict, length: int) -> None:
  """One sentence unless replay sequences of `length` steps hold the LSTM burn-in, the start frame and the world model's reset context."""
  ac = agent.actor_critic
  need = max(ac.burn_in + 1, ac.wm_context, 2)
  if length < need:
    raise RunConfigError(
        f"IRIS needs replay sequences of at least {need} steps (burn_in={ac.burn_in} frames "
        f"+ the start frame, wm_context={ac.wm_context}) but run.batch_length={length}: "
        f"raise run.batch_length or lower agent.actor_critic.burn_in.")


def check_agent_config(agent: ml_collections.ConfigDict, run=None) -> None:
  """Start-up check called by wm_jax.train.validate: one sentence on an impossible agent config, and with the run config on a run.batch_length too short for the burn-in."""
  _check_model(agent)
  check_world_model_batch(agent, run)
  if run is not None:
    check_sequence_length(agent, run.batch_length)
    tok = agent.tokenizer
    frames = (agent.world_model_batch_size or run.batch_size) * tok.frames_per_sequence
    if tok.microbatches < 1 or frames % tok.microbatches:
      raise RunConfigError(
          f"agent.tokenizer.microbatches={tok.microbatches} must divide the tokenizer's "
          f"{frames} frames per step (sequences x frames_per_sequence): use a divisor of "
          f"{frames}.")


# --------------------------------------------------------------------------- the agent


def make_optimizers(cfg) -> dict:
  """Per-component optimisers of the IRIS code, lr 1e-4 and global-norm clip 10: Adam (tokenizer, actor-critic) and AdamW with weight decay on Dense kernels only (world model, minGPT's configure_optimizer)."""
  def adam(opt, decay_kernels=False):
    if decay_kernels:
      mask = lambda params: jax.tree_util.tree_map_with_path(
          lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
      inner = optax.adamw(opt.lr, weight_decay=opt.wd, mask=mask)
    else:
      inner = optax.adam(opt.lr)
    return optax.chain(optax.clip_by_global_norm(opt.clip), inner)
  return {"tokenizer": adam(cfg.tokenizer.opt),
          "world_model": adam(cfg.world_model.opt, decay_kernels=True),
          "actor_critic": adam(cfg.actor_critic.opt)}


class IrisLearner(ComponentLearner):
  """The agent's pure functions around an `IrisModel` and an `ImaginedActorCritic`."""
  world_model_parts = ("tokenizer", "world_model")

  def __init__(self, cfg: ml_collections.ConfigDict, spec: EnvSpec):
    self.cfg = cfg
    self.act_spec = spec.act
    self.model: IrisModel = make_iris_model(cfg, spec)
    self.ac = ImaginedActorCritic(cfg.actor_critic, spec.act, DTYPES[cfg.precision])
    self.opts = make_optimizers(cfg)

  def actor_critic_loss(self, ac_params, model_params, batch: dict, key: jax.Array):
    """Replay batch [B, T] -> (loss [], metrics): imagination from each sequence's last frame, then -log pi(a_t) sg(R_t - V_t) - eta H(pi) + (V_t - sg(R_t))^2, averaged over t < H and the B starts (IRIS sec. 2.3, ActorCritic.compute_loss). Trajectories starting at a terminal frame get weight 0."""
    c = self.cfg.actor_critic
    model_params = sg(model_params)
    is_first, T = batch["is_first"], batch["is_first"].shape[1]
    # Frames T - 1 - burn_in .. T - 1 (and the world model's context) are encoded once.
    first = min(T - 1 - c.burn_in, T - c.wm_context)
    tokens = self.model.encode(model_params["tokenizer"], batch["image"][:, first:])
    seen = self.model.decode(model_params["tokenizer"], tokens[:, T - 1 - c.burn_in - first:])
    carry = self.ac.zero_carry(is_first.shape[0])
    if c.burn_in:   # IRIS ActorCritic.reset: the LSTM reads D(E(x)) of the preceding frames
      burn_first = is_first[:, T - 1 - c.burn_in:-1]
      carry, _, _ = self.ac.unroll(sg(ac_params), carry, seen[:, :-1], burn_first)
    carry = reset_carry(carry, is_first[:, -1])
    context = slice(T - c.wm_context, T)
    sim = self.model.reset_from_tokens(model_params, tokens[:, context.start - first:],
                                       batch["action"][:, context], seen[:, -1],
                                       is_first[:, context])
    weight = 1.0 - batch["is_terminal"][:, -1].astype(jnp.float32)
    env_step = lambda sim, action, key: self.model.step(model_params, sim, action, key)
    return self.ac.loss(ac_params, env_step, carry, sim, weight, key)

  # ------------------------------------------------------------------ stages
  def train_tokenizer(self, params, opt, batch, key):
    """Tokenizer step on frames_per_sequence random frames of each sequence [B, T], its gradient accumulated over `tokenizer.microbatches` slices of them."""
    image = batch["image"]
    B, T = image.shape[:2]
    idx = jax.random.randint(key, (B, self.cfg.tokenizer.frames_per_sequence), 0, T)
    frames = jnp.take_along_axis(image, idx[:, :, None, None, None], 1)
    frames = frames.reshape((-1,) + image.shape[2:])
    (_, metrics), grads = sliced_value_and_grad(self.model.tokenizer_loss, params["tokenizer"],
                                                frames, self.cfg.tokenizer.microbatches)
    return apply_gradient(self.opts, "tokenizer", grads, metrics, params, opt)

  def train_transformer(self, params, opt, batch):
    """GPT step on the tokens of batch [B, T] (the tokenizer is read without gradient)."""
    loss = lambda p: self.model.world_model_loss(p, params["tokenizer"], batch)
    return self._train("world_model", loss, params, opt)

  def train_world_model(self, phase: tuple, params, opt, batch, key):
    """Tokenizer then GPT step on the world model's sequences of the batch, each where phase
    (bool, bool) says it trains."""
    batch = self.world_model_batch(batch)
    params, opt, m_tok = staged(phase[0], self.train_tokenizer, params, opt, batch, key)
    params, opt, m_wm = staged(phase[1], self.train_transformer, params, opt, batch)
    return params, opt, {**m_tok, **m_wm}


def make_iris(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The IRIS `Agent` for the `agent` sub-config `cfg` and an env with 64x64 image observations."""
  check_agent_config(cfg)
  learner = IrisLearner(cfg, spec)
  schedule = cfg.schedule

  def init(key):
    k_model, k_ac = jax.random.split(key)
    params = learner.model.init(k_model)
    params["actor_critic"] = learner.ac.init(k_ac)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt": {name: learner.opts[name].init(params[name]) for name in learner.opts}}

  def initial_carry(num_envs: int):
    """Zero LSTM state; the first observation is always is_first, which resets it anyway."""
    return learner.ac.zero_carry(num_envs)

  def act(state, carry, obs, key, explore: bool):
    """Policy on D(E(obs['image'])) [N], as in the IRIS code (ImaginedActorCritic.act)."""
    params = state["params"]
    frame = learner.model.reconstruct(params["tokenizer"], obs["image"])
    return learner.ac.act(params["actor_critic"], carry, frame, obs["is_first"], key, explore)

  def update(state, batch, key, phase):
    """Staged update on a replay batch [B, T]: tokenizer, world model, actor-critic, each where
    the static phase (from `schedule`: update count >= its `schedule.*_start`) says it trains
    (IRIS trainer.train_agent)."""
    check_sequence_length(cfg, batch["is_first"].shape[1])   # static: at trace time
    k_tok, k_ac = jax.random.split(key)
    params, opt, m_wm = learner.train_world_model(phase[:2], state["params"], state["opt"],
                                                  batch, k_tok)
    params, opt, m_ac = staged(phase[2], learner.train_actor_critic, params, opt, batch, k_ac)
    metrics = {**m_wm, **m_ac}
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"step": state["step"] + 1, "params": params, "opt": opt}, metrics

  return Agent(init=jit_init(init), initial_carry=initial_carry, act=act, update=update,
               schedule=schedule_phase(schedule, ("tokenizer", "world_model", "actor_critic")))


def make_iris_world_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """IRIS's tokenizer and world model (no actor-critic) as a `WorldModel` for offline training,
  staged as the paper. It needs `actor_critic.wm_context` real frames (1 in the IRIS code, which
  imagines from one observation) and reads up to `world_model.context - 1` of a longer context."""
  check_agent_config(cfg)
  learner = IrisLearner(cfg, spec)
  return component_world_model(learner, cfg.schedule, learner.model.init,
                               cfg.actor_critic.wm_context)
