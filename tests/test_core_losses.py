"""Hand-computed checks of wm_jax.core.losses (symlog, twohot, KL terms, returns, normalisers)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.core import losses as L

BINS4 = jnp.array([-1.0, 0.0, 1.0, 3.0])  # small uneven bins for hand-computed twohot weights.


def _logits(probs):
  return jnp.log(jnp.asarray(probs, jnp.float32))


# --------------------------------------------------------------------------- symlog, twohot


def test_symlog_symexp_hand_values():
  x = jnp.array([0.0, 1.0, -1.0, math.e - 1.0, -10.0])
  np.testing.assert_allclose(L.symlog(x), [0.0, math.log(2), -math.log(2), 1.0, -math.log(11)],
                             rtol=1e-6)
  np.testing.assert_allclose(L.symexp(jnp.array([1.0, -math.log(11)])), [math.e - 1.0, -10.0],
                             rtol=1e-6)


def test_symexp_inverts_symlog():
  x = jnp.concatenate([jnp.linspace(-1e6, 1e6, 1001), jnp.linspace(-2.0, 2.0, 101)])
  np.testing.assert_allclose(L.symexp(L.symlog(x)), x, rtol=1e-5, atol=1e-6)


def test_twohot_bins_default():
  bins = L.twohot_bins()
  chex.assert_shape(bins, (255,))
  assert bins[0] == -20.0 and bins[-1] == 20.0 and bins[127] == 0.0
  np.testing.assert_allclose(jnp.diff(bins), 40.0 / 254, rtol=1e-4)
  np.testing.assert_array_equal(bins, -bins[::-1])


@pytest.mark.parametrize("y, weights", [
    (0.5, [0, 0.5, 0.5, 0]),      # halfway between bins 1 and 2
    (-0.25, [0.25, 0.75, 0, 0]),  # a quarter of the way from bin 1 to bin 0
    (2.5, [0, 0, 0.25, 0.75]),    # uneven spacing: (3 - 2.5) / 2 on bin 2
    (0.0, [0, 1, 0, 0]),          # exactly on a bin
    (3.0, [0, 0, 0, 1]),          # exactly on the last bin
    (-1.0, [1, 0, 0, 0]),         # exactly on the first bin
    (-5.0, [1, 0, 0, 0]),         # below range: clipped
    (10.0, [0, 0, 0, 1]),         # above range: clipped
])
def test_twohot_encode_hand_weights(y, weights):
  np.testing.assert_allclose(L.twohot_encode(jnp.float32(y), BINS4), weights, atol=1e-7)


def test_twohot_encode_batched_sums_to_one_and_decodes():
  bins = L.twohot_bins()
  y = jax.random.uniform(jax.random.key(0), (3, 5), minval=-25.0, maxval=25.0)
  enc = L.twohot_encode(y, bins)
  chex.assert_shape(enc, (3, 5, 255))
  np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
  assert int((enc > 0).sum(-1).max()) <= 2
  np.testing.assert_allclose((enc * bins).sum(-1), jnp.clip(y, -20.0, 20.0), atol=1e-5)
  zero = L.twohot_encode(jnp.float32(0.0), bins)
  assert zero[127] == 1.0 and zero.sum() == 1.0


# --------------------------------------------------------------------------- KL terms


def test_kl_categorical_hand_two_classes():
  post, prior = _logits([[0.25, 0.75]]), _logits([[0.5, 0.5]])  # one group, two classes
  expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
  np.testing.assert_allclose(L.kl_categorical(post, prior), expected, rtol=1e-6)
  # A second, identical group doubles the sum; extra leading axes stay.
  two = jnp.broadcast_to(jnp.concatenate([post, post]), (4, 3, 2, 2))
  prior2 = jnp.broadcast_to(jnp.concatenate([prior, prior]), (4, 3, 2, 2))
  kl = L.kl_categorical(two, prior2)
  chex.assert_shape(kl, (4, 3))
  np.testing.assert_allclose(kl, 2 * expected, rtol=1e-6)


def test_dreamerv3_kl_free_bits_clip():
  logits = jax.random.normal(jax.random.key(1), (2, 3, 4, 5))
  near = logits + 1e-3  # KL far below 1 nat
  loss, dyn, rep = L.dreamerv3_kl_loss(logits, near)
  chex.assert_shape([loss, dyn, rep], (2, 3))
  np.testing.assert_allclose(dyn, 1.0)
  np.testing.assert_allclose(rep, 1.0)
  np.testing.assert_allclose(loss, 0.5 + 0.1, rtol=1e-6)
  grads = jax.grad(lambda p, q: L.dreamerv3_kl_loss(p, q)[0].sum(), argnums=(0, 1))(logits, near)
  for g in grads:  # clipped terms are constant: no gradient
    np.testing.assert_array_equal(g, 0.0)


def test_dreamerv3_kl_gradient_routing():
  k1, k2 = jax.random.split(jax.random.key(2))
  post = 3 * jax.random.normal(k1, (2, 4, 5))
  prior = 3 * jax.random.normal(k2, (2, 4, 5))

  def term(i):
    return lambda p, q: L.dreamerv3_kl_loss(p, q, free_bits=0.0)[i].sum()

  dyn_post, dyn_prior = jax.grad(term(1), argnums=(0, 1))(post, prior)
  rep_post, rep_prior = jax.grad(term(2), argnums=(0, 1))(post, prior)
  np.testing.assert_array_equal(dyn_post, 0.0)   # dyn trains the prior only
  assert jnp.abs(dyn_prior).max() > 1e-3
  np.testing.assert_array_equal(rep_prior, 0.0)  # rep trains the posterior only
  assert jnp.abs(rep_post).max() > 1e-3
  # The total carries beta_dyn = 0.5 on the prior side and beta_rep = 0.1 on the posterior side.
  tot_post, tot_prior = jax.grad(term(0), argnums=(0, 1))(post, prior)
  np.testing.assert_allclose(tot_prior, 0.5 * dyn_prior, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(tot_post, 0.1 * rep_post, rtol=1e-5, atol=1e-7)
  loss, dyn, rep = L.dreamerv3_kl_loss(post, prior, free_bits=0.0)
  np.testing.assert_allclose(dyn, L.kl_categorical(post, prior), rtol=1e-6)
  np.testing.assert_allclose(loss, 0.6 * dyn, rtol=1e-6)


def test_dreamerv2_kl_balancing_weights():
  k1, k2 = jax.random.split(jax.random.key(3))
  post = 2 * jax.random.normal(k1, (3, 2, 4, 6))
  prior = 2 * jax.random.normal(k2, (3, 2, 4, 6))
  mean_kl = lambda p, q: L.kl_categorical(p, q).mean()
  loss = L.dreamerv2_kl_loss(post, prior)
  chex.assert_shape(loss, ())
  np.testing.assert_allclose(loss, mean_kl(post, prior), rtol=1e-6)
  g_post, g_prior = jax.grad(L.dreamerv2_kl_loss, argnums=(0, 1))(post, prior, 0.8)
  kl_post, kl_prior = jax.grad(mean_kl, argnums=(0, 1))(post, prior)
  np.testing.assert_allclose(g_prior, 0.8 * kl_prior, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_post, 0.2 * kl_post, rtol=1e-5, atol=1e-7)
  # Free nats above the mean KL: constant loss.
  np.testing.assert_allclose(L.dreamerv2_kl_loss(post, prior, free_nats=1e3), 1e3)


def test_gaussian_kl_hand_value_and_free_nats():
  zeros, ones = jnp.zeros((3,)), jnp.ones((3,))
  # Per dim: log(2/1) + (1 + (0-1)^2) / (2 * 2^2) - 1/2; three dims.
  per_dim = math.log(2.0) + 2.0 / 8.0 - 0.5
  kl = L.gaussian_kl_loss(zeros, ones, ones, 2 * ones, free_nats=0.0)
  np.testing.assert_allclose(kl, 3 * per_dim, rtol=1e-6)
  np.testing.assert_allclose(L.gaussian_kl_loss(zeros, ones, ones, 2 * ones), 3.0)  # V1 default
  # Two batch entries (KL 0 and 3*per_dim): averaged first, then clipped (DreamerV1 code).
  pm = jnp.stack([zeros, zeros])
  ps = jnp.stack([ones, ones])
  qm = jnp.stack([zeros, ones])
  qs = jnp.stack([ones, 2 * ones])
  np.testing.assert_allclose(L.gaussian_kl_loss(pm, ps, qm, qs, free_nats=0.5), 1.5 * per_dim,
                             rtol=1e-6)


# --------------------------------------------------------------------------- returns


REW = jnp.array([1.0, 2.0, 3.0])
VAL = jnp.array([10.0, 20.0, 30.0])  # v(s_0) is unused
CONT = jnp.array([0.9, 0.5, 0.8])    # gamma already folded in
BOOT = jnp.array(40.0)


@pytest.mark.parametrize("lam, expected", [
    # lambda = 1, Monte Carlo: R2 = 3 + .8*40 = 35, R1 = 2 + .5*35 = 19.5, R0 = 1 + .9*19.5
    (1.0, [18.55, 19.5, 35.0]),
    # lambda = 0, one-step TD: R_t = r_t + c_t * v_{t+1}
    (0.0, [1 + 0.9 * 20, 2 + 0.5 * 30, 3 + 0.8 * 40]),
    # lambda = .5: R1 = 2 + .5*(.5*30 + .5*35) = 18.25, R0 = 1 + .9*(.5*20 + .5*18.25) = 18.2125
    (0.5, [18.2125, 18.25, 35.0]),
])
def test_lambda_returns_hand_three_steps(lam, expected):
  ret = L.lambda_returns(REW, VAL, CONT, BOOT, lambda_=lam)
  np.testing.assert_allclose(ret, expected, rtol=1e-6)


def test_lambda_returns_batched_time_last_and_jit():
  rew = jnp.stack([REW, REW])
  val = jnp.stack([VAL, VAL])
  cont = jnp.stack([CONT, jnp.zeros(3)])  # second row: every step terminal -> R = r
  boot = jnp.array([40.0, 99.0])
  ret = jax.jit(L.lambda_returns)(rew, val, cont, boot, 0.5)
  chex.assert_shape(ret, (2, 3))
  np.testing.assert_allclose(ret, [[18.2125, 18.25, 35.0], REW], rtol=1e-6)


def test_return_normaliser_ema_hand():
  state = L.return_norm_init()
  ret = jnp.arange(101.0)  # 5th percentile 5, 95th 95
  state = L.return_norm_update(state, ret)
  np.testing.assert_allclose(state, [0.01 * 5, 0.01 * 95], rtol=1e-6)
  np.testing.assert_allclose(L.return_norm_scale(state), 1.0)  # range 0.9 < 1
  state = jax.jit(L.return_norm_update)(state, 10 * ret.reshape(1, 101))
  low, high = 0.99 * 0.05 + 0.01 * 50, 0.99 * 0.95 + 0.01 * 950
  np.testing.assert_allclose(state, [low, high], rtol=1e-6)
  np.testing.assert_allclose(L.return_norm_scale(state), high - low, rtol=1e-6)
  half = L.return_norm_update(L.return_norm_init(), ret, decay=0.5)
  np.testing.assert_allclose(half, [2.5, 47.5], rtol=1e-6)


# --------------------------------------------------------------------------- critic


def test_ema_update_hand():
  slow = {"a": jnp.array(1.0), "b": jnp.array([0.0, 2.0])}
  fast = {"a": jnp.array(2.0), "b": jnp.array([1.0, 0.0])}
  new = L.ema_update(slow, fast)
  np.testing.assert_allclose(new["a"], 1.02, rtol=1e-6)
  np.testing.assert_allclose(new["b"], [0.02, 1.96], rtol=1e-6)


def test_slow_critic_loss_is_scaled_negative_log_prob_without_target_gradient():
  from wm_jax.core.distributions import TwoHotSymlog
  bins = L.twohot_bins()
  logits = jax.random.normal(jax.random.key(4), (2, 255))
  slow_mean = jnp.array([1.0, -3.0])
  dist = TwoHotSymlog(logits, bins)
  np.testing.assert_allclose(L.slow_critic_loss(dist, slow_mean), -dist.log_prob(slow_mean))
  np.testing.assert_allclose(L.slow_critic_loss(dist, slow_mean, 0.5),
                             -0.5 * dist.log_prob(slow_mean), rtol=1e-6)
  g = jax.grad(lambda m: L.slow_critic_loss(dist, m).sum())(slow_mean)
  np.testing.assert_array_equal(g, 0.0)


# --------------------------------------------------------------------------- decoders


def test_image_loss_sums_pixels_without_symlog():
  pred = jnp.zeros((2, 5, 4, 4, 3))
  target = jnp.full((2, 5, 4, 4, 3), 0.5)
  loss = L.image_loss(pred, target)
  chex.assert_shape(loss, (2, 5))
  np.testing.assert_allclose(loss, 48 * 0.25)


def test_vector_loss_symlog_mse():
  pred = jnp.array([[0.0, math.log(2)], [1.0, 0.0]])
  target = jnp.array([[0.0, 1.0], [math.e - 1.0, -1.0]])
  np.testing.assert_allclose(L.vector_loss(pred, target), [0.0, math.log(2) ** 2], atol=1e-6)
