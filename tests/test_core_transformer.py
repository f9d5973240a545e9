"""The shared causal Transformer (wm_jax/core/transformer.py): causality, and the cached
one-token step inside lax.scan equal to the full forward pass."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.core.transformer import CausalTransformer, attend, sinusoidal_positions

B, T, D = 3, 12, 32


def make(positions="learned", max_len=16):
  net = CausalTransformer(width=D, depth=2, heads=4, max_len=max_len, positions=positions)
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  return net, net.init(jax.random.key(1), x), x


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_scan_of_cached_steps_equals_the_full_forward_pass(positions):
  net, params, x = make(positions)
  full = net.apply(params, x)

  @jax.jit
  def rollout(params, x):
    cache = net.apply(params, B, method=CausalTransformer.init_cache)
    step = lambda c, x_t: net.apply(params, c, x_t, method=CausalTransformer.step)
    cache, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
    return cache, jnp.swapaxes(ys, 0, 1)

  cache, stepped = rollout(params, x)
  chex.assert_shape(stepped, (B, T, D))
  np.testing.assert_allclose(stepped, full, atol=2e-5, rtol=2e-5)
  assert int(cache["pos"]) == T


def test_outputs_do_not_depend_on_later_tokens():
  net, params, x = make()
  changed = x.at[:, 7:].set(jax.random.normal(jax.random.key(5), (B, T - 7, D)))
  a, b = net.apply(params, x), net.apply(params, changed)
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
  assert not np.allclose(a[:, 7:], b[:, 7:])


def test_learned_positions_make_the_output_depend_on_position():
  net, params, _ = make()
  same = jnp.ones((1, T, D))
  y = net.apply(params, same)
  assert not np.allclose(y[0, 0], y[0, 5])


def test_attention_with_a_one_hot_mask_returns_that_value():
  q = jax.random.normal(jax.random.key(0), (1, 2, 1, 4))
  k = jax.random.normal(jax.random.key(1), (1, 3, 1, 4))
  v = jnp.arange(12.0).reshape(1, 3, 1, 4)
  mask = jnp.array([[False, True, False], [True, False, False]])
  out = attend(q, k, v, mask)
  np.testing.assert_allclose(out[0, 0, 0], v[0, 1, 0])
  np.testing.assert_allclose(out[0, 1, 0], v[0, 0, 0])


def test_sinusoidal_positions_follow_vaswani():
  pe = sinusoidal_positions(5, 4)
  np.testing.assert_allclose(pe[3], [np.sin(3), np.cos(3), np.sin(3 / 100), np.cos(3 / 100)],
                             rtol=1e-5)


def test_post_ln_blocks_cache_like_the_full_pass_too():
  """STORM's post-LN variant: the cached steps still equal the full pass."""
  net = CausalTransformer(width=D, depth=2, heads=4, max_len=16, pre_norm=False, mlp_ratio=2,
                          act="relu")
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  params = net.init(jax.random.key(1), x)
  cache = net.apply(params, B, method=CausalTransformer.init_cache)
  step = lambda c, x_t: net.apply(params, c, x_t, method=CausalTransformer.step)
  _, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
  np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), net.apply(params, x), atol=2e-5, rtol=2e-5)


def test_an_extra_mask_cuts_attention_across_an_episode_start():
  """With a block mask at t = 5 the outputs from 5 on ignore tokens 0..4 and equal a fresh pass."""
  net, params, x = make()
  episode = jnp.cumsum(jnp.zeros((B, T), jnp.int32).at[:, 5].set(1), 1)
  mask = episode[:, :, None] == episode[:, None, :]
  out = net.apply(params, x, mask)
  changed = x.at[:, :5].set(0.0)
  np.testing.assert_allclose(out[:, 5:], net.apply(params, changed, mask)[:, 5:], atol=1e-5)
  assert not np.allclose(out[:, 5:], net.apply(params, x)[:, 5:], atol=1e-3)


def test_cache_keep_mask_hides_positions_from_later_tokens():
  """Positions the cache does not keep are invisible: the step's output equals a cache that
  never held them (up to the positions' embeddings), i.e. a fresh pass over the kept tokens."""
  net, params, x = make()
  step = lambda c, x_t: net.apply(params, c, x_t, method=CausalTransformer.step)
  cache = net.apply(params, B, method=CausalTransformer.init_cache)
  cache["keep"] = cache["keep"].at[:, :3].set(False)
  _, ys = jax.lax.scan(step, cache, jnp.swapaxes(x[:, :6], 0, 1))
  mask = jnp.broadcast_to((jnp.arange(6) >= 3)[None, None], (B, 6, 6)) | jnp.eye(6, dtype=bool)
  full = net.apply(params, x[:, :6], mask)
  np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1)[:, 3:], full[:, 3:], atol=2e-5, rtol=2e-5)
