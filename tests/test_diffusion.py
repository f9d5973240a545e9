"""EDM machinery (wm_jax/core/edm.py) and the DIAMOND / DWM denoiser networks (wm_jax/models/diffusion.py)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wm_jax.core import edm
from wm_jax.core.transformer import attend
from wm_jax.errors import RunConfigError
from wm_jax.models.diffusion import (CrossAttention2d, DenoiserNetConfig, attend_per_pixel,
                                     make_denoiser_net)

# ------------------------------------------------------------------------------ preconditioning


@pytest.mark.parametrize("sigma, c_skip, c_out, c_in, c_noise", [
    # sigma_data = 0.5: c_skip = 0.25 / (s^2 + 0.25), c_out = 0.5 s / sqrt(s^2 + 0.25),
    # c_in = 1 / sqrt(s^2 + 0.25), c_noise = ln(s) / 4.
    (0.5, 0.5, 0.35355339, 1.41421356, -0.17328680),     # 0.5 sqrt(0.5); 1 / sqrt(0.5); ln(.5)/4
    (1.0, 0.2, 0.44721360, 0.89442719, 0.0),             # sqrt(0.2); 1 / sqrt(1.25)
    (2.0, 0.05882353, 0.48507125, 0.48507125, 0.17328680),  # 1/17; 1 / sqrt(4.25) twice
])
def test_preconditioners_match_hand_computed_values(sigma, c_skip, c_out, c_in, c_noise):
  got = edm.preconditioners(jnp.array([sigma]), 0.5)
  np.testing.assert_allclose(np.concatenate(got), [c_skip, c_out, c_in, c_noise], rtol=1e-6,
                             atol=1e-7)


def test_preconditioners_at_vanishing_noise_pass_the_input_through():
  c_skip, c_out, _, _ = edm.preconditioners(jnp.array([1e-6]), 0.5)
  np.testing.assert_allclose(c_skip, 1.0, rtol=1e-6)
  np.testing.assert_allclose(c_out, 0.0, atol=2e-6)


def test_conditioners_see_the_offset_noise_in_the_total_noise_std():
  cfg = edm.EDMConfig(sigma_offset_noise=0.3)
  np.testing.assert_allclose(np.concatenate(edm.conditioners(jnp.array([0.4]), cfg)),
                             np.concatenate(edm.preconditioners(jnp.array([0.5]), 0.5)), rtol=1e-6)


def test_training_sigmas_are_clipped_log_normal():
  cfg = edm.EDMConfig()
  sigma = np.asarray(edm.sample_training_sigma(jax.random.key(0), (100_000,), cfg))
  assert sigma.min() >= cfg.sigma_min_train and sigma.max() <= cfg.sigma_max_train
  assert abs(np.median(np.log(sigma)) - cfg.loc) < 0.02
  assert abs(np.log(sigma).std() - cfg.scale) < 0.03


def test_add_noise_offsets_each_image_and_channel_by_one_value():
  clean = jnp.zeros((4096, 4, 4, 3))
  offset = edm.add_noise(jax.random.key(0), clean, jnp.zeros(4096), edm.EDMConfig())
  np.testing.assert_allclose(offset, jnp.broadcast_to(offset[:, :1, :1], offset.shape))
  assert abs(float(offset[:, 0, 0].std()) - 0.3) < 0.01
  noise = edm.add_noise(jax.random.key(1), clean, jnp.full(4096, 2.0),
                        edm.EDMConfig(sigma_offset_noise=0.0))
  assert abs(float(noise.std()) - 2.0) < 0.02


# ------------------------------------------------------------------------------ denoiser and loss


def _target_network(clean, cfg):
  """F that outputs the EDM network target (clean - c_skip x) / c_out, reading sigma back from c_noise."""
  def F(scaled, c_noise):
    c_skip, c_out, c_in, _ = edm.preconditioners(jnp.exp(4 * c_noise), cfg.sigma_data)
    col = lambda c: c[:, None, None, None]
    return (clean - col(c_skip) * scaled / col(c_in)) / col(c_out)
  return F


def test_denoiser_returns_clean_when_the_network_outputs_the_target():
  cfg = edm.EDMConfig()
  clean = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3), minval=-1, maxval=1)
  sigma = jnp.array([0.01, 1.0, 15.0])
  noisy = edm.add_noise(jax.random.key(1), clean, sigma, cfg)
  np.testing.assert_allclose(edm.denoise(_target_network(clean, cfg), noisy, sigma, cfg), clean,
                             atol=1e-5)


def test_denoising_loss_vanishes_only_at_the_target():
  cfg = edm.EDMConfig()
  clean = jax.random.uniform(jax.random.key(0), (16, 8, 8, 3), minval=-1, maxval=1)
  F = _target_network(clean, cfg)
  loss, (metrics, denoised) = edm.denoising_loss(F, clean, jax.random.key(1), cfg)
  assert float(loss) < 1e-9 and metrics["loss_denoising"] == loss
  np.testing.assert_allclose(denoised, clean, atol=1e-5)
  off, _ = edm.denoising_loss(lambda x, c: F(x, c) + 0.1, clean, jax.random.key(1), cfg)
  np.testing.assert_allclose(off, 0.01, rtol=1e-4)
  half = jnp.arange(16) < 8
  worse_on_second_half = lambda x, c: F(x, c) + jnp.where(half, 0.1, 0.2)[:, None, None, None]
  masked, _ = edm.denoising_loss(worse_on_second_half, clean, jax.random.key(1), cfg, mask=half)
  np.testing.assert_allclose(masked, 0.01, rtol=1e-4)


def test_quantize_frame_snaps_down_to_the_uint8_grid():
  x = jnp.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
  levels = np.array([0, 0, 127, 254, 255, 255])          # floor((x + 1) / 2 * 255), clipped
  np.testing.assert_allclose(edm.quantize_frame(x), levels / 255 * 2 - 1, atol=1e-6)


# ------------------------------------------------------------------------------ samplers


def test_karras_sigmas_descend_from_sigma_max_to_sigma_min_then_zero():
  cfg = edm.SamplerConfig()                      # DIAMOND: 3 steps, 5.0 -> 2e-3, rho 7
  sigmas = np.asarray(edm.karras_sigmas(cfg))
  assert sigmas.shape == (cfg.num_steps + 1,)
  np.testing.assert_allclose(sigmas, [5.0, 0.28308191, 2e-3, 0.0], rtol=1e-5)  # middle: eq. 5
  assert np.all(np.diff(sigmas) < 0)
  long = np.asarray(edm.karras_sigmas(edm.SamplerConfig(num_steps=40, sigma_max=80.0)))
  assert len(long) == 41 and np.all(np.diff(long) < 0) and long[-1] == 0.0
  np.testing.assert_allclose(long[[0, -2]], [80.0, 2e-3], rtol=1e-5)


# Toy data y ~ N(MU, S^2): the ideal denoiser is D*(x, sigma) = MU + S^2 / (S^2 + sigma^2) (x - MU),
# and the probability-flow ODE maps x_0 ~ N(0, sigma_max^2) exactly to
# MU + S / sqrt(S^2 + sigma_max^2) (x_0 - MU), whose moments are computed below (with
# sigma_max = 80 they are within 0.5% of the data's). 2048 x 4 samples: the standard error is
# 0.004 on the mean and 0.8% on the std; the tolerances (0.03, 3%) leave room for the
# discretisation error of each sampler (it scales x_0 - MU by 0.989 for Euler with 256 steps,
# by 1.004 for Heun with 64, by 1.016 for Heun with 32).
MU, S, SIGMA_MAX = 0.7, 0.5, 80.0


def _ideal_denoiser(x, sigma):
  return MU + S**2 / (S**2 + sigma[:, None]**2) * (x - MU)


@pytest.mark.parametrize("cfg", [
    edm.SamplerConfig(num_steps=256, sigma_max=SIGMA_MAX, order=1),
    edm.SamplerConfig(num_steps=64, sigma_max=SIGMA_MAX, order=2),
    edm.SamplerConfig(num_steps=64, sigma_max=SIGMA_MAX, order=2, s_churn=20.0, s_tmin=0.05,
                      s_tmax=50.0),
], ids=["euler-256", "heun-64", "heun-64-churn"])
def test_samplers_reproduce_a_gaussian_with_the_ideal_denoiser(cfg):
  x = jax.jit(lambda key: edm.sample(_ideal_denoiser, key, (2048, 4), cfg))(jax.random.key(0))
  shrink = S / math.sqrt(S**2 + SIGMA_MAX**2)
  mean, std = MU * (1 - shrink), shrink * SIGMA_MAX
  assert x.shape == (2048, 4) and x.dtype == jnp.float32
  assert abs(float(x.mean()) - mean) < 0.03, float(x.mean())
  assert abs(float(x.std()) / std - 1) < 0.03, float(x.std())


def test_one_euler_step_returns_the_denoised_start():
  cfg = edm.SamplerConfig(num_steps=1, init_sigma=1.0)      # DIAMOND's code starts at std 1
  x = edm.sample(_ideal_denoiser, jax.random.key(0), (8, 2), cfg)
  x0 = jax.random.normal(jax.random.split(jax.random.key(0))[0], (8, 2))
  np.testing.assert_allclose(x, _ideal_denoiser(x0, jnp.full(8, cfg.sigma_max)), rtol=1e-5,
                             atol=1e-6)


def test_sampler_config_refuses_unknown_order():
  with pytest.raises(RunConfigError, match="use 1 \\(Euler\\) or 2 \\(Heun\\)"):
    edm.SamplerConfig(order=3)


# ------------------------------------------------------------------------------ guidance, dropout


def test_cfg_combine():
  cond = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  uncond = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  np.testing.assert_array_equal(edm.cfg_combine(cond, uncond, 0.0), cond)
  np.testing.assert_allclose(edm.cfg_combine(cond, uncond, 1.0), 2 * cond - uncond, rtol=1e-6)


def test_drop_conditioning_rate():
  keep = np.asarray(edm.drop_conditioning(jax.random.key(0), (100_000,), 0.2))
  assert keep.dtype == bool and abs((~keep).mean() - 0.2) < 0.01
  assert edm.drop_conditioning(jax.random.key(0), (1000,), 0.0).all()


# ------------------------------------------------------------------------------ denoiser networks

TINY = dict(channels=[8, 8], depths=[1, 1], attn_depths=[0, 0], cond_channels=32,
            cross_attn_depths=[0, 1], history_channels=[8, 8], history_depths=[1, 1])
B, H, NUM_ACTIONS = 2, 4, 5


def _inputs(key, size):
  k = jax.random.split(key, 4)
  return (jax.random.normal(k[0], (B, size, size, 3)), jax.random.normal(k[1], (B,)),
          jax.random.uniform(k[2], (B, H, size, size, 3), minval=-1, maxval=1),
          jax.random.randint(k[3], (B, H), 0, NUM_ACTIONS))


ARCHITECTURE_CASES = {
    "frame_stack": dict(architecture="frame_stack"),
    "cross_attention": dict(architecture="cross_attention"),
    "cross_attention_per_pixel": dict(architecture="cross_attention",
                                      per_pixel_cross_attn_depths=[1, 0]),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURE_CASES))
def tiny(request):
  """(config, fp32 net, params): one init per architecture (params are fp32 for every dtype)."""
  cfg = ml_collections.ConfigDict(dict(TINY, **ARCHITECTURE_CASES[request.param]))
  net = make_denoiser_net(cfg, NUM_ACTIONS, jnp.float32)
  params = jax.jit(net.init)(jax.random.key(0), *_inputs(jax.random.key(1), 16))
  return cfg, net, params


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_networks_map_64x64_frames_to_float32_under_jit(tiny, dtype):
  cfg, _, params = tiny
  net = make_denoiser_net(cfg, NUM_ACTIONS, dtype)
  out = jax.jit(net.apply)(params, *_inputs(jax.random.key(2), 64))
  assert out.shape == (B, 64, 64, 3) and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all()


def test_dropped_conditioning_is_ignored_and_kept_conditioning_is_used(tiny):
  _, net, params = tiny
  rng = np.random.default_rng(0)    # off the zero init of the output and residual convs
  params = jax.tree.map(lambda p: np.asarray(p) + rng.normal(0, 0.2, p.shape).astype(np.float32),
                        params)
  apply = jax.jit(net.apply)
  noisy, c_noise, frames, actions = _inputs(jax.random.key(3), 16)
  other_frames, other_actions = -frames, (actions + 1) % NUM_ACTIONS
  mixed = jnp.array([True, False])                 # example 0 keeps, example 1 drops
  every = jnp.ones(B, bool)
  base = np.asarray(apply(params, noisy, c_noise, frames, actions, every, mixed))
  new_act = np.asarray(apply(params, noisy, c_noise, frames, other_actions, every, mixed))
  assert np.abs(new_act[0] - base[0]).max() > 1e-3
  np.testing.assert_array_equal(new_act[1], base[1])
  base = np.asarray(apply(params, noisy, c_noise, frames, actions, mixed, every))
  new_obs = np.asarray(apply(params, noisy, c_noise, other_frames, actions, mixed, every))
  assert np.abs(new_obs[0] - base[0]).max() > 1e-3
  np.testing.assert_array_equal(new_obs[1], base[1])


def test_unknown_architecture_is_refused_with_one_sentence():
  with pytest.raises(RunConfigError, match="architecture='x' is unknown: use 'frame_stack' or "
                                           "'cross_attention'"):
    make_denoiser_net(ml_collections.ConfigDict(dict(TINY, architecture="x")), NUM_ACTIONS)


def test_per_pixel_attention_is_full_attention_masked_to_the_same_pixel():
  b, t, h, w, n, d = 2, 3, 4, 5, 2, 8
  k = jax.random.split(jax.random.key(4), 3)
  q = jax.random.normal(k[0], (b, h, w, n, d))
  keys, values = (jax.random.normal(key, (b, t, h, w, n, d)) for key in k[1:])
  pixel = np.arange(h * w)
  same_pixel = pixel[:, None] == np.tile(pixel, t)[None]          # [h w, t h w]
  full = attend(q.reshape(b, h * w, n, d), keys.reshape(b, t * h * w, n, d),
                values.reshape(b, t * h * w, n, d), jnp.asarray(same_pixel))
  np.testing.assert_allclose(attend_per_pixel(q, keys, values), full.reshape(b, h, w, n, d),
                             rtol=1e-5, atol=1e-5)


def test_per_pixel_cross_attention_reads_the_history_at_its_own_pixel_only():
  layer = CrossAttention2d(per_pixel=True)
  x = jax.random.normal(jax.random.key(5), (1, 6, 6, 16))
  ctx = jax.random.normal(jax.random.key(6), (1, H, 6, 6, 8))
  params = layer.init(jax.random.key(7), x, ctx)
  rng = np.random.default_rng(1)    # off the zero init of the output projection
  params = jax.tree.map(lambda p: np.asarray(p) + rng.normal(0, 0.2, p.shape).astype(np.float32),
                        params)
  bump = jax.random.normal(jax.random.key(8), (1, H, 8))
  moved = np.asarray(layer.apply(params, x, ctx.at[:, :, 2, 3].add(bump))
                     - layer.apply(params, x, ctx))
  changed = np.abs(moved).max(-1) > 1e-4
  assert changed[0, 2, 3] and changed.sum() == 1


def test_a_level_with_both_kinds_of_cross_attention_is_refused():
  cfg = ml_collections.ConfigDict(dict(TINY, architecture="cross_attention",
                                       per_pixel_cross_attn_depths=[0, 1]))
  with pytest.raises(RunConfigError, match="give each level at most one kind"):
    make_denoiser_net(cfg, NUM_ACTIONS)


def test_default_sizes_are_diamonds():
  cfg = DenoiserNetConfig()
  assert (cfg.channels, cfg.depths, cfg.cond_channels, cfg.num_cond_frames) == (
      (64, 64, 64, 64), (2, 2, 2, 2), 256, 4)
  assert not any(cfg.attn_depths)
