"""Actor-critic learned on imagined trajectories of a world model (DreamerV1-V3; STORM).

Any world model with `imagine(params, policy, start, horizon, key) -> (states [N, H+1],
actions [N, H])` whose states hold 'deter' and 'stoch' (the feature is their concatenation,
`feat_of`), and `reward` / `cont` of that feature, can be learned in: the RSSM
(wm_jax/models/rssm.py) and STORM (wm_jax/models/storm.py, s_t = [h_{t-1}, z_t]).

DreamerV3 (arXiv:2301.04104 v1, sec. "Actor critic learning") defaults: horizon 15,
gamma = 1 - 1/333, lambda 0.95, REINFORCE for discrete actions with advantages divided by
the percentile return scale max(1, P95 - P5), actor entropy 3e-4, twohot symlog critic with
a slow (EMA 0.98) critic regulariser. Switches for the older papers: dynamics backprop through
the model (`actor.grad_* = 'dynamics'`, DreamerV1 sec. 3 / DreamerV2 continuous control),
MSE critic with a slow target network (DreamerV2), tanh-Normal actions (DreamerV1).
As in the 2023 code, continuous control backpropagates -(R^lambda - v(s_t)) / S through the
dynamics, the actor reads stop-gradient states, the RSSM clips imagined actions into [-1, 1]
(`rssm.action_clip`), imagined continuation is the continue head's mode
(`cont_head.imagine`), and evaluation samples from the policy (`actor.eval_sample`).

Imagined trajectories are time-second: states [N, H+1] (start included), actions [N, H].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from wm_jax.core import losses
from wm_jax.core.distributions import TwoHotSymlog, onehot_mode, sample_onehot_st, unimix_logits
from wm_jax.core.nets import Head
from wm_jax.envs.base import ActionSpec
from wm_jax.models.rssm import DTYPES, WorldModel, feat_of

sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------- policy


class ActorNet(nn.Module):
  """[..., F] -> [..., A] logits (discrete) or [..., 2A] mean and raw std (continuous) (DreamerV3 App. B actor MLP)."""
  cfg: Any  # the `actor` section
  action_size: int
  discrete: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat):
    c = self.cfg
    size = self.action_size if self.discrete else 2 * self.action_size
    return Head((size,), c.units, c.layers, c.outscale, c.act, c.norm, self.dtype,
                name="head")(feat)


@dataclasses.dataclass(frozen=True)
class Policy:
  """The action distribution of the actor's raw output [..., A or 2A] (DreamerV3: 1%-unimix categorical or Normal(tanh(mean), std in [0.1, 1]); DreamerV1: tanh-transformed Normal)."""
  cfg: Any
  discrete: bool

  def _normal(self, out):
    c = self.cfg
    mean, raw_std = jnp.split(out, 2, -1)
    if c.dist_cont == "normal":          # DreamerV3 App. B
      std = (c.max_std - c.min_std) * jax.nn.sigmoid(raw_std + 2.0) + c.min_std
      return distrax.MultivariateNormalDiag(jnp.tanh(mean), std)
    mean = c.mean_scale * jnp.tanh(mean / c.mean_scale)   # DreamerV1 App. A (tanh_normal)
    std = jax.nn.softplus(raw_std + jnp.log(jnp.expm1(c.init_std))) + c.min_std
    return distrax.Transformed(distrax.MultivariateNormalDiag(mean, std),
                               distrax.Block(distrax.Tanh(), 1))

  def _logits(self, out):
    return unimix_logits(out, self.cfg.unimix) if self.cfg.unimix else out

  def sample(self, out, key):
    """[..., A] action for the model: straight-through one-hot or reparameterised sample."""
    if self.discrete:
      return sample_onehot_st(key, self._logits(out))
    return self._normal(out).sample(seed=key)

  def mode(self, out):
    """[..., A] greedy action (evaluation)."""
    if self.discrete:
      return onehot_mode(self._logits(out))
    mean = jnp.split(out, 2, -1)[0]
    if self.cfg.dist_cont == "normal":
      return jnp.tanh(mean)
    return jnp.tanh(self.cfg.mean_scale * jnp.tanh(mean / self.cfg.mean_scale))

  def log_prob(self, out, action):
    """[...] log pi(action) of a model-format action [..., A]."""
    if self.discrete:
      return jnp.sum(action * jax.nn.log_softmax(self._logits(out), -1), -1)
    if self.cfg.dist_cont != "normal":
      action = jnp.clip(action, -1 + 1e-6, 1 - 1e-6)   # inside the tanh's open range
    return self._normal(out).log_prob(action)

  def entropy(self, out, key):
    """[...] policy entropy (analytic; a one-sample estimate for the tanh-Normal)."""
    if self.discrete:
      logp = jax.nn.log_softmax(self._logits(out), -1)
      return -jnp.sum(jnp.exp(logp) * logp, -1)
    dist = self._normal(out)
    if self.cfg.dist_cont == "normal":
      return dist.entropy()
    _, logp = dist.sample_and_log_prob(seed=key)
    return -logp


