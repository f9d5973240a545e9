"""Flax linen building blocks shared by the world-model families (MLPs, GRU, CNN encoder/decoder).

Every module takes `dtype` (compute dtype: float32, or bfloat16 for mixed precision) and keeps
its parameters in float32 (`param_dtype`), so `precision='bfloat16'` in a config switches the
compute only (DreamerV3 App. B trains in bf16 with fp32 params).
Defaults are DreamerV3's (Hafner et al. 2023, arXiv:2301.04104 v1, App. B): LayerNorm + SiLU,
stride-2 convolutions of kernel 4 down to 4x4, weights from a fan-average normal.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def stride2_patches(xp: jax.Array, kernel: int) -> jax.Array:
  """[N, 2U, 2V, C] padded input -> patches [N, Ho, Wo, k, k, C], patches[:, i, j, a, b] =
  xp[:, 2i + a, 2j + b] (im2col of a stride-2 window; U = Ho + (k - 1) // 2).

  Read as pairs of rows and columns ("space to depth"), tap a of output i is the contiguous
  slice at pair i + a // 2, phase a % 2; its custom gradient is `stride2_overlap_add`, which
  writes every input element once (XLA's own transpose of the slices pads each tap to the full
  input, k * k full-size writes)."""
  N, H2, W2, C = xp.shape
  half = (kernel - 1) // 2
  Ho, Wo = H2 // 2 - half, W2 // 2 - half
  pairs = xp.reshape(N, H2 // 2, 2, W2 // 2, 2, C)
  taps = [jnp.stack([pairs[:, a // 2:a // 2 + Ho, a % 2, b // 2:b // 2 + Wo, b % 2]
                     for b in range(kernel)], 3) for a in range(kernel)]
  return jnp.stack(taps, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def stride2_overlap_add(cols: jax.Array, kernel: int) -> jax.Array:
  """patches [N, Ho, Wo, k, k, C] -> [N, 2U, 2V, C], out[:, 2i + a, 2j + b] += cols[:, i, j, a, b]
  (col2im: the transpose of `stride2_patches`, its custom gradient in turn). Each output phase
  (row and column parity) is one sum of the k * k / 4 taps that land on it."""
  N, Ho, Wo, k, _, C = cols.shape
  U, V = _stride2_blocks(k, Ho), _stride2_blocks(k, Wo)
  shifted = lambda a, b: jnp.pad(cols[:, :, :, a, b], (
      (0, 0), (a // 2, U - Ho - a // 2), (b // 2, V - Wo - b // 2), (0, 0)))
  phase = lambda p, q: sum((shifted(a, b) for a in range(p, k, 2) for b in range(q, k, 2)),
                           jnp.zeros((N, U, V, C), cols.dtype))
  out = jnp.stack([jnp.stack([phase(p, q) for q in (0, 1)], 3) for p in (0, 1)], 2)
  return out.reshape(N, 2 * U, 2 * V, C)                       # [N, U, 2, V, 2, C] -> rows


stride2_patches.defvjp(lambda xp, k: (stride2_patches(xp, k), None),
                       lambda k, _, g: (stride2_overlap_add(g, k),))
stride2_overlap_add.defvjp(lambda cols, k: (stride2_overlap_add(cols, k), None),
                           lambda k, _, g: (stride2_patches(g, k),))


class _Stride2Conv(nn.Module):
  """Shared part of `DownConv` and `UpConv`: a (k, k, Cin, features) kernel and a bias named
  as flax's `Conv` / `ConvTranspose` name theirs, fp32 params, `dtype` compute; the
  subclass's `_apply(x, w)` lays the stride-2 window out as one matmul."""
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
  padding='SAME')` (H, W even), same parameters, computed as one matmul over the k * k
  stride-2 patches (`stride2_patches`); on XLA:CPU its gradients run much faster than the
  convolution's (measured in issue 8)."""

  def _apply(self, x, w):
    k, f = self.kernel, self.features
    N, H, W, C = x.shape
    front = (k - 2) // 2                  # 'SAME' for stride 2: k - 2 padding in all
    U, V = _stride2_blocks(k, H // 2), _stride2_blocks(k, W // 2)
    xp = jnp.pad(x, ((0, 0), (front, 2 * U - H - front), (front, 2 * V - W - front), (0, 0)))
    return stride2_patches(xp, k).reshape(N, H // 2, W // 2, k * k * C) @ w.reshape(-1, f)


class UpConv(_Stride2Conv):
  """[N, H, W, Cin] -> [N, 2H, 2W, features]: exactly `nn.ConvTranspose(features, (k, k),
  strides=(2, 2), padding='SAME')`, same parameters, computed as one matmul of every input
  pixel with the whole (flipped) kernel, [N, H, W, k, k, features], summed into place by
  `stride2_overlap_add` (col2im); its input gradient is `stride2_patches` of the output
  gradient and one matmul. The transposed convolution's own FLOPs; on XLA:CPU its gradients
  run several times faster (measured in issue 8)."""

  def _apply(self, x, w):
    k, f = self.kernel, self.features
    N, H, W, cin = x.shape
    # lax.conv_transpose pads the dilated input by ceil(k / 2) in front (k - 1 for k <= 2):
    # out[2j + front - m] += x[j] w[m], so tap a = k - 1 - m lands at 2j + a - crop.
    front = k - 1 if k <= 2 else -(-k // 2)
    crop = k - 1 - front
    taps = jnp.flip(w, (0, 1)).transpose(2, 0, 1, 3).reshape(cin, k * k * f)
    cols = (x @ taps).reshape(N, H, W, k, k, f)
    return stride2_overlap_add(cols, k)[:, crop:crop + 2 * H, crop:crop + 2 * W]


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
