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
  """[..., 64, 64, C] float image in [-0.5, 0.5] -> [..., 16 * depth * mults[-1]]: stride-2 convs with depth*mults channels, LayerNorm + act, 64 -> 4x4, flattened (DreamerV3 App. B, "CNN multiplier" of Table B.1)."""
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
      x = nn.Conv(self.depth * m, (self.kernel, self.kernel), strides=2, padding="SAME",
                  use_bias=not self.norm, dtype=self.dtype, param_dtype=PARAM_DTYPE,
                  kernel_init=default_init, name=f"conv{i}")(x)
      x = NormAct(self.act, self.norm, self.dtype, name=f"normact{i}")(x)
    return x.reshape(lead + (-1,))


class ConvDecoder(nn.Module):
  """[..., F] features -> [..., 64, 64, C] image mean in [-0.5, 0.5] units: Dense to 4x4 x depth*mults[-1], stride-2 transposed convs back to 64x64 (DreamerV3 App. B, mirror of ConvEncoder)."""
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
      x = nn.ConvTranspose(self.depth * m, (self.kernel, self.kernel), strides=(2, 2),
                           padding="SAME", use_bias=not self.norm, dtype=self.dtype,
                           param_dtype=PARAM_DTYPE, kernel_init=default_init,
                           name=f"deconv{i}")(x)
      x = NormAct(self.act, self.norm, self.dtype, name=f"normact{i}")(x)
    x = nn.ConvTranspose(self.channels, (self.kernel, self.kernel), strides=(2, 2),
                         padding="SAME", dtype=self.dtype, param_dtype=PARAM_DTYPE,
                         kernel_init=default_init, name="out")(x)
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
