"""The STORM agent: the STORM world model (wm_jax/models/storm.py) + the DreamerV3 actor-critic.

`make_storm(config, spec)` returns an `Agent` (wm_jax/agents/base.py). Its update is one
world-model step on the replay batch [B, T] (Zhang et al. 2023, eq. 4-5), then one actor and
one critic step (wm_jax/agents/actor_critic.py, STORM's hyperparameters) on `imag_batch`
trajectories of `imag_horizon` steps imagined after a burn-in of `imag_context` real steps
(paper sec. 3.3). Acting reads s_t = [h_{t-1}, z_t]: h from the Transformer over the last
`act_context` steps of the episode, z_t the posterior sample of the current frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.agents.actor_critic import make_actor_critic, make_optimizer
from wm_jax.agents.base import Agent, WorldModel, jit_init
from wm_jax.agents.dreamer import (check_choices, single_loss_world_model, to_env_action,
                                  world_model_step)
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.rssm import feat_of
from wm_jax.models.storm import make_storm_model

sg = jax.lax.stop_gradient
_CHOICES = {"precision": ("float32", "bfloat16"), "term_head.imagine": ("mode", "prob"),
            "actor.grad_disc": ("reinforce",), "actor.grad_cont": ("reinforce", "dynamics"),
            "transformer.positions": ("learned", "sinusoidal")}


def check_agent_config(agent: ml_collections.ConfigDict, run=None) -> None:
  """Start-up check (wm_jax.train.validate): one sentence on an impossible STORM config, including the run's sequence length against the Transformer's context."""
  check_choices(agent, _CHOICES)
  t = agent.transformer
  if t.width % t.heads:
    raise RunConfigError(f"agent.transformer.width={t.width} does not split over "
                         f"agent.transformer.heads={t.heads}: use a multiple of the heads.")
  if agent.imag_context < 1 or agent.imag_horizon < 1 or agent.act_context < 1:
    raise RunConfigError("agent.imag_context, agent.imag_horizon and agent.act_context must "
                         "be at least 1.")
  if agent.imag_context + agent.imag_horizon > t.max_len:
    raise RunConfigError(
        f"Imagination needs imag_context + imag_horizon = "
        f"{agent.imag_context + agent.imag_horizon} positions but "
        f"agent.transformer.max_len={t.max_len}: raise max_len or shorten the imagination.")
  if agent.act_context > t.max_len:
    raise RunConfigError(f"agent.act_context={agent.act_context} is longer than "
                         f"agent.transformer.max_len={t.max_len}: lower act_context.")
  if run is None or run.train_ratio <= 0:
    return
  if run.batch_length - 1 > t.max_len:
    raise RunConfigError(
        f"STORM trains on run.batch_length - 1 = {run.batch_length - 1} tokens but "
        f"agent.transformer.max_len={t.max_len}: lower run.batch_length or raise max_len.")
  if agent.imag_context > run.batch_length - 1:
    raise RunConfigError(
        f"agent.imag_context={agent.imag_context} is longer than the replay sequence allows "
        f"(run.batch_length - 1 = {run.batch_length - 1}): raise run.batch_length or lower "
        f"imag_context.")


def make_storm(config: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The STORM `Agent` for the `agent` sub-config `config` and an env with `spec`."""
  check_agent_config(config)
  if not any(k in spec.obs for k in ("image", "vector")):
    raise RunConfigError("STORM needs an 'image' or 'vector' observation; the env has "
                         f"{', '.join(spec.obs)}.")
  wm = make_storm_model(config, spec)
  ac = make_actor_critic(wm.cfg, spec.act)
  model_opt = make_optimizer(wm.cfg.model_opt)
  obs_keys = tuple(k for k in ("image", "vector") if k in spec.obs)
  C, Z = wm.cfg.act_context, wm.cfg.stoch * wm.cfg.classes

  def init(key):
    k1, k2 = jax.random.split(key)
    wm_params = wm.init(k1)
    return {"wm": wm_params, "wm_opt": model_opt.init(wm_params),
            "ac": ac.init(k2, wm.feat_size)}

  def initial_carry(num_envs: int):
    """The last `act_context` steps of each env's episode (latents, actions, which are filled)."""
    return {"stoch": jnp.zeros((num_envs, C, Z), jnp.float32),
            "action": jnp.zeros((num_envs, C, wm.action_size), jnp.float32),
            "valid": jnp.zeros((num_envs, C), bool)}

  def act(state, carry, obs, key, explore: bool):
    """h_{t-1} from the episode's last steps, z_t from the frame, then the policy on [h, z]; the window empties where obs['is_first']."""
    k1, k2 = jax.random.split(key)
    is_first = jnp.asarray(obs["is_first"], bool)
    window = dict(carry, valid=carry["valid"] & ~is_first[:, None])
    h = wm.context_feature(state["wm"], window)
    _, z = wm.posterior(state["wm"], {k: obs[k] for k in obs_keys}, k1)
    action = ac.act(state["ac"]["actor"], feat_of({"deter": h, "stoch": z}), k2, explore)
    env_action, action = to_env_action(action, spec)
    push = lambda old, new: jnp.concatenate([old[:, 1:], new[:, None]], 1)
    carry = {"stoch": push(window["stoch"], sg(z)), "action": push(window["action"], action),
             "valid": push(window["valid"], jnp.ones_like(is_first))}
    return env_action, carry

  def update(state, batch, key):
    """World-model step on batch [B, T], then actor-critic on imagination after burn-in on windows of the batch."""
    k1, k2, k3 = jax.random.split(key, 3)
    wm_params, wm_opt, metrics, out = world_model_step(wm, model_opt, state["wm"],
                                                       state["wm_opt"], batch, k1)
    start, start_cont = wm.imagination_starts(state["wm"], sg(out["stoch"]), batch, k2)
    ac_state, ac_metrics = ac.update(state["ac"], wm, state["wm"], start, start_cont, k3)
    metrics.update(ac_metrics)
    metrics["imag_start_fraction"] = jnp.mean(start_cont)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"wm": wm_params, "wm_opt": wm_opt, "ac": ac_state}, metrics

  return Agent(init=jit_init(init), initial_carry=initial_carry, act=act, update=update)


def make_storm_world_model(config: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """STORM's world model alone as a `WorldModel` for offline training; it is reset on
  `imag_context` real frames, its imagination burn-in (paper sec. 3.3)."""
  check_agent_config(config)
  return single_loss_world_model(make_storm_model(config, spec), config.imag_context)
