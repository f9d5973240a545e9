"""Plan2Explore (Sekar et al. 2020, arXiv:2005.05960): task-agnostic exploration by the
disagreement of an ensemble of one-step predictors in the latent space of a Dreamer world model,
and zero-shot / few-shot adaptation to the task reward from the same replay.

One update (`make_plan2explore`) is:
- the world-model step of the Dreamer module (wm_jax/agents/dreamer.py). The reward head reads
  sg(feat) (`reward_head.stop_grad`, the reference code's freeze_extrinsic_heads), so the
  task reward never shapes the representation that exploration learns;
- one step of the ensemble (`OneStepEnsemble`): K predictors of the next observation embedding
  e_{t+1} from (s_t, a_t) (sec. 3, eq. 5), each on its own bootstrap resample of the batch's
  sequences, MSE to sg(e_{t+1});
- the exploration actor-critic (the existing one, wm_jax/agents/actor_critic.py) on the
  intrinsic reward r_t = scale * mean_d Var_k[mu_k(s_t, a_t)_d] (`disagreement`, eq. 6) along
  trajectories imagined from every replay state;
- the task actor-critic, same imagination starts, on the reward head's prediction (the
  zero-shot policy: it learns in imagination only, from whatever the explorer collected).

Collection (`explore=True`) uses the exploration actor (`explore.policy='disagreement'`) or
uniform random actions (`'random'`, the paper's random-exploration baseline at the same budget)
until `explore.adapt_after_updates`, and the task actor after it (few-shot adaptation;
-1 explores for the whole run, the zero-shot protocol). Evaluation always runs the task actor.

Defaults (experiments/configs/plan2explore.py) follow the paper and its reference code
(github.com/ramanans1/plan2explore): Dreamer V1 world model and actor-critic (the variant
`dmc_proprio_dreamerv3` builds the same agent on DreamerV3's), 5 members of 2 hidden ReLU layers
as wide as the target, intrinsic reward scale 10000, the model's Adam settings for the
ensemble. Deviations, named: the action enters the members' first layer only
(the reference code appends it to every hidden layer); the ensemble has its own gradient clipping
instead of sharing the model's (its inputs and targets are stop-gradiented, so only the
clipping differs).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from wm_jax.agents.actor_critic import make_actor_critic, make_optimizer
from wm_jax.agents.base import Agent, jit_init
from wm_jax.agents.dreamer import (check_choices, filter_step, imagination_starts,
                                   initial_carry, resolve_agent_config, to_env_action,
                                   world_model_step)
from wm_jax.core.nets import Head
from wm_jax.envs.base import ActionSpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.rssm import feat_of, make_world_model

sg = jax.lax.stop_gradient
_CHOICES = {"explore.policy": ("disagreement", "random")}


class OneStepEnsemble(nn.Module):
  """([..., F] feature s_t, [..., A] action a_t) -> [K, ..., E] the K members' predictions of the next embedding e_{t+1} (Plan2Explore sec. 3, eq. 5)."""
  members: int
  out_size: int
  units: int
  layers: int
  act: str = "relu"

  @nn.compact
  def __call__(self, feat, action):
    members = nn.vmap(Head, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=self.members)
    x = jnp.concatenate([feat, action.astype(feat.dtype)], -1)
    return members((self.out_size,), self.units, self.layers, 1.0, self.act, False,
                   name="members")(x)


def disagreement(predictions: jax.Array) -> jax.Array:
  """[K, ..., E] ensemble predictions -> [...]: the variance over members, averaged over the E output dimensions (Plan2Explore eq. 6); zero when the members agree."""
  return jnp.mean(jnp.var(predictions, axis=0), axis=-1)


def bootstrap_weights(key: jax.Array, members: int, batch: int) -> jax.Array:
  """[K, B] how often each of B sequences is drawn when each member resamples the batch with replacement (the reference code's bootstrap; the counts sum to B per member)."""
  draws = jax.random.randint(key, (members, batch), 0, batch)
  return jnp.sum(jax.nn.one_hot(draws, batch), axis=1)


def check_agent_config(agent: ml_collections.ConfigDict, run=None) -> None:
  """Start-up check (wm_jax.train.validate): one sentence on an impossible setting."""
  resolve_agent_config(agent)
  check_choices(agent, _CHOICES)
  e = agent.explore
  if e.policy == "disagreement" and e.members < 2:
    raise RunConfigError(f"agent.explore.members={e.members}: a disagreement needs at least "
                         "2 ensemble members (the paper uses 5).")
  if e.adapt_after_updates < -1:
    raise RunConfigError(f"agent.explore.adapt_after_updates={e.adapt_after_updates}: use -1 to "
                         "explore for the whole run or an update count >= 0.")


def random_action(key: jax.Array, act: ActionSpec, num: int) -> jax.Array:
  """[N, A] model-format action drawn uniformly: a one-hot (discrete) or a point of the box [low, high]^A."""
  if act.discrete:
    return jax.nn.one_hot(jax.random.randint(key, (num,), 0, act.num_actions), act.num_actions)
  return jax.random.uniform(key, (num, act.dim), minval=act.low, maxval=act.high)


