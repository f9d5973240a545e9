"""The IRIS agent: tokenizer + GPT world model (wm_jax/models/iris.py) + a CNN-LSTM actor-critic
learned in imagination (Micheli et al. 2023, arXiv:2209.00588, sec. 2.3; IRIS code
src/models/actor_critic.py).

`make_iris(config, spec)` returns an `Agent` (wm_jax/agents/base.py). Each update runs up to
three stages on one replay batch [B, T], in the IRIS code's order (trainer.train_agent):
  1. tokenizer on `tokenizer.frames_per_sequence` random frames per sequence (256 in all for
     B = 64, IRIS's tokenizer batch), from update `schedule.tokenizer_start`;
  2. world model on the last min(T, context + 1) frames (20 steps, IRIS's sequence length),
     from update `schedule.world_model_start`;
  3. actor-critic from update `schedule.actor_critic_start`: the LSTM is burnt in on the
     reconstructions D(E(x)) of frames T - 1 - burn_in .. T - 2 without gradient, then the
     world model, reset on the last frame(s), is rolled out for `horizon` steps; REINFORCE with
     a value baseline on lambda-returns, an entropy bonus and an MSE value loss (IRIS sec. 2.3).
The stages are switched by the update counter `state['step']` with `jax.lax.cond`, so the
update stays one jitted function; IRIS's epochs of 200 env steps with 200 steps per component
become update counts (the config says how); a stage not yet started reports its metrics as 0.
The policy acts on D(E(x)), as in the IRIS code.
"""

from __future__ import annotations

from typing import Any, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from wm_jax.agents.base import Agent
from wm_jax.core import losses
from wm_jax.core.nets import PARAM_DTYPE
from wm_jax.envs.base import ActionSpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.iris import (DTYPES, RECONSTRUCTION_LOSSES, IrisModel, channel_mults,
                                 make_iris_model)

sg = jax.lax.stop_gradient
Carry = tuple  # LSTM (c, h), float32 [N, lstm] each


# --------------------------------------------------------------------------- config checks


def _check_model(agent: ml_collections.ConfigDict) -> None:
  """One sentence naming the fix on an impossible IRIS agent setting (sizes, stages, sampling)."""
  if agent.precision not in DTYPES:
    raise RunConfigError(f"agent.precision={agent.precision!r} is not one of "
                         f"{', '.join(DTYPES)}.")
  K = agent.tokens_per_frame
  tok, wm, ac, sched = agent.tokenizer, agent.world_model, agent.actor_critic, agent.schedule
  mults = channel_mults(tok, K)    # also checks that K is a square grid
  if tok.lpips_weights:
    raise RunConfigError(
        "agent.tokenizer.lpips_weights is not supported yet (the perceptual loss needs a port "
        "of LPIPS's VGG weights to flax): leave it None.")
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
  if min(sched.tokenizer_start, sched.world_model_start, sched.actor_critic_start) < 0:
    raise RunConfigError("agent.schedule.*_start are update counts and must be >= 0.")
  if not (0.0 <= ac.collect_epsilon <= 1.0 and ac.collect_temperature > 0
          and ac.eval_temperature > 0):
    raise RunConfigError("agent.actor_critic.collect_epsilon must lie in [0, 1] and the "
                         "temperatures must be positive.")


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
  if run is not None:
    check_sequence_length(agent, run.batch_length)


# --------------------------------------------------------------------------- actor-critic net


class ActorCriticNet(nn.Module):
  """(LSTM carry, frames [N, 64, 64, 3] in [0, 1]) -> (carry, policy output [N, A] logits or [N, 2A] mean/std, value [N]): 4 x (3x3 conv, 2x2 max-pool, ReLU), LSTM, linear heads (IRIS sec. 2.3, actor_critic.py)."""
  channels: Sequence[int]
  lstm: int
  act: ActionSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: Carry, frame: jax.Array):
    x = (frame * 2.0 - 1.0).astype(self.dtype)
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=PARAM_DTYPE,
                  name=f"conv{i}")(x)
      x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
    x = x.reshape(x.shape[0], -1)
    carry, h = nn.OptimizedLSTMCell(self.lstm, dtype=self.dtype, param_dtype=PARAM_DTYPE,
                                    name="lstm")(carry, x)
    carry = jax.tree.map(lambda c: c.astype(jnp.float32), carry)
    size = self.act.num_actions if self.act.discrete else 2 * self.act.dim
    out = nn.Dense(size, dtype=self.dtype, param_dtype=PARAM_DTYPE, name="actor")(h)
    value = nn.Dense(1, dtype=self.dtype, param_dtype=PARAM_DTYPE, name="critic")(h)[..., 0]
    return carry, out.astype(jnp.float32), value.astype(jnp.float32)


