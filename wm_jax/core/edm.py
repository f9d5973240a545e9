"""EDM diffusion machinery shared by DIAMOND and DWM: preconditioning, training noise, loss, samplers, CFG.

Karras et al. 2022 ("Elucidating the design space of diffusion-based generative models",
arXiv:2206.00364; "Karras" below): Table 1 (preconditioning, training noise), eq. 5 (the
sampling schedule), Algorithms 1-2 (Heun sampler, deterministic and with stochastic churn; the
Euler sampler drops its 2nd-order correction). As used by DIAMOND (Alonso et al. 2024,
arXiv:2405.12399, sec. 2-3 and App.; its code src/models/diffusion/denoiser.py and
diffusion_sampler.py) and DWM ("Diffusion world models", anonymous, under double-blind review;
sec. 4.1-4.2, eq. 1-4).

Images are [B, H, W, C] (NHWC) in [-1, 1]; a noise level sigma is one value per example, [B].
A network F maps (c_in * noisy [B, H, W, C], c_noise [B]) -> [B, H, W, C]; everything it
conditions on (previous frames, actions, dropout masks) is closed over by the caller.

DIAMOND's noising adds "offset noise" (one value per image and channel, std 0.3) on top of
sigma * eps, and its conditioners see the total noise std sqrt(sigma^2 + 0.3^2) (Denoiser.
compute_conditioners); `conditioners` does the same, so EDMConfig(sigma_offset_noise=0) is plain
Karras.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from wm_jax.errors import RunConfigError

sg = jax.lax.stop_gradient
# F(c_in * x [B, ...], c_noise [B]) -> [B, ...]: the network of DWM eq. 2.
Network = Callable[[jax.Array, jax.Array], jax.Array]
# D(x [B, ...], sigma [B]) -> denoised [B, ...]: what the sampler integrates with.
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class EDMConfig:
  """Preconditioning and training-noise settings; defaults are DIAMOND's (config/agent/default.yaml denoiser; config/trainer.yaml denoiser.sigma_distribution)."""
  sigma_data: float = 0.5            # data std used by the preconditioners (Karras Table 1)
  sigma_offset_noise: float = 0.3    # std of the per-image, per-channel offset noise (DIAMOND)
  loc: float = -0.4                  # P_mean: log sigma ~ N(loc, scale^2) (Karras Table 1: -1.2)
  scale: float = 1.2                 # P_std (Karras Table 1: 1.2)
  sigma_min_train: float = 2e-3      # training sigmas are clipped to [min, max] (DIAMOND)
  sigma_max_train: float = 20.0


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Sampler settings; defaults are DIAMOND's Atari ones (config/trainer.yaml world_model_env.diffusion_sampler: 3 Euler steps)."""
  num_steps: int = 3                 # N: denoiser steps, N + 1 sigmas ending with 0
  sigma_min: float = 2e-3
  sigma_max: float = 5.0
  rho: float = 7.0                   # Karras eq. 5
  order: int = 1                     # 1 = Euler, 2 = Heun (Karras Alg. 1-2)
  s_churn: float = 0.0               # stochasticity of Alg. 2; 0 = deterministic ODE sampler
  s_tmin: float = 0.0                # churn only where s_tmin <= sigma <= s_tmax
  s_tmax: float = math.inf
  s_noise: float = 1.0               # std multiplier of the churn noise
  # Std of the starting noise x_0; None = sigma_max, Karras Alg. 1-2 (x_0 ~ N(0, sigma_max^2 I)).
  # DIAMOND's code starts from torch.randn, i.e. 1.0: set it to reproduce that exactly.
  init_sigma: float | None = None

  def __post_init__(self):
    if self.order not in (1, 2):
      raise RunConfigError(f"sampler order={self.order} is unknown: use 1 (Euler) or 2 (Heun).")
    if self.num_steps < 1:
      raise RunConfigError(f"sampler num_steps={self.num_steps} must be at least 1.")
    if not 0 < self.sigma_min < self.sigma_max:
      raise RunConfigError(f"sampler sigmas must satisfy 0 < sigma_min < sigma_max, got "
                           f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}.")


def preconditioners(sigma: jax.Array, sigma_data: float):
  """sigma [...] -> (c_skip, c_out, c_in, c_noise), each [...] (Karras Table 1; DWM eq. 2):
  c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2) (= sigma sqrt(c_skip)),
  c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = log(sigma) / 4, with sd = sigma_data."""
  sigma = jnp.asarray(sigma, jnp.float32)
  total = sigma**2 + sigma_data**2
  c_skip = sigma_data**2 / total
  return c_skip, sigma * jnp.sqrt(c_skip), jax.lax.rsqrt(total), jnp.log(sigma) / 4


