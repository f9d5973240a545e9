"""Diffusion denoiser networks F of DIAMOND and DWM: a frame-stack U-Net and a cross-attention U-Net.

(Also DIAMOND's reward/termination CNN-LSTM, `RewardEndNet`, which shares their blocks: the
conditioned down path `DownPath` of ResBlocks with AdaGN; and `SmallResBlock`, the block of
DIAMOND's actor-critic trunk in wm_jax/agents/cnn_lstm.py.)

Both predict the EDM network output F(c_in x, c_noise, history) of DWM eq. 2 (wm_jax/core/edm.py
wraps it into the denoiser D) and share one signature:

  net(scaled_noisy [B, h, w, 3], c_noise [B], prev_frames [B, H, h, w, 3] in [-1, 1],
      prev_actions int32 [B, H], keep_obs [B] | None, keep_act [B] | None) -> [B, h, w, 3] float32

with h, w divisible by 2^(levels - 1). Parameters are float32 (PARAM_DTYPE); `dtype` is the
compute dtype (float32 or bfloat16).

'frame_stack' (DWM sec. 4.2.1 "Frame-stacking"; DIAMOND, Alonso et al. 2024, arXiv:2405.12399,
code src/models/diffusion/inner_model.py and src/models/blocks.py): a 3x3 conv over
cat[prev_frames / sigma_data (time-major), noisy frame] (DIAMOND's channel order), a U-Net of
residual blocks conditioned through adaptive group norm (AdaGN, Dhariwal & Nichol 2021) on
cond = MLP(FourierFeatures(c_noise) + cat_h Embed(a_h)) (DWM sec. 4.2.2), then GN -> SiLU ->
3x3 conv. The U-Net is DIAMOND's: per level `depths[i]` ResBlocks (down) and depths[i] + 1
ResBlocks (up), each up block taking one down activation concatenated (the level's input and
every down block output, in reverse), stride-2 conv down, nearest x2 + 3x3 conv up, two middle
ResBlocks with self-attention.

'cross_attention' (DWM sec. 4.2.1 "Cross-attention"): the same core U-Net on the noisy frame
alone (conv_in takes 3 channels), whose ResBlocks at the levels flagged by `cross_attn_depths`
(default: the two lowest resolutions, 16x16 and 8x8 for 64x64 frames) and the middle blocks
cross-attend to a history encoder: the down path of a light U-Net (`history_channels`,
`history_depths`), weights shared over the H previous frames, each frame's AdaGN conditioned on
MLP(Embed(its action) + a learned relative-timestep embedding). Its level-i features of all H
frames, [B, H, h_i, w_i, C_hist], are that level's keys and values (multi-head); fixed 2-D
sinusoidal position codes are added to queries and keys so that attention can align
locations. Full attention over H h_i w_i positions is too costly at high resolutions; there, the
levels flagged by `per_pixel_cross_attn_depths` (ours, off by default) let each pixel attend to
the H history features at that pixel only, U-Net 3D's temporal attention (Ho et al. 2022b),
which DWM cites as the inspiration of this design. The noise level and the H actions still
condition every block through AdaGN, as in the frame-stack net.

Observation / action dropout (DWM sec. 4.2.2, for classifier-free guidance, eq. 4): where
keep_obs is False the previous frames are replaced by zeros; where keep_act is False every
action is replaced by a learned "null action" (an extra row of each action embedding table),
so the same net gives the unconditional prediction.

Named deviations from DIAMOND's PyTorch code: weights use the suite's fan-average init (nets.
default_init) instead of PyTorch's defaults (the history encoder's and reward/end model's action
embeddings Flax's default, std 1 / sqrt(width); the denoiser's keeps PyTorch's N(0, 1)),
keeping DIAMOND's zero init of each ResBlock's
second conv, of the attention output projection and of conv_out (their biases start at 0 here,
at PyTorch's small uniform there) and its orthogonal init of the down-sampling convs; the
stride-2 down-sampling conv is `nets.DownConv` ('SAME' padding, window offset by one pixel
from PyTorch's padding=1); the Fourier-feature frequencies are
fixed N(0, 1) draws of jax.random.key(0), a constant rather than DIAMOND's per-run buffer; the
frames' scaling by 1 / sigma_data (DIAMOND's Denoiser.compute_model_output) happens inside the
net (`prev_frame_scale`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from wm_jax.core.nets import PARAM_DTYPE, DownConv, default_init, dense
from wm_jax.core.transformer import attend, sinusoidal_positions
from wm_jax.errors import RunConfigError

GN_GROUP_SIZE = 32      # GroupNorm groups = max(1, C // 32) (DIAMOND blocks.py)
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8       # heads = max(1, C // 8) (DIAMOND blocks.py ATTN_HEAD_DIM)
ARCHITECTURES = ("frame_stack", "cross_attention")


@dataclasses.dataclass(frozen=True)
class DenoiserNetConfig:
  """Sizes of the denoiser network; defaults are DIAMOND's Atari-100k ones (config/agent/default.yaml inner_model)."""
  architecture: str = "frame_stack"          # 'frame_stack' (DIAMOND) or 'cross_attention' (DWM)
  channels: Sequence[int] = (64, 64, 64, 64)  # U-Net channels per level
  depths: Sequence[int] = (2, 2, 2, 2)       # ResBlocks per level (down path; up path + 1)
  attn_depths: Sequence[bool] = (False, False, False, False)  # self-attention per level
  cond_channels: int = 256                   # width of the noise + action conditioning
  num_cond_frames: int = 4                   # H previous frames and actions
  prev_frame_scale: float = 2.0              # 1 / sigma_data: previous frames enter as obs / 0.5
  # cross_attention only (ours: DWM gives no sizes)
  cross_attn_depths: Sequence[bool] = (False, False, True, True)  # core levels that cross-attend
  # core levels whose pixels attend only to the H history features at that pixel; None = none
  per_pixel_cross_attn_depths: Sequence[bool] | None = None
  history_channels: Sequence[int] = (32, 32, 32, 32)   # history encoder channels per level
  history_depths: Sequence[int] = (1, 1, 1, 1)         # history encoder ResBlocks per level

  def __post_init__(self):
    if self.architecture not in ARCHITECTURES:
      raise RunConfigError(f"agent.denoiser.architecture={self.architecture!r} is unknown: use "
                           f"'frame_stack' or 'cross_attention'.")
    levels = len(self.channels)
    per_level = ["depths", "attn_depths"]
    if self.architecture == "cross_attention":
      per_level += ["cross_attn_depths", "per_pixel_cross_attn_depths", "history_channels",
                    "history_depths"]
    for name in per_level:
      if getattr(self, name) is not None and len(getattr(self, name)) != levels:
        raise RunConfigError(f"agent.denoiser.{name} has {len(getattr(self, name))} entries but "
                             f"channels has {levels}: give one per U-Net level.")
    if self.architecture == "cross_attention" and any(
        map(all, zip(self.cross_attn_depths, self.per_pixel_cross_attn_depths or ()))):
      raise RunConfigError("agent.denoiser.cross_attn_depths and per_pixel_cross_attn_depths both "
                           "flag one level: give each level at most one kind of cross-attention.")
    if self.cond_channels % self.num_cond_frames or self.cond_channels % 2:
      raise RunConfigError(f"agent.denoiser.cond_channels={self.cond_channels} must be even and a "
                           f"multiple of num_cond_frames={self.num_cond_frames} (cos and sin "
                           f"halves; one action embedding of cond_channels / H per frame).")


