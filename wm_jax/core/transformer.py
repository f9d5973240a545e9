"""A causal Transformer with a key/value cache, shared by the Transformer world models.

STORM (Zhang et al. 2023, arXiv:2310.09615, sec. 3.2: one token per step, 2 layers, width 512,
8 heads) and IRIS (Micheli et al. 2023, arXiv:2209.00588, sec. 2.2: a GPT over frame and action
tokens) both model a token sequence with a causally masked Transformer and, when imagining,
produce one token at a time. This module is that network, written once:

  y = net.apply(params, x)                       # training: x [B, T, D] -> y [B, T, D], causal
  cache = net.apply(params, B, method=CausalTransformer.init_cache)
  cache, y_t = net.apply(params, cache, x_t, method=CausalTransformer.step)   # [B, D] -> [B, D]

Blocks are pre-LN by default (x + Attn(LN(x)), then x + MLP(LN(x)), GELU MLP 4x wide, a final
LayerNorm: GPT-2, which IRIS follows), or post-LN with `pre_norm=False` (LN(x + Attn(x)), then
LN(x + MLP(x)), a LayerNorm on the input tokens instead of the final one: the "Attention is all
you need" blocks of STORM's code, with a ReLU MLP 2x wide). Positions are learned embeddings
(IRIS, STORM) or sinusoidal (Vaswani et al. 2017) by `positions`. Training may pass an extra
mask [B, T, T] (e.g. no attention across episode starts) that is and-ed with the causal one.
Neither paper's dropout (0.1) is implemented: a named deviation of both configs. `step` writes the token's keys and values at the cache's position and
attends over the positions written so far, so a `lax.scan` of `step` equals the full forward
pass on the same tokens; the cache holds `max_len` steps, and the caller keeps within it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wm_jax.core.nets import ACTIVATIONS, PARAM_DTYPE, dense

# 'k', 'v': [depth, B, max_len, heads, head_dim]; 'pos': [] int32, the next position;
# 'keep': [B, max_len] bool, False for cached positions no later token may attend to (e.g. the
# steps of a context window that belong to an earlier episode).
Cache = dict


def sinusoidal_positions(max_len: int, width: int) -> jax.Array:
  """[max_len, width] sin/cos position codes (Vaswani et al. 2017, sec. 3.5); width even."""
  pos = jnp.arange(max_len, dtype=jnp.float32)[:, None]
  freq = jnp.exp(-jnp.log(10_000.0) * jnp.arange(0, width, 2, dtype=jnp.float32) / width)
  angles = pos * freq[None]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], -1).reshape(max_len, width)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Scaled dot-product attention: q [B, Tq, H, Dh], k/v [B, Tk, H, Dh], mask [Tq, Tk] or
  [B, Tq, Tk] (True = may attend) -> [B, Tq, H, Dh] (Vaswani et al. 2017, eq. 1)."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
  mask = mask[None, None] if mask.ndim == 2 else mask[:, None]
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, -1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class Block(nn.Module):
  """One pre-LN (or post-LN) Transformer block; `qkv` and `finish` are the halves around the attention."""
  width: int
  heads: int
  mlp_ratio: int = 4
  pre_norm: bool = True
  act: str = "gelu"
  dtype: Any = jnp.float32

  def setup(self):
    self.norm_attn = nn.LayerNorm(dtype=self.dtype, param_dtype=PARAM_DTYPE)
    self.to_qkv = dense(3 * self.width, self.dtype)
    self.proj = dense(self.width, self.dtype)
    self.norm_mlp = nn.LayerNorm(dtype=self.dtype, param_dtype=PARAM_DTYPE)
    self.mlp_in = dense(self.mlp_ratio * self.width, self.dtype)
    self.mlp_out = dense(self.width, self.dtype)

  def qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [B, T, D] -> q, k, v [B, T, H, D / H] of LN(x) (pre-LN) or of x (post-LN)."""
    qkv = self.to_qkv(self.norm_attn(x) if self.pre_norm else x)
    split = lambda t: t.reshape(t.shape[:-1] + (self.heads, self.width // self.heads))
    return tuple(split(t) for t in jnp.split(qkv, 3, -1))

  def finish(self, x: jax.Array, attended: jax.Array) -> jax.Array:
    """Residual attention output then the residual MLP: x [B, T, D], attended [B, T, H, Dh]."""
    act = ACTIVATIONS[self.act]
    mlp = lambda h: self.mlp_out(act(self.mlp_in(h)))
    if self.pre_norm:
      x = x + self.proj(attended.reshape(x.shape))
      return x + mlp(self.norm_mlp(x))
    x = self.norm_attn(x + self.proj(attended.reshape(x.shape)))
    return self.norm_mlp(x + mlp(x))

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, T, D], mask [T, T] or [B, T, T] -> [B, T, D]."""
    q, k, v = self.qkv(x)
    return self.finish(x, attend(q, k, v, mask))


class CausalTransformer(nn.Module):
  """Token sequences [B, T, D] -> features [B, T, D], causally masked, with a cached `step`."""
  width: int
  depth: int
  heads: int
  max_len: int
  positions: str = "learned"   # 'learned' (IRIS, STORM) or 'sinusoidal'
  mlp_ratio: int = 4           # MLP width / width: 4 (GPT-2, IRIS), 2 (STORM)
  pre_norm: bool = True        # True: GPT-2 blocks (IRIS); False: post-LN blocks (STORM)
  act: str = "gelu"            # MLP activation: 'gelu' (GPT-2, IRIS), 'relu' (STORM)
  dtype: Any = jnp.float32

  def setup(self):
    if self.width % self.heads:
      raise ValueError(f"width {self.width} does not split over {self.heads} heads.")
    if self.positions == "learned":
      self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                                  (self.max_len, self.width), PARAM_DTYPE)
    else:
      self.pos_embed = sinusoidal_positions(self.max_len, self.width)
    self.blocks = [Block(self.width, self.heads, self.mlp_ratio, self.pre_norm, self.act,
                         self.dtype, name=f"block{i}") for i in range(self.depth)]
    # Pre-LN: a LayerNorm on the output (GPT-2); post-LN: one on the input tokens (STORM).
    self.norm_io = nn.LayerNorm(dtype=self.dtype, param_dtype=PARAM_DTYPE)

  def _embed(self, x: jax.Array, pos_embed: jax.Array) -> jax.Array:
    x = (x + pos_embed).astype(self.dtype)
    return x if self.pre_norm else self.norm_io(x)

  def _out(self, x: jax.Array) -> jax.Array:
    return self.norm_io(x) if self.pre_norm else x

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, D] (T <= max_len, positions 0..T-1), optional mask [B, T, T] (True = may
    attend) and-ed with the causal mask -> [B, T, D]."""
    T = x.shape[1]
    causal = jnp.tril(jnp.ones((T, T), bool))
    mask = causal if mask is None else mask & causal[None]
    x = self._embed(x, self.pos_embed[:T])
    for block in self.blocks:
      x = block(x, mask)
    return self._out(x)

  def init_cache(self, batch: int) -> Cache:
    """An empty cache for `batch` sequences: nothing written, next position 0, every position kept."""
    shape = (self.depth, batch, self.max_len, self.heads, self.width // self.heads)
    return {"k": jnp.zeros(shape, self.dtype), "v": jnp.zeros(shape, self.dtype),
            "pos": jnp.zeros((), jnp.int32), "keep": jnp.ones((batch, self.max_len), bool)}

  def step(self, cache: Cache, x: jax.Array) -> tuple[Cache, jax.Array]:
    """One token x [B, D] at position cache['pos'] -> (cache with its keys/values, y [B, D]); it attends to the written positions that cache['keep'] keeps, and always to itself."""
    pos = cache["pos"]
    h = self._embed(x, jax.lax.dynamic_index_in_dim(self.pos_embed, pos, keepdims=False))
    h = h[:, None]                                                      # [B, 1, D]
    written = jnp.arange(self.max_len) <= pos
    seen = (written & (cache["keep"] | (jnp.arange(self.max_len) == pos)))[:, None]  # [B, 1, L]
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      q, k, v = block.qkv(h)
      k_all = jax.lax.dynamic_update_slice_in_dim(cache["k"][i], k.astype(self.dtype), pos, 1)
      v_all = jax.lax.dynamic_update_slice_in_dim(cache["v"][i], v.astype(self.dtype), pos, 1)
      h = block.finish(h, attend(q, k_all, v_all, seen))
      ks.append(k_all)
      vs.append(v_all)
    new = {"k": jnp.stack(ks), "v": jnp.stack(vs), "pos": pos + 1, "keep": cache["keep"]}
    return new, self._out(h)[:, 0]
