"""Loss math shared by the RSSM family (DreamerV1, V2, V3).

Defaults follow DreamerV3 (Hafner et al. 2023, arXiv:2301.04104 v1) unless a function is
named after an older paper (DreamerV1: arXiv:1912.01603, DreamerV2: arXiv:2010.02193),
in which case the defaults are that paper's.

Shape conventions: ``...`` is any batch prefix (e.g. ``[B, T]``). Categorical latents are
logits shaped ``[..., groups, classes]`` (DreamerV3: 32 groups of 32 classes). Imagined
trajectories put time LAST: ``[..., H]`` (e.g. ``[B, H]``).
"""

from typing import NamedTuple

import chex
import distrax
import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------- symlog, twohot


def symlog(x: jax.Array) -> jax.Array:
  """symlog(x) = sign(x) * log(|x| + 1), elementwise, any shape (DreamerV3 sec. "Robust predictions", symlog)."""
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
  """symexp(x) = sign(x) * (exp(|x|) - 1), inverse of symlog, elementwise (DreamerV3 sec. "Robust predictions")."""
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def twohot_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> jax.Array:
  """[K] bin positions evenly spaced in symlog space, exactly symmetric when low == -high (DreamerV3 sec. "Robust predictions": 255 bins over [-20, 20])."""
  b = jnp.linspace(low, high, num_bins, dtype=jnp.float32)
  if low == -high:  # linspace misses 0 by ~1e-8; mirroring makes a target of 0 encode to one bin.
    b = (b - b[::-1]) / 2
  return b


def twohot_encode(y: jax.Array, bins: jax.Array) -> jax.Array:
  """[...] values -> [..., K] two-hot weights on the two nearest of the sorted [K] bins, outside values clip to the end bins (DreamerV3 sec. "Robust predictions", twohot)."""
  y = jnp.clip(y, bins[0], bins[-1])
  k = jnp.clip(jnp.searchsorted(bins, y, side="right") - 1, 0, bins.shape[0] - 2)
  lo, hi = bins[k], bins[k + 1]
  w_hi = (y - lo) / (hi - lo)
  num = bins.shape[0]
  return (jax.nn.one_hot(k, num, dtype=w_hi.dtype) * (1.0 - w_hi)[..., None]
          + jax.nn.one_hot(k + 1, num, dtype=w_hi.dtype) * w_hi[..., None])


# --------------------------------------------------------------------------- KL terms


def kl_categorical(post_logits: jax.Array, prior_logits: jax.Array) -> jax.Array:
  """[..., G, C] logits x2 -> [...] KL(post || prior) summed over the G groups and C classes (KL term of DreamerV2 Algorithm 2 / DreamerV3 sec. "World model learning")."""
  chex.assert_equal_shape([post_logits, prior_logits])
  post_logp = jax.nn.log_softmax(post_logits, axis=-1)
  prior_logp = jax.nn.log_softmax(prior_logits, axis=-1)
  return jnp.sum(jnp.exp(post_logp) * (post_logp - prior_logp), axis=(-2, -1))


