"""Flax linen building blocks shared by the world-model families (MLPs, GRU, CNN encoder/decoder).

Every module takes `dtype` (compute dtype: float32, or bfloat16 for mixed precision) and keeps
its parameters in float32 (`param_dtype`), so `precision='bfloat16'` in a config switches the
compute only (DreamerV3 App. B trains in bf16 with fp32 params).
Defaults are DreamerV3's (Hafner et al. 2023, arXiv:2301.04104 v1, App. B): LayerNorm + SiLU,
stride-2 convolutions of kernel 4 down to 4x4, weights from a fan-average normal.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"silu": nn.silu, "elu": nn.elu, "relu": nn.relu, "gelu": nn.gelu,
               "tanh": jnp.tanh}
PARAM_DTYPE = jnp.float32
# DreamerV3's "normal" weight init: truncated normal with variance 1 / fan_avg.
default_init = nn.initializers.variance_scaling(1.0, "fan_avg", "truncated_normal")


def out_init(outscale: float):
  """Initialiser of an output layer: zeros when outscale == 0 (DreamerV3 reward and critic heads start at 0), else the scaled default."""
  if outscale == 0.0:
    return nn.initializers.zeros
  return nn.initializers.variance_scaling(outscale, "fan_avg", "truncated_normal")


def dense(features: int, dtype: Any, name: str | None = None, use_bias: bool = True,
          outscale: float | None = None) -> nn.Dense:
  """A Dense layer with fp32 params, `dtype` compute and DreamerV3's init (or `out_init(outscale)`)."""
  init = default_init if outscale is None else out_init(outscale)
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=PARAM_DTYPE,
                  kernel_init=init, name=name)


class NormAct(nn.Module):
  """[..., C] -> [..., C]: optional LayerNorm (over the last axis) then the activation (DreamerV3 App. B: LayerNorm + SiLU; DreamerV1/V2: ELU, no norm)."""
  act: str = "silu"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.norm:
      x = nn.LayerNorm(epsilon=1e-3, dtype=self.dtype, param_dtype=PARAM_DTYPE, name="norm")(x)
    return ACTIVATIONS[self.act](x)


class MLP(nn.Module):
  """[..., I] -> [..., units]: `layers` x (Dense -> LayerNorm -> act); layers = 0 is the identity (DreamerV3 App. B, Table B.1 "MLP layers" / "Dense hidden units")."""
  units: int
  layers: int
  act: str = "silu"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    for i in range(self.layers):
      x = dense(self.units, self.dtype, name=f"dense{i}", use_bias=not self.norm)(x)
      x = NormAct(self.act, self.norm, self.dtype, name=f"normact{i}")(x)
    return x


class GRUCell(nn.Module):
  """([B, D] h, [B, I] x) -> [B, D] next h; gates from one Dense over [x, h], LayerNorm on the gates, update-gate bias -1 (DreamerV2 App. A / DreamerV3 RSSM; norm=False, update_bias=0 is the plain GRU of DreamerV1)."""
  size: int
  norm: bool = True
  update_bias: float = -1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, x):
    parts = dense(3 * self.size, self.dtype, name="gates", use_bias=not self.norm)(
        jnp.concatenate([x.astype(self.dtype), h.astype(self.dtype)], -1))
    if self.norm:
      parts = nn.LayerNorm(epsilon=1e-3, dtype=self.dtype, param_dtype=PARAM_DTYPE,
                           name="norm")(parts)
    reset, cand, update = jnp.split(parts.astype(jnp.float32), 3, -1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update + self.update_bias)
    return update * cand + (1.0 - update) * h.astype(jnp.float32)


class ConvEncoder(nn.Module):
  """[..., 64, 64, C] float image in [-0.5, 0.5] -> [..., 16 * depth * mults[-1]]: stride-2 convs (`DownConv`) with depth*mults channels, LayerNorm + act, 64 -> 4x4, flattened (DreamerV3 App. B, "CNN multiplier" of Table B.1)."""
  depth: int = 32
  mults: Sequence[int] = (1, 2, 4, 8)
  kernel: int = 4
  act: str = "silu"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:]).astype(self.dtype)
    for i, m in enumerate(self.mults):
      x = DownConv(self.depth * m, self.kernel, use_bias=not self.norm, dtype=self.dtype,
                   name=f"conv{i}")(x)
      x = NormAct(self.act, self.norm, self.dtype, name=f"normact{i}")(x)
    return x.reshape(lead + (-1,))


def _stride2_blocks(kernel: int, out_len: int) -> int:
  """Row (or column) pairs of the padded input that a stride-2 window of `kernel` taps reads for `out_len` outputs."""
  return out_len + (kernel - 1) // 2