def conditioners(sigma: jax.Array, cfg: EDMConfig):
  """sigma [B] -> (c_skip, c_out, c_in, c_noise) [B] at the total noise std
  sqrt(sigma^2 + sigma_offset_noise^2) that `add_noise` produces (DIAMOND Denoiser.compute_conditioners)."""
  return preconditioners(jnp.sqrt(jnp.asarray(sigma, jnp.float32)**2
                                  + cfg.sigma_offset_noise**2), cfg.sigma_data)


def sample_training_sigma(key: jax.Array, shape, cfg: EDMConfig) -> jax.Array:
  """`shape` noise levels exp(loc + scale * N(0, 1)) clipped to [sigma_min_train, sigma_max_train] (Karras Table 1, "Noise distribution"; DIAMOND Denoiser.setup_training)."""
  log_sigma = cfg.loc + cfg.scale * jax.random.normal(key, shape, jnp.float32)
  return jnp.clip(jnp.exp(log_sigma), cfg.sigma_min_train, cfg.sigma_max_train)


def _per_example(c: jax.Array, ndim: int) -> jax.Array:
  """[B] -> [B, 1, ..., 1] with `ndim` axes in all, to broadcast over an example."""
  return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def add_noise(key: jax.Array, clean: jax.Array, sigma: jax.Array, cfg: EDMConfig) -> jax.Array:
  """clean [B, H, W, C], sigma [B] -> noisy [B, H, W, C] = clean + sigma_offset_noise * n + sigma * eps,
  n ~ N(0, 1) of shape [B, 1, 1, C] (one offset per image and channel), eps ~ N(0, I) (DWM sec. 4.1,
  x = y + sigma eps; offset noise as DIAMOND Denoiser.apply_noise)."""
  k_offset, k_eps = jax.random.split(key)
  offset_shape = clean.shape[:1] + (1,) * (clean.ndim - 2) + clean.shape[-1:]
  offset = cfg.sigma_offset_noise * jax.random.normal(k_offset, offset_shape, jnp.float32)
  eps = jax.random.normal(k_eps, clean.shape, jnp.float32)
  return clean.astype(jnp.float32) + offset + _per_example(sigma, clean.ndim) * eps


def denoise(F: Network, noisy: jax.Array, sigma: jax.Array, cfg: EDMConfig) -> jax.Array:
  """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise): noisy [B, H, W, C], sigma [B] -> [B, H, W, C] float32 (DWM eq. 2; Karras eq. 7)."""
  c_skip, c_out, c_in, c_noise = conditioners(sigma, cfg)
  c_skip, c_out, c_in = (_per_example(c, noisy.ndim) for c in (c_skip, c_out, c_in))
  out = F(c_in * noisy, c_noise).astype(jnp.float32)
  return c_skip * noisy + c_out * out


def denoising_loss(F: Network, clean: jax.Array, key: jax.Array, cfg: EDMConfig,
                   mask: jax.Array | None = None):
  """clean [B, H, W, C] -> (loss [], (metrics, denoised [B, H, W, C])): the mean squared error
  between F(c_in (y + noise), c_noise) and the network target (y - c_skip (y + noise)) / c_out
  (DWM eq. 3, Karras eq. 8), sigma drawn per example by `sample_training_sigma` and the noise by
  `add_noise`. `mask` [B] (bool) keeps only some examples in the mean (DIAMOND's padding mask).
  `denoised` is D(x, sigma) without gradient (DIAMOND feeds it back as the next step's context)."""
  k_sigma, k_noise = jax.random.split(key)
  sigma = sample_training_sigma(k_sigma, clean.shape[:1], cfg)
  noisy = add_noise(k_noise, clean, sigma, cfg)
  c_skip, c_out, c_in, c_noise = conditioners(sigma, cfg)
  c_skip, c_out, c_in = (_per_example(c, clean.ndim) for c in (c_skip, c_out, c_in))
  out = F(c_in * noisy, c_noise).astype(jnp.float32)
  target = (clean.astype(jnp.float32) - c_skip * noisy) / c_out
  per_example = jnp.mean((out - target)**2, axis=tuple(range(1, clean.ndim)))      # [B]
  weight = jnp.ones_like(per_example) if mask is None else mask.astype(jnp.float32)
  loss = jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(weight), 1.0)
  return loss, ({"loss_denoising": loss}, sg(c_skip * noisy + c_out * out))