def policy_dist(out: jax.Array, act: ActionSpec, temperature: float = 1.0):
  """Policy output [..., A] -> Categorical(logits / temperature) (IRIS); continuous (ours, for DMC): [..., 2A] -> Normal(tanh(mean), temperature * std), std in [0.1, 1]."""
  if act.discrete:
    return distrax.Categorical(logits=out / temperature)
  mean, raw_std = jnp.split(out, 2, -1)
  std = (0.9 * jax.nn.sigmoid(raw_std + 2.0) + 0.1) * temperature
  return distrax.MultivariateNormalDiag(jnp.tanh(mean), std)


def _reset(carry: Carry, is_first: jax.Array) -> Carry:
  """Zeroes the LSTM carry [N, D] where is_first [N]."""
  return jax.tree.map(lambda c: jnp.where(is_first[:, None], 0.0, c), carry)


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


def _staged(active: jax.Array, train_fn, params: dict, opt: dict, *args):
  """train_fn(params, opt, *args) -> (params, opt, metrics) where `active`, else params and opt unchanged with zero metrics (one `lax.cond`)."""
  def skip(params, opt, *args):
    _, _, shapes = jax.eval_shape(train_fn, params, opt, *args)
    return params, opt, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.lax.cond(active, train_fn, skip, params, opt, *args)