def _conv(x: jax.Array, w: jax.Array, padding) -> jax.Array:
  """[N, H, W, Cin] x (R, S, Cin, F) -> [N, H', W', F]: XLA's stride-1 convolution (NHWC, HWIO)."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def space_to_depth(x: jax.Array) -> jax.Array:
  """[N, 2U, 2V, C] -> [N, U, V, 4C]: pixel (2u + r, 2v + s) at channel (r, s, c)."""
  N, H, W, C = x.shape
  return x.reshape(N, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 2, 4, 5).reshape(
      N, H // 2, W // 2, 4 * C)


def depth_to_space(y: jax.Array) -> jax.Array:
  """[N, U, V, 4F] -> [N, 2U, 2V, F]: the inverse of `space_to_depth`."""
  N, U, V, C4 = y.shape
  return y.reshape(N, U, V, 2, 2, C4 // 4).transpose(0, 1, 3, 2, 4, 5).reshape(
      N, 2 * U, 2 * V, C4 // 4)


class _Stride2Conv(nn.Module):
  """Shared part of `DownConv` and `UpConv`: a (k, k, Cin, features) kernel and a bias named
  as flax's `Conv` / `ConvTranspose` name theirs, fp32 params, `dtype` compute; the
  subclass's `_apply(x, w)` computes the stride-2 window as a stride-1 convolution over the
  four pixel phases (row and column parity).

  Why phases: XLA:CPU runs stride-1 convolutions and their gradients fast, but the gradients
  of a strided convolution (dilated convolutions) slowly. Forward and backward of each layer
  of DreamerV3's encoder and decoder at batch 16 x 64 (2 cores, float32, ms; issue 10), this
  formulation against the im2col matmuls it replaced: size1m (depth 4, kernel 4) encoder
  135/77/39/11 -> 109/42/13/10, decoder 43/66/129/518 -> 13/19/48/217; size S (depth 32)
  encoder 358/974/596/419 -> 207/710/499/396, decoder 587/1039/1725/634 -> 318/455/640/505
  (`UpConv`'s separate phases on the three wide layers)."""
  features: int
  kernel: int = 4
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = default_init

  @nn.compact
  def __call__(self, x):
    k, f = self.kernel, self.features
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], f), PARAM_DTYPE)
    y = self._apply(x.astype(self.dtype), w.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (f,), PARAM_DTYPE).astype(self.dtype)
    return y