# --------------------------------------------------------------------------- critic


class CriticNet(nn.Module):
  """[..., F] -> [..., bins] twohot logits (DreamerV3) or [...] value (DreamerV1/V2), output zero-initialised in V3."""
  cfg: Any  # the `critic` section
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat):
    c = self.cfg
    shape = (c.bins,) if c.dist == "symlog_twohot" else ()
    return Head(shape, c.units, c.layers, c.outscale, c.act, c.norm, self.dtype,
                name="head")(feat)


def make_optimizer(opt) -> optax.GradientTransformation:
  """Global-norm clipping then Adam(W) (DreamerV3 v1 App. W: Adam, clip 1000 model / 100 actor-critic; the 2024 revision uses LaProp + AGC 0.3 instead)."""
  adam = (optax.adamw(opt.lr, eps=opt.eps, weight_decay=opt.wd) if opt.wd
          else optax.adam(opt.lr, eps=opt.eps))
  return optax.chain(optax.clip_by_global_norm(opt.clip), adam)


# --------------------------------------------------------------------------- learner


@dataclasses.dataclass(frozen=True)
class ActorCritic:
  """Pure functions of the imagination actor-critic; build with `make_actor_critic`."""
  cfg: Any      # the resolved agent config (reads actor, critic, *_opt, imag_horizon, ...)
  act_spec: ActionSpec
  actor_net: ActorNet
  critic_net: CriticNet
  policy: Policy

  @property
  def _bins(self):
    c = self.cfg.critic
    return losses.twohot_bins(c.bins, c.bin_low, c.bin_high)

  def init(self, key, feat_size: int) -> dict:
    """State: actor/critic/slow-critic params, their optimiser states, return-norm EMAs, update count."""
    k1, k2 = jax.random.split(key)
    feat = jnp.zeros((1, feat_size), jnp.float32)
    actor = self.actor_net.init(k1, feat)
    critic = self.critic_net.init(k2, feat)
    return {"actor": actor, "critic": critic, "slow_critic": critic,
            "actor_opt": make_optimizer(self.cfg.actor_opt).init(actor),
            "critic_opt": make_optimizer(self.cfg.critic_opt).init(critic),
            "retnorm": losses.return_norm_init(), "step": jnp.zeros((), jnp.int32)}

  def act(self, actor_params, feat, key, explore: bool):
    """[N, F] -> [N, A] model-format action: a sample while exploring (plus DreamerV1's Gaussian noise), the mode otherwise (unless `actor.eval_sample`)."""
    out = self.actor_net.apply(actor_params, feat)
    if not explore and not self.cfg.actor.eval_sample:
      return self.policy.mode(out)
    k1, k2 = jax.random.split(key)
    action = self.policy.sample(out, k1)
    if explore and not self.act_spec.discrete and self.cfg.actor.expl_noise:
      action = action + self.cfg.actor.expl_noise * jax.random.normal(k2, action.shape)
    return sg(action)

  def value(self, critic_params, feat):
    """[..., F] -> [...] critic mean."""
    out = self.critic_net.apply(critic_params, feat)
    if self.cfg.critic.dist == "symlog_twohot":
      return TwoHotSymlog(out, self._bins).mean()
    return out

  def _actor_loss(self, actor_params, state, wm: WorldModel, wm_params, start, start_cont, key,
                  reward_fn=None):
    """Imagines H steps from `start` [N] and returns the actor loss (DreamerV3 eq. 11: -sg(adv)/S * log pi - eta * H; dynamics variant: -(R^lambda - v(s_t)) / S as the 2023 code, or -R^lambda / S without the baseline, DreamerV1 eq. 7)."""
    c = self.cfg
    k_img, k_ent = jax.random.split(key)
    grad_mode = c.actor.grad_disc if self.act_spec.discrete else c.actor.grad_cont

    def policy(s, k):
      """The actor sees sg(s_t) (DreamerV1-V3 code); with dynamics backprop the gradient reaches it through a_t -> s_{t+1} -> rewards and values, not through its input."""
      action = self.policy.sample(self.actor_net.apply(actor_params, sg(feat_of(s))), k)
      return action if grad_mode == "dynamics" else sg(action)

    states, actions = wm.imagine(wm_params, policy, start, c.imag_horizon, k_img)
    feat = feat_of(states)                                        # [N, H+1, F]
    if reward_fn is None:
      reward = wm.reward(wm_params, feat[:, 1:])                  # [N, H]
    else:
      reward = reward_fn(feat, actions)                           # [N, H]
    cont = wm.cont(wm_params, feat[:, 1:])                        # [N, H]
    critic = state["slow_critic"] if c.critic.slow_target else state["critic"]
    value = self.value(sg(critic), feat)                          # [N, H+1]
    ret = losses.lambda_returns(reward, value[:, :-1], c.gamma * cont, value[:, -1],
                                c.return_lambda)                  # [N, H]
    cont_all = jnp.concatenate([start_cont[:, None], cont], 1)
    weight = sg(jnp.cumprod(c.gamma * cont_all, 1) / c.gamma)    # [N, H+1]
    rn = c.return_norm
    retnorm = state["retnorm"]
    if rn.enabled:
      retnorm = losses.return_norm_update(retnorm, ret, rn.decay, rn.low_pct, rn.high_pct)
      scale = losses.return_norm_scale(retnorm)
    else:
      scale = jnp.ones((), jnp.float32)
    out = self.actor_net.apply(actor_params, sg(feat[:, :-1]))
    if grad_mode == "reinforce":
      adv = sg((ret - value[:, :-1]) / scale)
      objective = self.policy.log_prob(out, sg(actions)) * adv
    elif c.actor.backprop_baseline:   # 2023 code: normed_ret - normed_base, base not sg
      objective = (ret - value[:, :-1]) / scale
    else:
      objective = ret / scale
    entropy = self.policy.entropy(out, k_ent)
    loss = -jnp.mean(weight[:, :-1] * (objective + c.actor.entropy * entropy))
    traj = {"feat": sg(feat), "ret": sg(ret), "weight": weight}
    metrics = {"actor_loss": loss, "actor_entropy": jnp.mean(entropy),
               "imag_return": jnp.mean(ret), "imag_reward": jnp.mean(reward),
               "return_scale": scale}
    return loss, (traj, retnorm, metrics)

  def _critic_loss(self, critic_params, slow_params, traj):
    """Critic regression on sg(R^lambda) plus the slow-critic regulariser, weighted by the cumulative continue (DreamerV3 sec. "Actor critic learning"; DreamerV1 eq. 8)."""
    c = self.cfg.critic
    feat = traj["feat"][:, :-1]
    out = self.critic_net.apply(critic_params, feat)
    slow = sg(self.value(slow_params, feat))
    if c.dist == "symlog_twohot":
      dist = TwoHotSymlog(out, self._bins)
      nll = -dist.log_prob(traj["ret"])
      reg = losses.slow_critic_loss(dist, slow, c.slow_reg)
    else:
      nll = 0.5 * jnp.square(out - traj["ret"])
      reg = 0.5 * c.slow_reg * jnp.square(out - slow)
    loss = jnp.mean(traj["weight"][:, :-1] * (nll + reg))
    return loss, {"critic_loss": loss, "imag_value": jnp.mean(self.value(critic_params, feat))}

  def update(self, state: dict, wm: WorldModel, wm_params, start, start_cont, key,
             reward_fn=None):
    """One actor and one critic step on imagination from `start` [N] (posterior states, stop-gradiented) with continue flags [N]; returns (state, metrics).

    reward_fn(feat [N, H+1, F], actions [N, H]) -> [N, H] replaces the reward head's prediction
    for feat[:, 1:] (Plan2Explore's intrinsic reward); it must be differentiable in the
    actions where the actor backpropagates through the dynamics."""
    wm_params = sg(wm_params)
    start = sg(start)
    (_, (traj, retnorm, metrics)), actor_grads = jax.value_and_grad(
        self._actor_loss, has_aux=True)(state["actor"], state, wm, wm_params, start,
                                         start_cont, key, reward_fn)
    opt = make_optimizer(self.cfg.actor_opt)
    upd, actor_opt = opt.update(actor_grads, state["actor_opt"], state["actor"])
    actor = optax.apply_updates(state["actor"], upd)
    (_, critic_metrics), critic_grads = jax.value_and_grad(self._critic_loss, has_aux=True)(
        state["critic"], state["slow_critic"], traj)
    opt = make_optimizer(self.cfg.critic_opt)
    upd, critic_opt = opt.update(critic_grads, state["critic_opt"], state["critic"])
    critic = optax.apply_updates(state["critic"], upd)
    c = self.cfg.critic
    step = state["step"] + 1
    rate = jnp.where(step % c.slow_every == 0, c.slow_rate, 0.0)
    slow = losses.ema_update(state["slow_critic"], critic, rate)
    metrics.update(critic_metrics)
    metrics["actor_grad_norm"] = optax.tree.norm(actor_grads)
    metrics["critic_grad_norm"] = optax.tree.norm(critic_grads)
    new = {"actor": actor, "critic": critic, "slow_critic": slow, "actor_opt": actor_opt,
           "critic_opt": critic_opt, "retnorm": retnorm, "step": step}
    return new, metrics


def make_actor_critic(cfg, act_spec: ActionSpec) -> ActorCritic:
  """The actor-critic of a resolved agent config for actions `act_spec`."""
  dtype = DTYPES[cfg.precision]
  discrete = act_spec.discrete
  size = act_spec.size
  return ActorCritic(cfg, act_spec, ActorNet(cfg.actor, size, discrete, dtype),
                     CriticNet(cfg.critic, dtype), Policy(cfg.actor, discrete))