class IrisLearner:
  """The agent's pure functions around an `IrisModel` and an `ActorCriticNet`."""

  def __init__(self, cfg: ml_collections.ConfigDict, spec: EnvSpec):
    self.cfg = cfg
    self.act_spec = spec.act
    self.model: IrisModel = make_iris_model(cfg, spec)
    ac = cfg.actor_critic
    self.ac_net = ActorCriticNet(tuple(ac.channels), ac.lstm, spec.act, DTYPES[cfg.precision])
    self.opts = make_optimizers(cfg)

  # ------------------------------------------------------------------ actor-critic pieces
  def zero_carry(self, n: int) -> Carry:
    zeros = jnp.zeros((n, self.cfg.actor_critic.lstm), jnp.float32)
    return (zeros, zeros)

  def unroll(self, ac_params, carry: Carry, frames: jax.Array, is_first: jax.Array | None = None):
    """frames [B, L, 64, 64, 3] in [0, 1], optional is_first [B, L] (resets) -> (carry, out [B, L, ...], value [B, L])."""
    def step(carry, xs):
      frame, first = xs
      if first is not None:
        carry = _reset(carry, first)
      carry, out, value = self.ac_net.apply(ac_params, carry, frame)
      return carry, (out, value)
    swap = lambda x: None if x is None else jnp.swapaxes(x, 0, 1)
    carry, (out, value) = jax.lax.scan(step, carry, (swap(frames), swap(is_first)))
    return carry, swap(out), swap(value)

  def sample_action(self, out: jax.Array, key: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Policy output [N, ...] -> int32 [N] or float32 [N, A] (unclipped) sample."""
    action = policy_dist(out, self.act_spec, temperature).sample(seed=key)
    return action.astype(jnp.int32) if self.act_spec.discrete else action

  def _env_action(self, action: jax.Array) -> jax.Array:
    if self.act_spec.discrete:
      return action
    return jnp.clip(action, self.act_spec.low, self.act_spec.high)

  def imagine(self, ac_params, model_params, carry: Carry, sim, key: jax.Array):
    """Rolls the world model for `horizon` steps under the policy from (carry, sim) [B] -> frames [B, H+1, 64, 64, 3], actions [B, H, ...], rewards [B, H], conts [B, H] (IRIS sec. 2.3, ActorCritic.imagine)."""
    def step(state, k):
      carry, sim = state
      k_act, k_env = jax.random.split(k)
      frame = sim["frame"]
      carry, out, _ = self.ac_net.apply(ac_params, carry, frame)
      action = self.sample_action(out, k_act)
      sim, _, reward, cont = self.model.step(model_params, sim, self._env_action(action), k_env)
      return (carry, sim), (frame, action, reward, cont)
    (_, sim), (frames, actions, rewards, conts) = jax.lax.scan(
        step, (carry, sim), jax.random.split(key, self.cfg.actor_critic.horizon))
    frames = jnp.concatenate([frames, sim["frame"][None]], 0)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return swap(frames), swap(actions), swap(rewards), swap(conts)

  def actor_critic_loss(self, ac_params, model_params, batch: dict, key: jax.Array):
    """Replay batch [B, T] -> (loss [], metrics): imagination from each sequence's last frame, then -log pi(a_t) sg(R_t - V_t) - eta H(pi) + (V_t - sg(R_t))^2, averaged over t < H and the B starts (IRIS sec. 2.3, ActorCritic.compute_loss). Trajectories starting at a terminal frame get weight 0."""
    c = self.cfg.actor_critic
    model_params = sg(model_params)
    is_first, T = batch["is_first"], batch["is_first"].shape[1]
    # Frames T - 1 - burn_in .. T - 1 (and the world model's context) are encoded once.
    first = min(T - 1 - c.burn_in, T - c.wm_context)
    tokens = self.model.encode(model_params["tokenizer"], batch["image"][:, first:])
    seen = self.model.decode(model_params["tokenizer"], tokens[:, T - 1 - c.burn_in - first:])
    carry = self.zero_carry(is_first.shape[0])
    if c.burn_in:   # IRIS ActorCritic.reset: the LSTM reads D(E(x)) of the preceding frames
      burn_first = is_first[:, T - 1 - c.burn_in:-1]
      carry, _, _ = self.unroll(sg(ac_params), carry, seen[:, :-1], burn_first)
    carry = sg(_reset(carry, is_first[:, -1]))
    context = slice(T - c.wm_context, T)
    sim = self.model.reset_from_tokens(model_params, tokens[:, context.start - first:],
                                       batch["action"][:, context], seen[:, -1],
                                       is_first[:, context])
    frames, actions, rewards, conts = self.imagine(sg(ac_params), model_params, carry, sim, key)
    _, out, values = self.unroll(ac_params, carry, frames)               # [B, H + 1]
    returns = losses.lambda_returns(rewards, sg(values[:, :-1]), c.gamma * conts,
                                    sg(values[:, -1]), c.lambda_)
    dist = policy_dist(out[:, :-1], self.act_spec)
    weight = (1.0 - batch["is_terminal"][:, -1].astype(jnp.float32))[:, None]
    advantage = sg(returns - values[:, :-1])
    actor_loss = losses.masked_mean(-dist.log_prob(actions) * advantage, weight)
    entropy = losses.masked_mean(dist.entropy(), weight)
    value_loss = losses.masked_mean(jnp.square(values[:, :-1] - sg(returns)), weight)
    loss = actor_loss - c.entropy * entropy + value_loss
    return loss, {"actor_critic_loss": loss, "actor_loss": actor_loss,
                  "value_loss": value_loss, "entropy": entropy,
                  "imagined_return": losses.masked_mean(returns[:, 0], weight[:, 0]),
                  "imagined_reward": losses.masked_mean(rewards, weight)}

  # ------------------------------------------------------------------ stages
  def _train(self, name: str, loss_fn, params: dict, opt: dict):
    """One optimiser step of component `name` on loss_fn(component params) -> (params, opt, metrics)."""
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[name])
    updates, new_opt = self.opts[name].update(grads, opt[name], params[name])
    metrics[f"{name}_grad_norm"] = optax.tree.norm(grads)
    return ({**params, name: optax.apply_updates(params[name], updates)},
            {**opt, name: new_opt}, metrics)

  def train_tokenizer(self, params, opt, batch, key):
    """Tokenizer step on frames_per_sequence random frames of each sequence [B, T]."""
    image = batch["image"]
    B, T = image.shape[:2]
    idx = jax.random.randint(key, (B, self.cfg.tokenizer.frames_per_sequence), 0, T)
    frames = jnp.take_along_axis(image, idx[:, :, None, None, None], 1)
    frames = frames.reshape((-1,) + image.shape[2:])
    return self._train("tokenizer", lambda p: self.model.tokenizer_loss(p, frames), params, opt)

  def train_world_model(self, params, opt, batch):
    loss = lambda p: self.model.world_model_loss(p, params["tokenizer"], batch)
    return self._train("world_model", loss, params, opt)

  def train_actor_critic(self, params, opt, batch, key):
    model_params = {k: params[k] for k in ("tokenizer", "world_model")}
    loss = lambda p: self.actor_critic_loss(p, model_params, batch, key)
    return self._train("actor_critic", loss, params, opt)