def quantize_frame(x: jax.Array) -> jax.Array:
  """Clip to [-1, 1] and snap down to the 256 levels of a uint8 frame, as DIAMOND's
  Denoiser.wrap_model_output does to every denoised output: floor((x + 1) / 2 * 255) / 255 * 2 - 1."""
  return jnp.floor((jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0 * 255.0) / 255.0 * 2.0 - 1.0


def karras_sigmas(cfg: SamplerConfig) -> jax.Array:
  """[num_steps + 1] descending noise levels: (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho
  for i < N, then 0 (Karras eq. 5; DIAMOND build_sigmas; N = 1 gives [sigma_max, 0])."""
  lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
  ramp = jnp.linspace(0.0, 1.0, cfg.num_steps, dtype=jnp.float32)
  return jnp.concatenate([(hi + ramp * (lo - hi)) ** cfg.rho, jnp.zeros((1,), jnp.float32)])


def sample(denoiser_fn: Denoiser, key: jax.Array, shape, cfg: SamplerConfig) -> jax.Array:
  """Draw [B, ...] = `shape` samples by integrating the probability-flow ODE from
  x_0 ~ N(0, init_sigma^2 I) down the `karras_sigmas` schedule with Euler (order 1) or Heun
  (order 2, Karras Alg. 1-2) steps; the last step, to sigma = 0, is always an Euler step (Alg. 1-2:
  no 2nd-order correction when t_{i+1} = 0). With s_churn > 0, each step first raises sigma to sigma_hat = (1 + gamma) sigma and adds
  N(0, s_noise^2 (sigma_hat^2 - sigma^2)) noise, gamma = min(s_churn / N, sqrt(2) - 1) where
  s_tmin <= sigma <= s_tmax, else 0 (Alg. 2; DIAMOND DiffusionSampler.sample).
  denoiser_fn(x [B, ...], sigma [B]) -> D(x, sigma) [B, ...]; the steps are one lax.scan, so the
  sampler jits (N + (order - 1)(N - 1) denoiser calls)."""
  sigmas = karras_sigmas(cfg)
  gamma = min(cfg.s_churn / cfg.num_steps, math.sqrt(2.0) - 1.0)
  k_init, k_steps = jax.random.split(key)
  init_sigma = cfg.sigma_max if cfg.init_sigma is None else cfg.init_sigma
  x = init_sigma * jax.random.normal(k_init, shape, jnp.float32)
  per_example = lambda s: jnp.full(shape[:1], s, jnp.float32)

  def step(x, sigma, next_sigma, key, order):
    sigma_hat = sigma
    if gamma > 0:
      churn = jnp.where((cfg.s_tmin <= sigma) & (sigma <= cfg.s_tmax), gamma, 0.0)
      sigma_hat = sigma * (1.0 + churn)
      # sqrt(sigma_hat^2 - sigma^2), written without the cancellation that can make it NaN.
      added_std = sigma * jnp.sqrt(churn * (2.0 + churn))
      x = x + cfg.s_noise * added_std * jax.random.normal(key, x.shape)
    d = (x - denoiser_fn(x, per_example(sigma_hat)).astype(jnp.float32)) / sigma_hat
    x_next = x + (next_sigma - sigma_hat) * d
    if order == 2:
      denoised_next = denoiser_fn(x_next, per_example(next_sigma)).astype(jnp.float32)
      d_next = (x_next - denoised_next) / next_sigma
      x_next = x + (next_sigma - sigma_hat) * (d + d_next) / 2
    return x_next

  keys = jax.random.split(k_steps, cfg.num_steps)
  x, _ = jax.lax.scan(lambda x, s: (step(x, *s, order=cfg.order), None), x,
                      (sigmas[:-2], sigmas[1:-1], keys[:-1]))
  return step(x, sigmas[-2], sigmas[-1], keys[-1], order=1)


def cfg_combine(cond: jax.Array, uncond: jax.Array, w: float) -> jax.Array:
  """(1 + w) cond - w uncond, any matching shapes (classifier-free guidance, DWM eq. 4; w = 0 returns cond).
  Applied to F or to D alike: D is affine in F with the same c_skip x for both predictions."""
  return (1.0 + w) * cond - w * uncond


def drop_conditioning(key: jax.Array, mask_shape, rate: float) -> jax.Array:
  """Boolean keep-mask of `mask_shape` (e.g. [B]), False with probability `rate`: which examples keep
  their observation / action conditioning at training (DWM sec. 4.2.2, rate 0.2; DIAMOND: 0)."""
  return jax.random.uniform(key, mask_shape) >= rate
