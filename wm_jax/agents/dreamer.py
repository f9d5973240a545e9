"""The Dreamer agent (V1, V2, V3 by config): RSSM world model + imagination actor-critic.

`make_dreamer(config, spec)` returns an `Agent` (wm_jax/agents/base.py) whose update is one
world-model step on a replay batch [B, T] followed by one actor and one critic step on
trajectories imagined from every posterior state of that batch (DreamerV3 sec. 2 / App. B,
imagination starts from all B*T replay states).

Model sizes follow DreamerV3 v1 (arXiv:2301.04104 v1, Table B.1); the 2024/Nature revision
replaces them by 12M-400M presets with a 8-block GRU and RMSNorm, not implemented here.

`agent.behavior='cem'` (PlaNet, experiments/configs/planet.py) replaces the actor-critic by
online planning: at every env step, CEM (wm_jax/core/planning.py) over action sequences scored
by the sum of the reward head's predictions along sampled prior trajectories from the current
posterior (PlaNet sec. 3), plus Gaussian exploration noise while collecting; the update is the
world-model step alone.
"""

from __future__ import annotations

import difflib

import jax
import jax.numpy as jnp
import ml_collections
import optax

from wm_jax.agents.actor_critic import make_actor_critic, make_optimizer
from wm_jax.agents.base import Agent, WorldModel, jit_init
from wm_jax.core.planning import cem
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError, UnknownNameError
from wm_jax.models.rssm import feat_of, make_world_model

# DreamerV3 v1 Table B.1: GRU units (deter), dense hidden units, MLP layers, CNN multiplier.
# 'debug' is ours: a tiny model for tests and CPU smoke runs.
SIZES = {
    "debug": dict(deter=64, units=64, layers=1, cnn_depth=8),
    "XS": dict(deter=256, units=256, layers=1, cnn_depth=24),
    "S": dict(deter=512, units=512, layers=2, cnn_depth=32),
    "M": dict(deter=1024, units=640, layers=3, cnn_depth=48),
    "L": dict(deter=2048, units=768, layers=4, cnn_depth=64),
    "XL": dict(deter=4096, units=1024, layers=5, cnn_depth=96),
}
# Which fields of which sections a size fills when they are left unset (None).
_SIZED = {"rssm": {"deter": "deter", "hidden": "units"},
          "encoder": {"units": "units", "layers": "layers", "cnn_depth": "cnn_depth"},
          "decoder": {"units": "units", "layers": "layers", "cnn_depth": "cnn_depth"},
          "reward_head": {"units": "units", "layers": "layers"},
          "cont_head": {"units": "units", "layers": "layers"},
          "actor": {"units": "units", "layers": "layers"},
          "critic": {"units": "units", "layers": "layers"}}
_CHOICES = {"precision": ("float32", "bfloat16"), "kl.kind": ("free_bits", "balance", "gaussian"),
            "reward_head.dist": ("symlog_twohot", "mse"), "critic.dist": ("symlog_twohot", "mse"),
            "actor.dist_cont": ("normal", "tanh_normal"), "rssm.initial": ("learned", "zeros"),
            "reward_transform": ("none", "tanh"), "actor.grad_disc": ("reinforce", "dynamics"),
            "actor.grad_cont": ("reinforce", "dynamics"), "cont_head.imagine": ("mode", "prob")}


def _get(cfg, path):
  for part in path.split("."):
    cfg = cfg[part]
  return cfg


def check_choices(agent: ml_collections.ConfigDict, choices: dict) -> None:
  """One sentence for the first field (dotted path under `agent`) whose value is not among its choices."""
  for path, allowed in choices.items():
    if _get(agent, path) not in allowed:
      raise RunConfigError(f"agent.{path}={_get(agent, path)!r} is not one of "
                           f"{', '.join(allowed)}.")


