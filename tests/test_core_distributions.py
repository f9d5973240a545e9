"""Hand-computed checks of wm_jax.core.distributions (unimix, straight-through, twohot, Gaussians)."""

import math

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.core import distributions as D
from wm_jax.core import losses as L


def test_unimix_hand_probabilities():
  logits = jnp.array([[100.0, -100.0, -100.0, -100.0], [0.0, 0.0, 0.0, 0.0]])
  probs = jnp.exp(D.unimix_logits(logits))
  # 0.99 * (1, 0, 0, 0) + 0.01 / 4; a uniform distribution stays uniform.
  np.testing.assert_allclose(probs, [[0.9925, 0.0025, 0.0025, 0.0025], [0.25] * 4], rtol=1e-5)
  wide = jnp.exp(D.unimix_logits(30 * jax.random.normal(jax.random.key(0), (8, 32, 32))))
  assert float(wide.min()) >= 0.01 / 32 * (1 - 1e-5)
  np.testing.assert_allclose(wide.sum(-1), 1.0, rtol=1e-5)


def test_sample_onehot_st_forward_exact_and_gradient():
  logits = jax.random.normal(jax.random.key(1), (16, 32, 32))
  sample = D.sample_onehot_st(jax.random.key(2), logits)
  chex.assert_shape(sample, (16, 32, 32))
  assert set(np.unique(np.asarray(sample)).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(sample.sum(-1), 1.0)
  # Straight-through: the gradient is that of the probabilities.
  w = jax.random.normal(jax.random.key(3), (16, 32, 32))
  g = jax.grad(lambda lg: (D.sample_onehot_st(jax.random.key(2), lg) * w).sum())(logits)
  g_probs = jax.grad(lambda lg: (jax.nn.softmax(lg, -1) * w).sum())(logits)
  assert float(jnp.abs(g).max()) > 1e-3
  np.testing.assert_allclose(g, g_probs, rtol=1e-5, atol=1e-7)


def test_sample_onehot_st_frequencies():
  probs = jnp.array([0.2, 0.3, 0.5])
  logits = jnp.broadcast_to(jnp.log(probs), (4000, 3))
  freq = D.sample_onehot_st(jax.random.key(4), logits).mean(0)
  np.testing.assert_allclose(freq, probs, atol=0.03)


def test_onehot_mode():
  np.testing.assert_array_equal(D.onehot_mode(jnp.array([[0.1, 2.0, -1.0], [5.0, 0.0, 0.0]])),
                                [[0, 1, 0], [1, 0, 0]])


def test_twohot_symlog_hand_log_prob_and_mean():
  bins = jnp.array([-1.0, 0.0, 1.0, 3.0])
  logits = jnp.array([0.0, 1.0, 2.0, 3.0])
  dist = D.TwoHotSymlog(logits, bins)
  lse = 3.0 + math.log(1 + math.exp(-1) + math.exp(-2) + math.exp(-3))
  # symlog(x) = 0.5 sits halfway between bins 0 and 1 -> weights 0.5, 0.5 on logits 1 and 2.
  x = jnp.float32(math.exp(0.5) - 1.0)
  np.testing.assert_allclose(dist.log_prob(x), 0.5 * (1 - lse) + 0.5 * (2 - lse), rtol=1e-5)
  p = np.exp(np.array([0.0, 1.0, 2.0, 3.0]) - lse)
  s = float(p @ np.array([-1.0, 0.0, 1.0, 3.0]))
  expected = math.copysign(math.expm1(abs(s)), s)
  np.testing.assert_allclose(dist.mean(), expected, rtol=1e-5)
  np.testing.assert_allclose(dist.mode(), dist.mean())


def test_twohot_symlog_zero_logits_predict_zero():
  dist = D.TwoHotSymlog(jnp.zeros((3, 255)), L.twohot_bins())
  chex.assert_shape(dist.mean(), (3,))
  np.testing.assert_allclose(jax.jit(lambda d: d.mean())(dist), 0.0, atol=1e-6)


def test_twohot_symlog_round_trip():
  bins = L.twohot_bins()
  x = jnp.concatenate([jnp.linspace(-1e3, 1e3, 2001), jnp.linspace(-1.0, 1.0, 201)])
  logits = jnp.log(L.twohot_encode(L.symlog(x), bins))  # -inf off the two bins
  np.testing.assert_allclose(D.TwoHotSymlog(logits, bins).mean(), x, rtol=1e-5, atol=1e-5)


def test_twohot_symlog_log_prob_gradient_is_softmax_minus_target():
  bins = L.twohot_bins()
  logits = jax.random.normal(jax.random.key(5), (4, 255))
  x = jnp.array([0.0, 1.5, -30.0, 700.0])
  g = jax.grad(lambda lg: -D.TwoHotSymlog(lg, bins).log_prob(x).sum())(logits)
  target = L.twohot_encode(L.symlog(x), bins)
  np.testing.assert_allclose(g, jax.nn.softmax(logits, -1) - target, atol=1e-6)


def test_gaussian_latent_std_and_shapes():
  np.testing.assert_allclose(D.gaussian_std(jnp.array([0.0, -50.0])), [math.log(2) + 0.1, 0.1],
                             rtol=1e-6)
  mean = jnp.zeros((2, 5, 30))
  dist = D.gaussian_latent(mean, jnp.zeros((2, 5, 30)))
  assert isinstance(dist, distrax.MultivariateNormalDiag)
  assert dist.batch_shape == (2, 5) and dist.event_shape == (30,)
  std = math.log(2) + 0.1
  np.testing.assert_allclose(dist.stddev(), std, rtol=1e-6)
  log_density = -30 * (0.5 * math.log(2 * math.pi) + math.log(std))
  np.testing.assert_allclose(dist.log_prob(mean), log_density, rtol=1e-5)
  chex.assert_shape(dist.sample(seed=jax.random.key(6)), (2, 5, 30))


def test_bernoulli_continue_head_as_documented():
  cont = distrax.Bernoulli(logits=jnp.array([0.0, 2.0]))
  np.testing.assert_allclose(cont.log_prob(jnp.array([1.0, 0.0])),
                             [math.log(0.5), math.log(1 - 1 / (1 + math.exp(-2)))], rtol=1e-5)
  np.testing.assert_allclose(cont.mean(), [0.5, 1 / (1 + math.exp(-2))], rtol=1e-6)