def _conv(features: int, kernel: int, dtype: Any, name: str, init=default_init) -> nn.Conv:
  """A stride-1 'SAME' conv (DIAMOND Conv3x3 / Conv1x1) with fp32 params and `dtype` compute."""
  return nn.Conv(features, (kernel, kernel), padding="SAME", dtype=dtype, param_dtype=PARAM_DTYPE,
                 kernel_init=init, name=name)


def _group_norm(channels: int, affine: bool, dtype: Any, name: str) -> nn.GroupNorm:
  """GroupNorm with max(1, C // 32) groups, eps 1e-5 (DIAMOND GroupNorm; affine=False inside AdaGroupNorm)."""
  return nn.GroupNorm(num_groups=max(1, channels // GN_GROUP_SIZE), epsilon=GN_EPS,
                      use_bias=affine, use_scale=affine, dtype=dtype, param_dtype=PARAM_DTYPE,
                      name=name)


def grid_positions(h: int, w: int, width: int) -> jax.Array:
  """[h, w, width] fixed 2-D position codes: sinusoidal codes of the row, then of the column, in
  halves of the width (Vaswani et al. 2017, sec. 3.5, per axis)."""
  half = 2 * -(-width // 4)
  rows = jnp.broadcast_to(sinusoidal_positions(h, half)[:, None], (h, w, half))
  cols = jnp.broadcast_to(sinusoidal_positions(w, half)[None, :], (h, w, half))
  return jnp.concatenate([rows, cols], -1)[..., :width]


ACTION_EMBED_INIT = nn.initializers.normal(1.0)   # DIAMOND's nn.Embedding (PyTorch: N(0, 1))


class FourierFeatures(nn.Module):
  """c_noise [B] -> [B, features] = [cos(2 pi c w), sin(2 pi c w)], w ~ N(0, 1) of [features / 2]
  fixed: drawn from jax.random.key(0), not a parameter (DIAMOND blocks.FourierFeatures, a buffer)."""
  features: int

  @nn.compact
  def __call__(self, c_noise):
    w = jax.random.normal(jax.random.key(0), (self.features // 2,), jnp.float32)
    f = 2 * math.pi * c_noise.astype(jnp.float32)[:, None] * w
    return jnp.concatenate([jnp.cos(f), jnp.sin(f)], -1)


class AdaGroupNorm(nn.Module):
  """x [B, h, w, C], cond [B, D] -> GN(x) (1 + scale) + shift, (scale, shift) = Linear(cond) [B, 2C] (DIAMOND blocks.AdaGroupNorm; AdaGN of Dhariwal & Nichol 2021)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    c = x.shape[-1]
    x = _group_norm(c, False, self.dtype, "norm")(x)
    scale, shift = jnp.split(dense(2 * c, self.dtype, name="linear")(cond)[:, None, None], 2, -1)
    return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
  """[B, h, w, C] -> same: GN(x) + W_o MHA(GN(x)) over the h*w positions, C // 8 heads, W_o zero-init.
  As DIAMOND's blocks.SelfAttention2d, the residual is around the normalised input."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    heads = max(1, c // ATTN_HEAD_DIM)
    x = _group_norm(c, True, self.dtype, "norm")(x)
    qkv = dense(3 * c, self.dtype, name="qkv_proj")(x).reshape(n, h * w, 3, heads, c // heads)
    y = attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], jnp.ones((h * w, h * w), bool))
    return x + dense(c, self.dtype, name="out_proj", outscale=0.0)(y.reshape(x.shape))


class CrossAttention2d(nn.Module):
  """x [B, h, w, C], ctx [B, T, h', w', C'] -> x + W_o MHA(q = GN(x) + P, k = LN(ctx) + P', v = LN(ctx))
  [B, h, w, C], attending over all T h' w' context positions; C // 8 heads, W_o zero-init,
  P, P' = `grid_positions` (DWM sec. 4.2.1: the core U-Net cross-attends to the history encoder).

  With `per_pixel` (ours), each pixel attends only to the T context features at the same pixel
  (h' = h, w' = w; no position codes): the temporal attention of U-Net 3D (Ho et al. 2022b),
  which DWM's cross-attention design cites. It costs T keys per pixel instead of T h' w', so
  high-resolution levels can read the history, which full attention makes too costly there."""
  per_pixel: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, ctx):
    n, h, w, c = x.shape
    _, t, hc, wc, cc = ctx.shape
    heads = max(1, c // ATTN_HEAD_DIM)
    q = _group_norm(c, True, self.dtype, "norm")(x)
    ctx = nn.LayerNorm(epsilon=GN_EPS, dtype=self.dtype, param_dtype=PARAM_DTYPE,
                       name="ctx_norm")(ctx)
    k = ctx
    if self.per_pixel:
      chex.assert_shape(ctx, (n, t, h, w, None))
      split = lambda y: y.reshape(y.shape[:-1] + (heads, c // heads))
    else:
      q = q + grid_positions(h, w, c).astype(self.dtype)
      k = k + grid_positions(hc, wc, cc).astype(self.dtype)
      split = lambda y: y.reshape(n, -1, heads, c // heads)
    q, k, v = (split(dense(c, self.dtype, name=name)(y)) for name, y in
               (("q", q), ("k", k), ("v", ctx)))
    if self.per_pixel:
      y = attend_per_pixel(q, k, v)
    else:
      y = attend(q, k, v, jnp.ones((h * w, t * hc * wc), bool))
    return x + dense(c, self.dtype, name="out_proj", outscale=0.0)(y.reshape(x.shape))


def attend_per_pixel(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """q [B, h, w, N, D], k/v [B, T, h, w, N, D] -> [B, h, w, N, D]: scaled dot-product attention
  of each pixel's query over the T keys at that pixel (N heads of width D)."""
  logits = jnp.einsum("bxynd,btxynd->bxynt", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
  weights = jax.nn.softmax(logits, -1).astype(v.dtype)
  return jnp.einsum("bxynt,btxynd->bxynd", weights, v)


class ResBlock(nn.Module):
  """x [B, h, w, Cin], cond [B, D] (, ctx [B, T, h, w, C']) -> [B, h, w, out]:
  proj(x) + conv3x3(SiLU(AdaGN(conv3x3(SiLU(AdaGN(x, cond))), cond))), proj = 1x1 conv when
  Cin != out, the second conv zero-init; then optional self-attention and cross-attention to ctx
  (DIAMOND blocks.ResBlock; cross-attention: DWM sec. 4.2.1)."""
  out: int
  attn: bool = False
  cross_attn: str | None = None     # None, 'full' or 'per_pixel' (CrossAttention2d)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond, ctx=None):
    r = x if x.shape[-1] == self.out else _conv(self.out, 1, self.dtype, "proj")(x)
    x = _conv(self.out, 3, self.dtype, "conv1")(
        nn.silu(AdaGroupNorm(self.dtype, name="norm1")(x, cond)))
    x = _conv(self.out, 3, self.dtype, "conv2", init=nn.initializers.zeros)(
        nn.silu(AdaGroupNorm(self.dtype, name="norm2")(x, cond)))
    x = x + r
    if self.attn:
      x = SelfAttention2d(self.dtype, name="attn")(x)
    if self.cross_attn:
      x = CrossAttention2d(self.cross_attn == "per_pixel", self.dtype, name="cross_attn")(x, ctx)
    return x


class SmallResBlock(nn.Module):
  """x [B, h, w, Cin] -> [B, h, w, out]: proj(x) + conv3x3(SiLU(GN(x))), proj = 1x1 conv when Cin != out (DIAMOND blocks.SmallResBlock, the blocks of its actor-critic's trunk)."""
  out: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    r = x if x.shape[-1] == self.out else _conv(self.out, 1, self.dtype, "proj")(x)
    h = nn.silu(_group_norm(x.shape[-1], True, self.dtype, "norm")(x))
    return r + _conv(self.out, 3, self.dtype, "conv")(h)


def _downsample(channels: int, dtype: Any, name: str) -> DownConv:
  """[B, h, w, C] -> [B, h / 2, w / 2, C]: 3x3 stride-2 conv, orthogonal init (DIAMOND blocks.Downsample)."""
  return DownConv(channels, 3, dtype=dtype, kernel_init=nn.initializers.orthogonal(), name=name)


class UNet(nn.Module):
  """x [B, h, w, channels[0]], cond [B, D] (, contexts: per level [B, T, h_i, w_i, C'] or None)
  -> [B, h, w, channels[0]] (DIAMOND blocks.UNet, h and w divisible by 2^(levels - 1)).

  Down: level i (after a stride-2 conv for i > 0) runs depths[i] ResBlocks to channels[i];
  middle: two ResBlocks with self-attention; up: level i (after nearest x2 + 3x3 conv for
  i < levels - 1) runs depths[i] + 1 ResBlocks, each on cat[x, one skip], the skips being the
  level's down activations in reverse (block outputs, then the level's input), the last block
  going back to channels[i - 1]. Levels with cross_attn_depths[i] (and the middle blocks when
  the lowest level has it) cross-attend to contexts[i], over all its positions; levels with
  per_pixel_cross_attn_depths[i], per pixel (CrossAttention2d)."""
  channels: Sequence[int]
  depths: Sequence[int]
  attn_depths: Sequence[bool]
  cross_attn_depths: Sequence[bool] | None = None
  per_pixel_cross_attn_depths: Sequence[bool] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond, contexts=None):
    levels = len(self.channels)
    full = self.cross_attn_depths or (False,) * levels
    per_pixel = self.per_pixel_cross_attn_depths or (False,) * levels
    cross = tuple("full" if f else "per_pixel" if p else None for f, p in zip(full, per_pixel))
    block = lambda name, out, i, attn: ResBlock(out, bool(attn), cross[i], self.dtype, name=name)
    ctx = lambda i: contexts[i] if cross[i] else None
    skips = []
    for i, (c, n) in enumerate(zip(self.channels, self.depths)):
      if i > 0:
        x = _downsample(self.channels[i - 1], self.dtype, f"down{i}")(x)
      skips.append([x])
      for j in range(n):
        x = block(f"down{i}_block{j}", c, i, self.attn_depths[i])(x, cond, ctx(i))
        skips[-1].append(x)
    for j in range(2):
      x = block(f"mid_block{j}", self.channels[-1], levels - 1, True)(x, cond, ctx(levels - 1))
    for i in reversed(range(levels)):
      if i < levels - 1:
        x = jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)
        x = _conv(self.channels[i], 3, self.dtype, f"up{i}")(x)
      for j, skip in enumerate(reversed(skips[i])):
        out = self.channels[i] if j < self.depths[i] else self.channels[max(0, i - 1)]
        x = block(f"up{i}_block{j}", out, i, self.attn_depths[i])(
            jnp.concatenate([x, skip], -1), cond, ctx(i))
    return x


class NoiseActionCond(nn.Module):
  """c_noise [B], actions int [B, H], keep_act bool [B] -> cond [B, D]:
  Linear(SiLU(Linear(FourierFeatures(c_noise) + cat_h Embed(a_h)))), each Embed of width D / H,
  dropped actions mapped to the learned null row `num_actions` (DIAMOND InnerModel; DWM sec. 4.2.2)."""
  cond_channels: int
  num_actions: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, c_noise, actions, keep_act):
    b, h = actions.shape
    actions = jnp.where(keep_act[:, None], actions, self.num_actions)
    act = nn.Embed(self.num_actions + 1, self.cond_channels // h, param_dtype=PARAM_DTYPE,
                   embedding_init=ACTION_EMBED_INIT, name="act_emb")(actions).reshape(b, -1)
    x = FourierFeatures(self.cond_channels, name="noise_emb")(c_noise) + act
    x = nn.silu(dense(self.cond_channels, self.dtype, name="proj0")(x))
    return dense(self.cond_channels, self.dtype, name="proj1")(x)


class DownPath(nn.Module):
  """x [N, h, w, Cin], cond [N, D] -> per level i the features [N, h_i, w_i, channels[i]]: a 3x3
  conv_in, then per level an optional stride-2 conv (i > 0) and depths[i] ResBlocks conditioned
  on cond; with `middle`, two more ResBlocks with self-attention after the last level (DIAMOND
  rew_end_model.RewEndEncoder; without `middle`, the down path of the cross-attention history
  encoder)."""
  channels: Sequence[int]
  depths: Sequence[int]
  middle: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    x = _conv(self.channels[0], 3, self.dtype, "conv_in")(x.astype(self.dtype))
    features = []
    for i, (c, n) in enumerate(zip(self.channels, self.depths)):
      if i > 0:
        x = _downsample(self.channels[i - 1], self.dtype, f"down{i}")(x)
      for j in range(n):
        x = ResBlock(c, dtype=self.dtype, name=f"down{i}_block{j}")(x, cond)
      features.append(x)
    if self.middle:
      for j in range(2):
        x = ResBlock(self.channels[-1], True, dtype=self.dtype, name=f"mid_block{j}")(x, cond)
      features[-1] = x
    return features


class HistoryEncoder(nn.Module):
  """frames [B, H, h, w, 3], actions int [B, H], keep_act bool [B] -> per level i, features
  [B, H, h_i, w_i, channels[i]]: a `DownPath` with weights shared over the H frames, each frame's
  AdaGN conditioned on MLP(Embed(a_h) + E_time[h]), E_time a learned relative-timestep embedding
  (DWM sec. 4.2.1 "a lightweight version of the U-Net ... each receives the relative environment
  timestep embedding"); dropped actions use the learned null row."""
  channels: Sequence[int]
  depths: Sequence[int]
  cond_channels: int
  num_actions: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames, actions, keep_act):
    b, t = actions.shape
    actions = jnp.where(keep_act[:, None], actions, self.num_actions)
    emb = nn.Embed(self.num_actions + 1, self.cond_channels, param_dtype=PARAM_DTYPE,
                   name="act_emb")(actions)
    emb = emb + self.param("time_emb", nn.initializers.normal(1.0), (t, self.cond_channels),
                           PARAM_DTYPE)
    cond = nn.silu(dense(self.cond_channels, self.dtype, name="proj0")(emb))
    cond = dense(self.cond_channels, self.dtype, name="proj1")(cond).reshape(b * t, -1)
    features = DownPath(self.channels, self.depths, dtype=self.dtype, name="down_path")(
        frames.reshape((b * t,) + frames.shape[2:]), cond)
    return [f.reshape((b, t) + f.shape[1:]) for f in features]


class RewardEndNet(nn.Module):
  """DIAMOND's reward/termination model (rew_end_model.RewEndModel, a separate CNN-LSTM): `encode`
  maps transitions (frame, action int, next frame) [N] (frames [N, h, w, 3] in [-1, 1]) to
  features [N, D] with a `DownPath` (middle attention blocks) over cat[frame, next frame]
  conditioned through AdaGN on Embed(action), flattened; `recur` runs the LSTM one step on them
  and reads (carry, reward-sign logits [N, 3], end logits [N, 2]) through Linear -> SiLU ->
  Linear (no bias), float32. Encoding whole sequences at once, then recurring, is DIAMOND's
  order (its encoder runs on (b t) frames)."""
  channels: Sequence[int]
  depths: Sequence[int]
  cond_channels: int
  lstm: int
  num_actions: int
  dtype: Any = jnp.float32

  def setup(self):
    self.act_emb = nn.Embed(self.num_actions, self.cond_channels, param_dtype=PARAM_DTYPE)
    self.encoder = DownPath(self.channels, self.depths, middle=True, dtype=self.dtype)
    self.cell = nn.OptimizedLSTMCell(self.lstm, dtype=self.dtype, param_dtype=PARAM_DTYPE)
    self.head0 = dense(self.lstm, self.dtype)
    self.head1 = dense(5, self.dtype, use_bias=False)

  def encode(self, frame, action, next_frame):
    x = self.encoder(jnp.concatenate([frame, next_frame], -1), self.act_emb(action))[-1]
    return x.reshape(x.shape[0], -1)

  def recur(self, carry, features):
    carry, h = self.cell(carry, features)
    carry = jax.tree.map(lambda c: c.astype(jnp.float32), carry)
    logits = self.head1(nn.silu(self.head0(h))).astype(jnp.float32)
    return carry, logits[:, :3], logits[:, 3:]

  def __call__(self, carry, frame, action, next_frame):
    """One transition: `encode`, then `recur`."""
    return self.recur(carry, self.encode(frame, action, next_frame))


class _Denoiser(nn.Module):
  """Shared front and back of both architectures: masks, conditioning, output head."""
  cfg: DenoiserNetConfig
  num_actions: int
  dtype: Any = jnp.float32

  def _inputs(self, scaled_noisy, c_noise, prev_frames, prev_actions, keep_obs, keep_act):
    """Checks shapes; returns (prev_frames * prev_frame_scale, zero where keep_obs is False, keep_act [B], the noise + action condition [B, cond_channels])."""
    b, h, w, _ = scaled_noisy.shape
    levels = len(self.cfg.channels)
    chex.assert_shape(prev_frames, (b, self.cfg.num_cond_frames, h, w, None))
    chex.assert_shape(prev_actions, (b, self.cfg.num_cond_frames))
    if h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
      raise RunConfigError(f"frames of {h}x{w} do not halve {levels - 1} times: use an image "
                           f"size divisible by {2 ** (levels - 1)} or fewer agent.denoiser.channels.")
    keep = lambda m: jnp.ones((b,), bool) if m is None else m.astype(bool)
    prev = jnp.where(keep(keep_obs)[:, None, None, None, None],
                     prev_frames.astype(jnp.float32) * self.cfg.prev_frame_scale, 0.0)
    keep_act = keep(keep_act)
    cond = NoiseActionCond(self.cfg.cond_channels, self.num_actions, self.dtype, name="cond")(
        c_noise, prev_actions, keep_act)
    return prev, keep_act, cond

  @nn.compact
  def __call__(self, scaled_noisy, c_noise, prev_frames, prev_actions, keep_obs=None,
               keep_act=None):
    prev, keep_act, cond = self._inputs(scaled_noisy, c_noise, prev_frames, prev_actions,
                                        keep_obs, keep_act)
    x = self._trunk(scaled_noisy, prev, prev_actions, keep_act, cond)
    return self._head(x, scaled_noisy.shape[-1])

  def _head(self, x, out_channels):
    """[B, h, w, channels[0]] -> [B, h, w, out_channels] float32: GN -> SiLU -> zero-init 3x3 conv (DIAMOND InnerModel norm_out, conv_out)."""
    x = nn.silu(_group_norm(x.shape[-1], True, self.dtype, "norm_out")(x))
    x = _conv(out_channels, 3, self.dtype, "conv_out", init=nn.initializers.zeros)(x)
    return x.astype(jnp.float32)


class FrameStackDenoiser(_Denoiser):
  """F(c_in x, c_noise, o_{t-H+1..t}, a_{t-H+1..t}): the frame-stack U-Net of DIAMOND / DWM sec. 4.2.1 (see the module docstring); [B, h, w, 3] -> [B, h, w, 3] float32."""

  def _trunk(self, scaled_noisy, prev, prev_actions, keep_act, cond):
    """-> [B, h, w, channels[0]]: conv_in over cat[previous frames, noisy frame], then the U-Net."""
    c = self.cfg
    b, t, h, w, ch = prev.shape
    stacked = prev.transpose(0, 2, 3, 1, 4).reshape(b, h, w, t * ch)       # time-major channels
    x = jnp.concatenate([stacked, scaled_noisy.astype(jnp.float32)], -1).astype(self.dtype)
    x = _conv(c.channels[0], 3, self.dtype, "conv_in")(x)
    return UNet(c.channels, c.depths, c.attn_depths, dtype=self.dtype, name="unet")(x, cond)


class CrossAttentionDenoiser(_Denoiser):
  """F(c_in x, c_noise, o_{t-H+1..t}, a_{t-H+1..t}): DWM's cross-attention U-Net (sec. 4.2.1; see the module docstring); [B, h, w, 3] -> [B, h, w, 3] float32."""

  def _trunk(self, scaled_noisy, prev, prev_actions, keep_act, cond):
    """-> [B, h, w, channels[0]]: the history encoder, then the U-Net on the noisy frame cross-attending to it."""
    c = self.cfg
    contexts = HistoryEncoder(c.history_channels, c.history_depths, c.cond_channels,
                              self.num_actions, self.dtype, name="history")(
                                  prev, prev_actions, keep_act)
    x = _conv(c.channels[0], 3, self.dtype, "conv_in")(scaled_noisy.astype(self.dtype))
    return UNet(c.channels, c.depths, c.attn_depths, c.cross_attn_depths,
                c.per_pixel_cross_attn_depths, self.dtype, name="unet")(x, cond, contexts)


def make_denoiser_net(cfg: Any, num_actions: int, dtype: Any = jnp.float32) -> nn.Module:
  """The denoiser network for `cfg` (a DenoiserNetConfig, or any object with its fields, e.g. the
  agent.denoiser ConfigDict; missing fields take DIAMOND's defaults): FrameStackDenoiser or
  CrossAttentionDenoiser by cfg.architecture; an unknown one raises RunConfigError."""
  values = {}
  for field in dataclasses.fields(DenoiserNetConfig):
    value = getattr(cfg, field.name, field.default)
    values[field.name] = tuple(value) if isinstance(value, (list, tuple)) else value
  net_cfg = DenoiserNetConfig(**values)
  net = FrameStackDenoiser if net_cfg.architecture == "frame_stack" else CrossAttentionDenoiser
  return net(net_cfg, num_actions, dtype)