def resolve_agent_config(agent: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the agent config and fills size-derived fields left unset from SIZES[agent.size]; raises one sentence on an impossible setting."""
  if agent.size not in SIZES:
    close = difflib.get_close_matches(agent.size, list(SIZES), n=2, cutoff=0.3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownNameError(f"Unknown agent.size {agent.size!r}: {hint}choose one of "
                           f"{', '.join(SIZES)} (DreamerV3 Table B.1).")
  check_choices(agent, _CHOICES)
  if agent.get("behavior", "actor_critic") not in ("actor_critic", "cem"):
    raise RunConfigError(f"agent.behavior={agent.behavior!r} is not one of actor_critic, cem "
                         f"(PlaNet's planner).")
  if (agent.kl.kind == "gaussian") != (agent.rssm.classes == 0):
    raise RunConfigError("agent.kl.kind='gaussian' goes with Gaussian latents "
                         "(agent.rssm.classes=0) and the other kinds with classes > 0.")
  if agent.imag_horizon < 1:
    raise RunConfigError(f"agent.imag_horizon={agent.imag_horizon} must be at least 1.")
  resolved = ml_collections.ConfigDict(agent.to_dict())
  size = SIZES[agent.size]
  for section, fields in _SIZED.items():
    for field, key in fields.items():
      if resolved[section][field] is None:
        resolved[section][field] = size[key]
  return resolved


def check_agent_config(agent: ml_collections.ConfigDict, run=None) -> None:
  """Start-up check called by wm_jax.train.validate: one sentence on an impossible agent config (the run config is not needed here)."""
  resolve_agent_config(agent)


def make_dreamer(config: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The Dreamer `Agent` for the `agent` sub-config `config` and an env with `spec`."""
  cfg = resolve_agent_config(config)
  if not any(k in spec.obs for k in ("image", "vector")):
    raise RunConfigError("Dreamer needs an 'image' or 'vector' observation; the env has "
                         f"{', '.join(spec.obs)}.")
  planning = cfg.get("behavior", "actor_critic") == "cem"
  if planning and spec.act.discrete:
    raise RunConfigError("PlaNet's CEM planner searches continuous action sequences, and this "
                         "env's actions are discrete: use a DMC task or Pendulum-v1.")
  wm = make_world_model(cfg, spec)
  ac = None if planning else make_actor_critic(wm.cfg, spec.act)
  model_opt = make_optimizer(wm.cfg.model_opt)

  def init(key):
    k1, k2 = jax.random.split(key)
    wm_params = wm.init(k1)
    state = {"wm": wm_params, "wm_opt": model_opt.init(wm_params)}
    return state if planning else {**state, "ac": ac.init(k2, wm.feat_size)}

  def plan(wm_params, post, key):
    """PlaNet's action for each posterior state post [N]: the first of CEM's plan, [N, A]."""
    p = cfg.planner

    def one_env(start, key):
      def predicted_return(sequences, key):   # [C, H, A] -> [C]: sum of predicted rewards
        states = jax.tree.map(lambda x: jnp.broadcast_to(x, (p.candidates,) + x.shape), start)
        def step(state, xs):
          action, k = xs
          state = wm.img_step(wm_params, state, action, k)
          return state, wm.reward(wm_params, feat_of(state))
        xs = (jnp.swapaxes(sequences, 0, 1), jax.random.split(key, p.horizon))
        return jax.lax.scan(step, states, xs)[1].sum(0)
      return cem(predicted_return, key, p.horizon, spec.act.dim, candidates=p.candidates,
                 top_k=p.top_k, iterations=p.iterations, low=spec.act.low,
                 high=spec.act.high)[0]
    return jax.vmap(one_env)(post, jax.random.split(key, post_size(post)))

  def act(state, carry, obs, key, explore: bool):
    """One filtering step on obs [N] then one policy step; resets where obs['is_first']."""
    k1, k2 = jax.random.split(key)
    post = filter_step(wm, state["wm"], carry, obs, k1)
    if planning:
      k2, noise_key = jax.random.split(k2)
      action = plan(state["wm"], post, k2)
      if explore:   # PlaNet's exploration: Gaussian noise on the planned action
        action = action + cfg.actor.expl_noise * jax.random.normal(noise_key, action.shape)
    else:
      action = ac.act(state["ac"]["actor"], feat_of(post), k2, explore)
    env_action, action = to_env_action(action, spec)
    return env_action, {"state": post, "action": action}

  def update(state, batch, key):
    """World-model step on batch [B, T], then actor-critic on imagination from all B*T posteriors."""
    k1, k2 = jax.random.split(key)
    wm_params, wm_opt, metrics, out = world_model_step(wm, model_opt, state["wm"],
                                                       state["wm_opt"], batch, k1)
    if planning:   # PlaNet learns the model only; it plans when it acts
      return {"wm": wm_params, "wm_opt": wm_opt}, jax.tree.map(
          lambda x: jnp.asarray(x, jnp.float32), metrics)
    start, start_cont = imagination_starts(out, batch)
    ac_state, ac_metrics = ac.update(state["ac"], wm, state["wm"], start, start_cont, k2)
    metrics.update(ac_metrics)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"wm": wm_params, "wm_opt": wm_opt, "ac": ac_state}, metrics

  return Agent(init=jit_init(init), initial_carry=lambda n: initial_carry(wm, n), act=act,
               update=update)