def dreamerv3_kl_loss(post_logits: jax.Array, prior_logits: jax.Array, free_bits: float = 1.0,
                      beta_dyn: float = 0.5, beta_rep: float = 0.1
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[..., G, C] logits x2 -> ([...] loss, [...] dyn, [...] rep), loss = beta_dyn*dyn + beta_rep*rep with dyn = max(free, KL(sg(post)||prior)), rep = max(free, KL(post||sg(prior))) (DreamerV3 sec. "World model learning": free bits of 1 nat, beta_dyn 0.5, beta_rep 0.1).

  Pass logits after ``unimix_logits`` (DreamerV3 mixes 1% uniform into both distributions).
  Clipping is per element (per batch entry and time step), before the caller averages.
  Below ``free_bits`` a term is constant, so its gradient is zero, as in the paper.
  Returned ``dyn``/``rep`` are the clipped values (what the loss uses).
  """
  dyn = jnp.maximum(free_bits, kl_categorical(sg(post_logits), prior_logits))
  rep = jnp.maximum(free_bits, kl_categorical(post_logits, sg(prior_logits)))
  return beta_dyn * dyn + beta_rep * rep, dyn, rep


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[...] values, optional 0/1 mask broadcastable to them -> [] mean over the entries where
  the mask is 1 (0 if none)."""
  if mask is None:
    return jnp.mean(x)
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mean_clipped_kl_loss(post_logits: jax.Array, prior_logits: jax.Array, free_nats: float,
                         beta_dyn: float, beta_rep: float, mask: jax.Array | None = None
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[..., G, C] logits x2, optional [...] mask -> ([] loss, [] dyn, [] rep) with dyn = max(free, mean KL(sg(post)||prior)) and rep = max(free, mean KL(post||sg(prior))), loss = beta_dyn*dyn + beta_rep*rep.

  Unlike ``dreamerv3_kl_loss`` the KL is averaged over the leading axes (where mask is 1)
  BEFORE the free-nats clip: DreamerV2's ``free_avg`` (beta_dyn = alpha, beta_rep = 1 - alpha)
  and STORM's code (sub_models/world_models.py CategoricalKLDivLossWithFreeBits: free bits 1,
  beta_dyn 0.5, beta_rep 0.1; Zhang et al. 2023, eq. 4-5).
  """
  dyn = jnp.maximum(free_nats, masked_mean(kl_categorical(sg(post_logits), prior_logits), mask))
  rep = jnp.maximum(free_nats, masked_mean(kl_categorical(post_logits, sg(prior_logits)), mask))
  return beta_dyn * dyn + beta_rep * rep, dyn, rep


def dreamerv2_kl_loss(post_logits: jax.Array, prior_logits: jax.Array, alpha: float = 0.8,
                      free_nats: float = 0.0) -> jax.Array:
  """[..., G, C] logits x2 -> [] alpha*KL(sg(post)||prior) + (1-alpha)*KL(post||sg(prior)) (DreamerV2 Algorithm 2, KL balancing, alpha = 0.8).

  As in the DreamerV2 reference code (``free_avg=True``), each side is averaged over all
  leading axes first and then clipped below ``free_nats`` (0 for Atari, 1 for DMC).
  """
  return mean_clipped_kl_loss(post_logits, prior_logits, free_nats, alpha, 1.0 - alpha)[0]


def gaussian_kl_loss(post_mean: jax.Array, post_std: jax.Array, prior_mean: jax.Array,
                     prior_std: jax.Array, free_nats: float = 3.0) -> jax.Array:
  """[..., D] diagonal Gaussians x2 -> [] max(free_nats, mean KL(post||prior)), KL summed over the D latent dims (DreamerV1 free nats = 3, as in its reference code).

  As in the DreamerV1 reference code, the KL is averaged over leading axes before the
  clip; gradients flow into both posterior and prior (no balancing in V1).
  """
  post = distrax.MultivariateNormalDiag(post_mean, post_std)
  prior = distrax.MultivariateNormalDiag(prior_mean, prior_std)
  return jnp.maximum(free_nats, jnp.mean(post.kl_divergence(prior)))


# --------------------------------------------------------------------------- returns


def lambda_returns(rewards: jax.Array, values: jax.Array, continues: jax.Array,
                   bootstrap: jax.Array, lambda_: float = 0.95) -> jax.Array:
  """[..., H] x3 + [...] bootstrap -> [..., H] R_t = r_t + c_t*((1-lambda)*v_{t+1} + lambda*R_{t+1}), R_H = v_H (DreamerV3 sec. "Actor critic learning" / DreamerV1 eq. 6).

  Conventions (time is the LAST axis, e.g. ``[B, H]``; those of the DreamerV1 code):
    * ``rewards[..., t]`` = r_t, reward of the step s_t -> s_{t+1};
    * ``values[..., t]`` = v(s_t) for t = 0..H-1 (``values[..., 0]`` is not used);
    * ``continues[..., t]`` = c_t = gamma * P(s_{t+1} is not terminal): the DISCOUNT IS
      FOLDED IN, as DreamerV3 does with its continue flag (gamma = 0.997 = 1 - 1/333 in
      DreamerV3, 0.99 in V1/V2);
    * ``bootstrap`` = v(s_H), the value of the state after the last step.
  For an imagined trajectory of H+1 states s_0..s_H whose heads predict the reward and
  continue flag of *arriving* at a state (DreamerV3), pass ``rew[..., 1:]``,
  ``gamma * cont[..., 1:]``, ``val[..., :-1]`` and ``val[..., -1]``.
  lambda_ = 1 gives discounted Monte-Carlo returns bootstrapped with v(s_H); lambda_ = 0
  gives one-step TD targets r_t + c_t * v_{t+1}. No gradient is stopped here.
  """
  chex.assert_equal_shape([rewards, values, continues])
  chex.assert_shape(bootstrap, rewards.shape[:-1])
  next_values = jnp.concatenate([values[..., 1:], bootstrap[..., None]], axis=-1)
  inputs = rewards + continues * (1.0 - lambda_) * next_values

  def step(ret_next, xs):
    inp, cont = xs
    ret = inp + cont * lambda_ * ret_next
    return ret, ret

  time_first = (jnp.moveaxis(inputs, -1, 0), jnp.moveaxis(continues, -1, 0))
  _, returns = jax.lax.scan(step, bootstrap, time_first, reverse=True)
  return jnp.moveaxis(returns, 0, -1)


class ReturnNormState(NamedTuple):
  """EMAs of the 5th (``low``) and 95th (``high``) return percentiles, [] float32 each (DreamerV3 sec. "Actor critic learning", return normalisation).

  Actor use (DreamerV3 actor loss): ``adv = sg((R - v) / return_norm_scale(state))``.
  Under data parallelism, gather the returns of all devices before ``return_norm_update``
  so every replica keeps the same state.
  """
  low: jax.Array
  high: jax.Array


def return_norm_init() -> ReturnNormState:
  """Zero-initialised return-normaliser state, as in the DreamerV3 reference code."""
  return ReturnNormState(low=jnp.zeros((), jnp.float32), high=jnp.zeros((), jnp.float32))


def return_norm_update(state: ReturnNormState, returns: jax.Array, decay: float = 0.99,
                       low_pct: float = 5.0, high_pct: float = 95.0) -> ReturnNormState:
  """EMA (decay 0.99) of the 5th and 95th percentiles of all entries of ``returns`` [...] (DreamerV3 sec. "Actor critic learning"); returns are stop-gradiented."""
  returns = sg(returns).astype(jnp.float32)
  low = jnp.percentile(returns, low_pct)
  high = jnp.percentile(returns, high_pct)
  return ReturnNormState(low=decay * state.low + (1.0 - decay) * low,
                         high=decay * state.high + (1.0 - decay) * high)


def return_norm_scale(state: ReturnNormState) -> jax.Array:
  """[] S = max(1, high - low), the divisor of the actor's returns/advantages (DreamerV3 sec. "Actor critic learning", limit L = 1)."""
  return jnp.maximum(1.0, state.high - state.low)


# --------------------------------------------------------------------------- critic


def ema_update(slow_params, params, rate: float = 0.02):
  """Pytree slow <- (1 - rate) * slow + rate * params, the slow critic's EMA (DreamerV3 sec. "Actor critic learning": slow critic, decay 0.98 every update)."""
  return jax.tree.map(lambda s, p: (1.0 - rate) * s + rate * p, slow_params, params)


def slow_critic_loss(critic_dist, slow_mean: jax.Array, weight: float = 1.0) -> jax.Array:
  """[...] -weight * critic.log_prob(sg(slow critic's mean)): the slow-critic regulariser added to the critic's -log p(R^lambda) (DreamerV3 sec. "Actor critic learning", weight 1).

  ``critic_dist`` is any distribution with ``log_prob`` (a ``TwoHotSymlog`` for DreamerV3)
  built from the critic's logits on the same states; ``slow_mean`` is the mean of the
  critic evaluated with the ``ema_update``-tracked slow parameters.
  """
  return -weight * critic_dist.log_prob(sg(slow_mean))


# --------------------------------------------------------------------------- decoders


def image_loss(pred: jax.Array, target: jax.Array, event_dims: int = 3) -> jax.Array:
  """[..., H, W, C] x2 -> [...] sum of squared errors over the last ``event_dims`` axes, no symlog (DreamerV3 sec. "Robust predictions": images use plain MSE).

  ``target`` is the image already scaled to floats by the caller (e.g. uint8 / 255).
  """
  axes = tuple(range(-event_dims, 0))
  return jnp.sum(jnp.square(pred - target), axis=axes)


def vector_loss(pred: jax.Array, target: jax.Array, event_dims: int = 1) -> jax.Array:
  """[..., D] x2 -> [...] sum over the last ``event_dims`` axes of (pred - symlog(target))^2; ``pred`` lives in symlog space (DreamerV3 sec. "Robust predictions", symlog MSE)."""
  axes = tuple(range(-event_dims, 0))
  return jnp.sum(jnp.square(pred - symlog(target)), axis=axes)
