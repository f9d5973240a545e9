"""Distributions shared by the RSSM family (DreamerV1, V2, V3).

Defaults follow DreamerV3 (Hafner et al. 2023, arXiv:2301.04104 v1) unless a function is
named after an older paper (DreamerV1: arXiv:1912.01603, DreamerV2: arXiv:2010.02193).

* Categorical latents (V2/V3): logits ``[..., G, C]``; ``unimix_logits`` then
  ``sample_onehot_st`` (training/imagination) or ``onehot_mode`` (greedy).
* Reward and critic heads (V3): ``TwoHotSymlog(logits, twohot_bins())``.
* Gaussian latents (V1): ``gaussian_latent(mean, raw_std)``, a ``distrax.MultivariateNormalDiag``.
* Continue head (V2/V3): use ``distrax.Bernoulli(logits=logits)`` directly; its loss is
  ``-log_prob(cont)`` with ``cont = 1 - terminal`` as float, its ``mean()`` the continue
  probability that is multiplied by gamma before ``lambda_returns``.
"""

import distrax
import flax.struct
import jax
import jax.numpy as jnp

from wm_jax.core.losses import symexp, symlog, twohot_encode

sg = jax.lax.stop_gradient


def unimix_logits(logits: jax.Array, unimix: float = 0.01) -> jax.Array:
  """[..., C] logits -> [..., C] log-probs of (1 - unimix) * softmax(logits) + unimix / C (DreamerV3 sec. "World model learning": 1% uniform mixture)."""
  probs = jax.nn.softmax(logits, axis=-1)
  probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
  return jnp.log(probs)


def sample_onehot_st(key: jax.Array, logits: jax.Array) -> jax.Array:
  """[..., C] logits -> [..., C] one-hot sample whose gradient is that of softmax(logits) (DreamerV2 Algorithm 1, straight-through; Bengio et al. 2013)."""
  num = logits.shape[-1]
  sample = jax.nn.one_hot(jax.random.categorical(key, logits, axis=-1), num, dtype=logits.dtype)
  probs = jax.nn.softmax(logits, axis=-1)
  return sample + (probs - sg(probs))  # the bracket is exactly 0, so the value stays one-hot.


def onehot_mode(logits: jax.Array) -> jax.Array:
  """[..., C] logits -> [..., C] one-hot of the most likely class (greedy latent / action), no gradient."""
  return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)


@flax.struct.dataclass
class TwoHotSymlog:
  """Categorical over [K] symlog-space ``bins`` with [..., K] ``logits``, read as a real number (DreamerV3 sec. "Robust predictions": twohot symlog reward and critic heads).

  A pytree, so it passes through ``jit``/``vmap``. Use ``twohot_bins()`` for ``bins``.
  """
  logits: jax.Array
  bins: jax.Array

  def mean(self) -> jax.Array:
    """[...] symexp(sum_k softmax(logits)_k * bins_k), the expected value mapped back from symlog space."""
    probs = jax.nn.softmax(self.logits, axis=-1)
    return symexp(jnp.sum(probs * self.bins, axis=-1))

  def mode(self) -> jax.Array:
    """[...] same as ``mean()``, as in DreamerV3 (the expectation is the point prediction)."""
    return self.mean()

  def log_prob(self, x: jax.Array) -> jax.Array:
    """[...] real targets -> [...] sum_k twohot(symlog(x))_k * log_softmax(logits)_k; the target is stop-gradiented."""
    target = sg(twohot_encode(symlog(x), self.bins))
    return jnp.sum(target * jax.nn.log_softmax(self.logits, axis=-1), axis=-1)


def gaussian_std(raw_std: jax.Array, min_std: float = 0.1) -> jax.Array:
  """[..., D] raw network outputs -> [..., D] std = softplus(raw) + min_std (DreamerV1 RSSM, min_std = 0.1)."""
  return jax.nn.softplus(raw_std) + min_std


def gaussian_latent(mean: jax.Array, raw_std: jax.Array,
                    min_std: float = 0.1) -> distrax.MultivariateNormalDiag:
  """[..., D] mean and raw std -> diagonal Gaussian latent over D dims with std = softplus(raw) + min_std (DreamerV1 RSSM); ``.sample(seed=key)`` is reparameterised."""
  return distrax.MultivariateNormalDiag(mean, gaussian_std(raw_std, min_std))