# Real frames the RSSM filters before an offline open-loop rollout: STORM's imagination burn-in
# (its paper, sec. 3.3), so that the two families condition on the same context by default.
RSSM_CONTEXT = 8


def make_dreamer_world_model(config: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """The RSSM world model of a Dreamer config (V1-V3, PlaNet) alone, as a `WorldModel` for
  offline training (experiments.train_offline, benchmarks.wm_quality)."""
  cfg = resolve_agent_config(config)
  return single_loss_world_model(make_world_model(cfg, spec), RSSM_CONTEXT)


def single_loss_world_model(wm, context_length: int) -> WorldModel:
  """A `WorldModel` around a model with one loss and one optimiser (`wm.loss`, `wm.cfg.model_opt`,
  `wm.reset_from`, `wm.step`: the RSSM and STORM); its update is `world_model_step`."""
  opt = make_optimizer(wm.cfg.model_opt)

  def init(key):
    params = wm.init(key)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": opt.init(params)}

  def update(state, batch, key, phase=None):
    del phase   # one component: always the same update
    params, opt_state, metrics, _ = world_model_step(wm, opt, state["params"], state["opt"],
                                                     batch, key)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"step": state["step"] + 1, "params": params, "opt": opt_state}, metrics

  return WorldModel(init=jit_init(init), update=update, schedule=lambda updates: None,
                    reset_from=wm.reset_from, step=wm.step, context_length=context_length)


def initial_carry(wm, num_envs: int) -> dict:
  """Acting carry of an RSSM agent for N envs: zero latent 'state' [N] and previous 'action' [N, A]; the first observation is always is_first, which resets it."""
  state = jax.eval_shape(lambda k: wm.initial(wm.init(k), num_envs), jax.random.key(0))
  state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)
  return {"state": state, "action": jnp.zeros((num_envs, wm.action_size), jnp.float32)}


def filter_step(wm, wm_params, carry: dict, obs: dict, key: jax.Array):
  """The posterior state [N] after obs [N] (one RSSM filtering step from the carry; resets where obs['is_first'])."""
  embed = wm.embed(wm_params, {k: obs[k] for k in ("image", "vector") if k in obs})
  post, _ = wm.obs_step(wm_params, carry["state"], carry["action"], embed,
                        jnp.asarray(obs["is_first"], bool), key)
  return post


def imagination_starts(out: dict, batch: dict):
  """The world-model loss's posteriors [B, T] flattened into imagination starts [B*T], and their continue flags [B*T] (DreamerV3: imagination starts from every replay state)."""
  flat = lambda x: x.reshape((-1,) + x.shape[2:])
  return (jax.tree.map(flat, out["post"]),
          flat(1.0 - batch["is_terminal"].astype(jnp.float32)))


def post_size(state) -> int:
  """N, the leading size of a batch of RSSM states."""
  return jax.tree.leaves(state)[0].shape[0]


def to_env_action(action: jax.Array, spec: EnvSpec) -> tuple[jax.Array, jax.Array]:
  """Model-format action [N, A] -> (env action: int32 [N] or clipped float32 [N, A], the model input that matches it: one-hot [N, A] or the clipped action)."""
  if spec.act.discrete:
    env_action = jnp.argmax(action, -1).astype(jnp.int32)
    return env_action, jax.nn.one_hot(env_action, spec.act.num_actions, dtype=jnp.float32)
  env_action = jnp.clip(action, spec.act.low, spec.act.high)
  return env_action, env_action


def world_model_step(wm, opt: optax.GradientTransformation, params, opt_state, batch: dict,
                     key: jax.Array):
  """One optimiser step on `wm.loss(params, batch [B, T], key)` (any world model with that contract) -> (params, opt_state, metrics incl. 'model_grad_norm', the loss's `out`)."""
  (_, (metrics, out)), grads = jax.value_and_grad(wm.loss, has_aux=True)(params, batch, key)
  upd, opt_state = opt.update(grads, opt_state, params)
  metrics["model_grad_norm"] = optax.tree.norm(grads)
  return optax.apply_updates(params, upd), opt_state, metrics, out