def make_plan2explore(config: ml_collections.ConfigDict, spec: EnvSpec) -> Agent:
  """The Plan2Explore `Agent` for the `agent` sub-config `config` and an env with `spec`."""
  check_agent_config(config)
  cfg = resolve_agent_config(config)
  if not any(k in spec.obs for k in ("image", "vector")):
    raise RunConfigError("Plan2Explore needs an 'image' or 'vector' observation; the env has "
                         f"{', '.join(spec.obs)}.")
  e = cfg.explore
  by_disagreement = e.policy == "disagreement"
  wm = make_world_model(cfg, spec)
  ac = make_actor_critic(wm.cfg, spec.act)
  model_opt = make_optimizer(wm.cfg.model_opt)
  ensemble_opt = make_optimizer(e.opt)
  embed_size = jax.eval_shape(
      lambda k: wm.embed(wm.init(k), {k2: jnp.zeros((1,) + tuple(v.shape), v.dtype)
                                      for k2, v in spec.obs.items()
                                      if k2 in ("image", "vector")}),
      jax.random.key(0)).shape[-1]
  ensemble = OneStepEnsemble(e.members, embed_size, e.units or embed_size, e.layers, e.act)

  def init(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    wm_params = wm.init(k1)
    state = {"wm": wm_params, "wm_opt": model_opt.init(wm_params),
             "task": ac.init(k2, wm.feat_size)}
    if not by_disagreement:
      return state
    feat = jnp.zeros((1, wm.feat_size), jnp.float32)
    ens = ensemble.init(k4, feat, jnp.zeros((1, wm.action_size), jnp.float32))
    return {**state, "explore": ac.init(k3, wm.feat_size), "ensemble": ens,
            "ensemble_opt": ensemble_opt.init(ens)}

  def act(state, carry, obs, key, explore: bool):
    """One filtering step on obs [N], then the explorer's (or random) action while exploring, the task actor's after `adapt_after_updates` and in evaluation."""
    k1, k2, k3 = jax.random.split(key, 3)
    post = filter_step(wm, state["wm"], carry, obs, k1)
    feat = feat_of(post)
    action = ac.act(state["task"]["actor"], feat, k2, explore)
    if explore:
      if by_disagreement:
        explorer = ac.act(state["explore"]["actor"], feat, k3, True)
      else:
        explorer = random_action(k3, spec.act, feat.shape[0])
      if e.adapt_after_updates < 0:   # zero-shot protocol: explore for the whole run
        action = explorer
      else:
        action = jnp.where(state["task"]["step"] < e.adapt_after_updates, explorer, action)
    env_action, action = to_env_action(action, spec)
    return env_action, {"state": post, "action": action}

  def ensemble_loss(params, feat, action, target, weight):
    """feat [B, T-1, F], action [B, T-1, A] taken there, target [B, T-1, E] the next embedding, weight [K, B, T-1] -> (loss, metrics): each member's weighted MSE, summed over members."""
    pred = ensemble.apply(params, feat, action)                        # [K, B, T-1, E]
    error = jnp.sum(jnp.square(pred - target), -1)                     # [K, B, T-1]
    per_member = jnp.sum(weight * error, (1, 2)) / jnp.maximum(jnp.sum(weight, (1, 2)), 1.0)
    loss = jnp.sum(per_member)
    return loss, {"ensemble_loss": loss, "ensemble_disagreement": jnp.mean(disagreement(pred))}

  def train_ensemble(params, opt_state, out, batch, key):
    """One step on the transitions (s_t, a_t) -> e_{t+1} of batch [B, T]; pairs across an episode start are left out."""
    action = wm.encode_action(batch["action"])
    valid = 1.0 - batch["is_first"][:, 1:].astype(jnp.float32)         # [B, T-1]
    weight = bootstrap_weights(key, e.members, valid.shape[0])[:, :, None] * valid
    if not e.bootstrap:
      weight = jnp.broadcast_to(valid, weight.shape)
    inputs = (sg(out["feat"][:, :-1]), action[:, 1:], sg(out["embed"][:, 1:]), weight)
    (_, metrics), grads = jax.value_and_grad(ensemble_loss, has_aux=True)(params, *inputs)
    upd, opt_state = ensemble_opt.update(grads, opt_state, params)
    metrics["ensemble_grad_norm"] = optax.tree.norm(grads)
    return optax.apply_updates(params, upd), opt_state, metrics

  def intrinsic_reward(ensemble_params):
    """reward_fn of the exploration actor-critic: feat [N, H+1, F], actions [N, H] -> [N, H] scaled disagreement about the step from feat[:, t] under actions[:, t]."""
    params = sg(ensemble_params)
    return lambda feat, actions: e.intr_scale * disagreement(
        ensemble.apply(params, feat[:, :-1], actions))

  def update(state, batch, key):
    """World-model step on batch [B, T]; ensemble step; explorer and task actor-critics on imagination from all B*T posteriors."""
    k_wm, k_task, k_boot, k_expl = jax.random.split(key, 4)
    wm_params, wm_opt, metrics, out = world_model_step(wm, model_opt, state["wm"],
                                                       state["wm_opt"], batch, k_wm)
    start, start_cont = imagination_starts(out, batch)
    task, task_metrics = ac.update(state["task"], wm, wm_params, start, start_cont, k_task)
    metrics.update(task_metrics)
    new = {"wm": wm_params, "wm_opt": wm_opt, "task": task}
    if by_disagreement:
      ens, ens_opt, ens_metrics = train_ensemble(state["ensemble"], state["ensemble_opt"], out,
                                                 batch, k_boot)
      expl, expl_metrics = ac.update(state["explore"], wm, wm_params, start, start_cont,
                                     k_expl, intrinsic_reward(ens))
      metrics.update(ens_metrics)
      metrics.update({f"explore_{k}": v for k, v in expl_metrics.items()})
      new.update({"ensemble": ens, "ensemble_opt": ens_opt, "explore": expl})
    return new, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  return Agent(init=jit_init(init), initial_carry=lambda n: initial_carry(wm, n), act=act,
               update=update)