class DownConv(_Stride2Conv):
  """[N, H, W, Cin] -> [N, H/2, W/2, features]: exactly `nn.Conv(features, (k, k), strides=2,
  padding='SAME')` (H, W even), same parameters, computed as a stride-1 convolution of
  ceil(k / 2)^2 taps over the space-to-depth input [N, H/2 + .., W/2 + .., 4 Cin]: tap a of
  output i reads padded row 2i + a, i.e. row pair i + a // 2 at phase a % 2. The same FLOPs
  (k odd: the zero-padded phase taps add (k + 1)^2 / k^2)."""

  def _apply(self, x, w):
    k, f = self.kernel, self.features
    N, H, W, C = x.shape
    front = (k - 2) // 2                  # 'SAME' for stride 2: k - 2 padding in all
    U, V = _stride2_blocks(k, H // 2), _stride2_blocks(k, W // 2)
    xp = jnp.pad(x, ((0, 0), (front, 2 * U - H - front), (front, 2 * V - W - front), (0, 0)))
    half = -(-k // 2)
    wp = jnp.pad(w, ((0, 2 * half - k), (0, 2 * half - k), (0, 0), (0, 0)))
    w_phases = wp.reshape(half, 2, half, 2, C, f).transpose(0, 2, 1, 3, 4, 5).reshape(
        half, half, 4 * C, f)
    return _conv(space_to_depth(xp), w_phases, "VALID")


# Cin * features from which UpConv convolves each output phase on its own (exact FLOPs) rather
# than all four in one convolution (fewer, larger calls). Forward + backward at batch 16 x 64 on
# 2 cores (ms, joint -> separate): 256 -> 128 channels 636 -> 318, 128 -> 64 686 -> 455,
# 64 -> 32 829 -> 640, but 32 -> 16 13 -> 13, 16 -> 8 17 -> 23 and 32 -> 3 505 -> 933.
SEPARATE_PHASES_FROM = 1024


class UpConv(_Stride2Conv):
  """[N, H, W, Cin] -> [N, 2H, 2W, features]: exactly `nn.ConvTranspose(features, (k, k),
  strides=(2, 2), padding='SAME')`, same parameters, computed "sub-pixel" (Shi et al. 2016,
  arXiv:1609.05158): output pixel (2i + p, 2j + q) only sums input pixels (i + d, j + e) over a
  small neighbourhood, i.e. it is a stride-1 convolution of x per output phase (p, q). Narrow
  layers run the four phases as one convolution with 4 * features outputs (the taps a phase
  does not use are zero: 9 / 4 of the FLOPs for k = 4, 36 / 25 for k = 5); wide ones
  (Cin * features >= SEPARATE_PHASES_FROM) as four, with the transposed convolution's FLOPs."""

  def _apply(self, x, w):
    k = self.kernel
    # lax.conv_transpose pads the dilated input by ceil(k / 2) in front (k - 1 for k <= 2):
    # out[2j + front - m] += x[j] w[m], so flipped tap a = k - 1 - m lands at 2j + a - crop,
    # and output 2i + p reads input i + d through tap a = p + crop - 2d.
    front = k - 1 if k <= 2 else -(-k // 2)
    crop = k - 1 - front
    tap = lambda p, d: p + crop - 2 * d
    used = lambda p, d: 0 <= tap(p, d) < k
    # index k picks the zero row and column appended to the flipped kernel
    w_flipped = jnp.pad(jnp.flip(w, (0, 1)), ((0, 1), (0, 1), (0, 0), (0, 0)))

    def phases(rows, cols):
      """[N, H, W, len(rows), len(cols), features]: the output phases rows x cols."""
      offsets = [[d for d in range(-k, k + 1) if any(used(p, d) for p in ps)]
                 for ps in (rows, cols)]
      index = [np.array([[tap(p, d) if used(p, d) else k for p in ps] for d in ds])
               for ps, ds in zip((rows, cols), offsets)]                   # [R, len(ps)]
      kernel = w_flipped[index[0][:, :, None, None], index[1][None, None]]
      R, P, S, Q, cin, f = kernel.shape                                    # [R, P, S, Q, ...]
      kernel = kernel.transpose(0, 2, 4, 1, 3, 5).reshape(R, S, cin, P * Q * f)
      y = _conv(x, kernel, [(-ds[0], ds[-1]) for ds in offsets])
      return y.reshape(y.shape[:3] + (P, Q, f))

    if x.shape[-1] * self.features >= SEPARATE_PHASES_FROM:
      y = jnp.concatenate([jnp.concatenate([phases((p,), (q,)) for q in (0, 1)], 4)
                           for p in (0, 1)], 3)
    else:
      y = phases((0, 1), (0, 1))
    return depth_to_space(y.reshape(y.shape[:3] + (-1,)))


class ConvDecoder(nn.Module):
  """[..., F] features -> [..., 64, 64, C] image mean in [-0.5, 0.5] units: Dense to 4x4 x depth*mults[-1], stride-2 transposed convs (`UpConv`) back to 64x64 (DreamerV3 App. B, mirror of ConvEncoder)."""
  channels: int = 3
  depth: int = 32
  mults: Sequence[int] = (1, 2, 4, 8)
  kernel: int = 4
  act: str = "silu"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat):
    lead = feat.shape[:-1]
    res = 64 // 2 ** len(self.mults)
    x = dense(res * res * self.depth * self.mults[-1], self.dtype, name="proj")(
        feat.reshape((-1, feat.shape[-1])).astype(self.dtype))
    x = x.reshape((-1, res, res, self.depth * self.mults[-1]))
    x = NormAct(self.act, self.norm, self.dtype, name="normact_in")(x)
    for i, m in enumerate(reversed(self.mults[:-1])):
      x = UpConv(self.depth * m, self.kernel, use_bias=not self.norm, dtype=self.dtype,
                 name=f"deconv{i}")(x)
      x = NormAct(self.act, self.norm, self.dtype, name=f"normact{i}")(x)
    x = UpConv(self.channels, self.kernel, dtype=self.dtype, name="out")(x)
    return x.reshape(lead + x.shape[1:]).astype(jnp.float32)


class Head(nn.Module):
  """[..., F] -> [..., *shape] float32: an MLP trunk then a linear output initialised with `outscale` (0 -> zeros: DreamerV3's reward and critic heads)."""
  shape: Sequence[int]
  units: int
  layers: int
  outscale: float = 1.0
  act: str = "silu"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = MLP(self.units, self.layers, self.act, self.norm, self.dtype, name="mlp")(x)
    size = 1
    for s in self.shape:
      size *= s
    out = dense(size, self.dtype, name="out", outscale=self.outscale)(x.astype(self.dtype))
    return out.astype(jnp.float32).reshape(x.shape[:-1] + tuple(self.shape))