def make_iris(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The IRIS `Agent` for the `agent` sub-config `cfg` and an env with 64x64 image observations."""
  check_agent_config(cfg)
  learner = IrisLearner(cfg, spec)
  ac, schedule = cfg.actor_critic, cfg.schedule

  def init(key):
    k_model, k_ac = jax.random.split(key)
    params = learner.model.init(k_model)
    frame = jnp.zeros((1, 64, 64, 3), jnp.float32)
    params["actor_critic"] = learner.ac_net.init(k_ac, learner.zero_carry(1), frame)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt": {name: learner.opts[name].init(params[name]) for name in learner.opts}}

  def initial_carry(num_envs: int):
    """Zero LSTM state; the first observation is always is_first, which resets it anyway."""
    return learner.zero_carry(num_envs)

  def act(state, carry, obs, key, explore: bool):
    """Policy on D(E(obs['image'])) [N]: temperature 1 and epsilon 0.01 while collecting, temperature 0.5 in evaluation (IRIS trainer.yaml collection.train / .test)."""
    params = state["params"]
    frame = learner.model.reconstruct(params["tokenizer"], obs["image"])
    carry = _reset(carry, jnp.asarray(obs["is_first"], bool))
    carry, out, _ = learner.ac_net.apply(params["actor_critic"], carry, frame)
    k_policy, k_random, k_coin = jax.random.split(key, 3)
    temperature = ac.collect_temperature if explore else ac.eval_temperature
    action = learner.sample_action(out, k_policy, temperature)
    if explore and ac.collect_epsilon > 0:
      n = action.shape[0]
      spec = learner.act_spec
      random = (jax.random.randint(k_random, (n,), 0, spec.num_actions) if spec.discrete else
                jax.random.uniform(k_random, action.shape, jnp.float32, spec.low, spec.high))
      coin = jax.random.uniform(k_coin, (n,)) < ac.collect_epsilon
      action = jnp.where(coin.reshape((n,) + (1,) * (action.ndim - 1)), random, action)
    return learner._env_action(action).astype(learner.act_spec.dtype), carry

  def update(state, batch, key):
    """Staged update on a replay batch [B, T]: tokenizer, world model, actor-critic, each from its `schedule.*_start` update on (IRIS trainer.train_agent)."""
    check_sequence_length(cfg, batch["is_first"].shape[1])   # static: at trace time
    k_tok, k_ac = jax.random.split(key)
    step, params, opt = state["step"], state["params"], state["opt"]
    params, opt, m_tok = _staged(step >= schedule.tokenizer_start, learner.train_tokenizer,
                                 params, opt, batch, k_tok)
    params, opt, m_wm = _staged(step >= schedule.world_model_start, learner.train_world_model,
                                params, opt, batch)
    params, opt, m_ac = _staged(step >= schedule.actor_critic_start,
                                learner.train_actor_critic, params, opt, batch, k_ac)
    metrics = {**m_tok, **m_wm, **m_ac}
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"step": step + 1, "params": params, "opt": opt}, metrics

  # init runs once: compiled without LLVM optimisation, its ~600 threefry hashes (flax folds
  # the key into every parameter's path) compile in ~6 s instead of ~18 s on a CPU.
  init = jax.jit(init, compiler_options={"xla_backend_optimization_level": 0})
  return Agent(init=init, initial_carry=initial_carry, act=act, update=update)
