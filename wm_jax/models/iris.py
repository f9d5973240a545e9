"""IRIS: a discrete autoencoder and a GPT over its tokens, as pure functions over params.

IRIS (Micheli et al. 2023, "Transformers are sample-efficient world models", arXiv:2209.00588):
  * Tokenizer (sec. 2.1; IRIS code config/tokenizer): an encoder E maps a 64x64 frame x_t to
    K = 16 tokens z_t (a 4x4 grid) by nearest-neighbour look-up in a codebook of N = 512
    embeddings of dim 512, with straight-through gradients; a decoder D maps the embeddings
    back to a frame. Loss: equally weighted L1 reconstruction, VQ-VAE codebook + commitment
    terms and a perceptual (LPIPS) term (here only with user-supplied VGG16 weights,
    `tokenizer.lpips_weights`; wm_jax/core/perceptual.py). E and D are VQGAN's (Esser et al. 2021): residual
    blocks of GroupNorm, swish and 3x3 convolutions, self-attention at 8x8 and 16x16, 64
    channels at every level.
  * World model (sec. 2.2; config/world_model): a GPT (10 pre-LN blocks, width 256, 4 heads,
    learned positions) over the interleaved tokens z_0^1..z_0^K, a_0, z_1^1..z_1^K, a_1, ...,
    20 steps of context (K + 1 tokens each). It predicts the next frame token at every token
    whose successor is a frame token (cross-entropy), and at action tokens the reward's sign
    (3 classes: -1, 0, +1) and the episode end (2 classes).
  * Imagination (sec. 2.3): tokens are sampled one at a time with a key/value cache, K + 1
    Transformer steps per imagined frame (the action, then the K frame tokens). When the cache
    is full it is refilled with the current frame's tokens (the IRIS code's WorldModelEnv).

The world model stands in for an env (DESIGN.md): `reset_from(params, context, key)` and
`step(params, sim, action, key) -> (sim, frame, reward, cont)` are pure and jit/scan-able.

Conventions. Replay batches follow wm_jax/agents/base.py (`action[:, t]` led to `obs[:, t]`),
so IRIS's step t = (z_t, a_t) is (tokens of image[:, t], action[:, t + 1]) here, labelled
with reward[:, t + 1] and is_terminal[:, t + 1]. Frames enter as uint8 [..., 64, 64, 3]; the
tokenizer works on x / 127.5 - 1 in [-1, 1]; decoded frames are float32 [..., 64, 64, 3] in
[0, 1] (the IRIS code's clamp after postprocessing).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.core import losses
from wm_jax.core.nets import PARAM_DTYPE
from wm_jax.core.perceptual import load_lpips_weights, lpips
from wm_jax.core.transformer import CausalTransformer
from wm_jax.envs.base import ActionSpec, EnvSpec
from wm_jax.errors import RunConfigError

sg = jax.lax.stop_gradient
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
RESOLUTION = 64          # IRIS frames are 64x64 RGB (sec. 2.1; tokenizer config `resolution: 64`)
SimState = dict   # 'cache' (CausalTransformer cache), 'tokens' int32 [B, K], 'frame' [B, 64, 64, 3]


def grid_side(tokens_per_frame: int) -> int:
  """Side of the token grid for K tokens per frame (16 -> 4, 64 -> 8); one sentence unless K is a square whose side divides 64 by a power of two."""
  side = math.isqrt(max(tokens_per_frame, 0))
  ratio = RESOLUTION // max(side, 1)
  square = side >= 1 and side * side == tokens_per_frame
  if not square or side * ratio != RESOLUTION or ratio & (ratio - 1):
    raise RunConfigError(
        f"agent.tokens_per_frame={tokens_per_frame} must be a square grid whose side divides "
        f"{RESOLUTION} by a power of two: use 16 (4x4, the paper's) or 64 (8x8).")
  return side


def channel_mults(cfg: ml_collections.ConfigDict, tokens_per_frame: int) -> tuple[int, ...]:
  """Channel multiplier per encoder level: `tokenizer.ch_mult`, or all ones (IRIS's [1, 1, 1, 1, 1]) with one level per halving of 64 down to the token grid, plus one."""
  levels = int(math.log2(RESOLUTION // grid_side(tokens_per_frame))) + 1
  mults = tuple(cfg.ch_mult) if cfg.ch_mult else (1,) * levels
  if len(mults) != levels:
    raise RunConfigError(
        f"agent.tokenizer.ch_mult has {len(mults)} levels but tokens_per_frame="
        f"{tokens_per_frame} needs {levels} (64 halved {levels - 1} times): give {levels} "
        f"multipliers or leave it None.")
  return mults


# --------------------------------------------------------------------------- tokenizer nets


def _conv(features: int, kernel: int, dtype, name: str, stride: int = 1, padding="SAME"):
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=padding, dtype=dtype,
                 param_dtype=PARAM_DTYPE, name=name)


def _norm(groups: int, dtype, name: str):
  return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype, param_dtype=PARAM_DTYPE,
                      name=name)


class ResBlock(nn.Module):
  """[N, H, W, C] -> [N, H, W, out]: x + conv(swish(GN(conv(swish(GN(x)))))), 1x1 shortcut when C != out (VQGAN ResnetBlock, no dropout: IRIS uses 0)."""
  out: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm_act = lambda name, h: nn.swish(_norm(self.groups, self.dtype, name)(h))
    h = _conv(self.out, 3, self.dtype, "conv1")(norm_act("norm1", x))
    h = _conv(self.out, 3, self.dtype, "conv2")(norm_act("norm2", h))
    if x.shape[-1] != self.out:
      x = _conv(self.out, 1, self.dtype, "shortcut")(x)
    return x + h


class AttnBlock(nn.Module):
  """[N, H, W, C] -> same: x + proj(softmax(q k^T / sqrt(C)) v) over the H*W positions of GN(x), one head (VQGAN AttnBlock)."""
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    y = _norm(self.groups, self.dtype, "norm")(x).reshape(n, h * w, c)
    dense = lambda name, bias=True: nn.Dense(c, use_bias=bias, dtype=self.dtype,
                                             param_dtype=PARAM_DTYPE, name=name)
    # A key bias adds q.b to every logit of a query, which the softmax cancels: it is left out.
    q, k, v = dense("q")(y), dense("k", bias=False)(y), dense("v")(y)
    weights = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) / math.sqrt(c))
    y = jnp.einsum("nqk,nkc->nqc", weights.astype(v.dtype), v)
    return x + dense("proj")(y).reshape(x.shape)


class Encoder(nn.Module):
  """[N, 64, 64, 3] in [-1, 1] -> [N, s, s, z_channels], s = 64 / 2^(levels - 1) (VQGAN Encoder as the IRIS tokenizer config sets it)."""
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attn_resolutions: Sequence[int]
  z_channels: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _conv(self.ch, 3, self.dtype, "conv_in")(x.astype(self.dtype))
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        x = ResBlock(self.ch * mult, self.groups, self.dtype, name=f"down{i}_block{j}")(x)
        if x.shape[1] in self.attn_resolutions:
          x = AttnBlock(self.groups, self.dtype, name=f"down{i}_attn{j}")(x)
      if i < len(self.ch_mult) - 1:   # asymmetric pad (0, 1) then a stride-2 3x3 conv
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        x = _conv(x.shape[-1], 3, self.dtype, f"down{i}_sample", stride=2, padding="VALID")(x)
    channels = x.shape[-1]
    x = ResBlock(channels, self.groups, self.dtype, name="mid_block1")(x)
    x = AttnBlock(self.groups, self.dtype, name="mid_attn")(x)
    x = ResBlock(channels, self.groups, self.dtype, name="mid_block2")(x)
    x = nn.swish(_norm(self.groups, self.dtype, "norm_out")(x))
    return _conv(self.z_channels, 3, self.dtype, "conv_out")(x)


class Decoder(nn.Module):
  """[N, s, s, z_channels] -> [N, 64, 64, 3] in [-1, 1] units (VQGAN Decoder: mirror of the Encoder, num_res_blocks + 1 blocks per level, nearest upsampling + 3x3 conv)."""
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attn_resolutions: Sequence[int]
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    x = _conv(self.ch * self.ch_mult[-1], 3, self.dtype, "conv_in")(z.astype(self.dtype))
    x = ResBlock(x.shape[-1], self.groups, self.dtype, name="mid_block1")(x)
    x = AttnBlock(self.groups, self.dtype, name="mid_attn")(x)
    x = ResBlock(x.shape[-1], self.groups, self.dtype, name="mid_block2")(x)
    for i in reversed(range(len(self.ch_mult))):
      for j in range(self.num_res_blocks + 1):
        x = ResBlock(self.ch * self.ch_mult[i], self.groups, self.dtype, name=f"up{i}_block{j}")(x)
        if x.shape[1] in self.attn_resolutions:
          x = AttnBlock(self.groups, self.dtype, name=f"up{i}_attn{j}")(x)
      if i > 0:
        x = jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)
        x = _conv(x.shape[-1], 3, self.dtype, f"up{i}_sample")(x)
    x = nn.swish(_norm(self.groups, self.dtype, "norm_out")(x))
    return _conv(3, 3, self.dtype, "conv_out")(x).astype(jnp.float32)


def quantize(z: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
  """z [..., E], codebook [N, E] -> (tokens int32 [...], z_q [..., E]): the nearest codebook entry in L2 (VQ-VAE, van den Oord et al. 2017, eq. 1-2; IRIS sec. 2.1)."""
  z = z.astype(jnp.float32)
  dist = (jnp.sum(z ** 2, -1, keepdims=True) + jnp.sum(codebook ** 2, -1)
          - 2.0 * z @ codebook.T)
  tokens = jnp.argmin(dist, -1).astype(jnp.int32)
  return tokens, codebook[tokens]


class TokenizerNet(nn.Module):
  """The discrete autoencoder: frames [N, 64, 64, 3] in [-1, 1] <-> tokens [N, K] (IRIS sec. 2.1)."""
  cfg: Any               # the `tokenizer` section
  ch_mult: Sequence[int]
  dtype: Any = jnp.float32

  def setup(self):
    c = self.cfg
    self.encoder = Encoder(c.ch, self.ch_mult, c.num_res_blocks, tuple(c.attn_resolutions),
                           c.z_channels, c.norm_groups, self.dtype)
    self.pre_quant = nn.Dense(c.embed_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)   # 1x1 conv
    bound = 1.0 / c.vocab   # IRIS code: embedding ~ U(-1/N, 1/N)
    self.codebook = self.param(
        "codebook", lambda k, s: jax.random.uniform(k, s, PARAM_DTYPE, -bound, bound),
        (c.vocab, c.embed_dim))
    self.post_quant = nn.Dense(c.z_channels, dtype=self.dtype, param_dtype=PARAM_DTYPE)
    self.decoder = Decoder(c.ch, self.ch_mult, c.num_res_blocks, tuple(c.attn_resolutions),
                           c.norm_groups, self.dtype)

  def encode(self, x: jax.Array) -> jax.Array:
    """x [N, 64, 64, 3] in [-1, 1] -> z [N, s, s, E] float32, before quantisation."""
    return self.pre_quant(self.encoder(x)).astype(jnp.float32)

  def quantize(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z [N, s, s, E] -> (tokens int32 [N, s * s], z_q [N, s, s, E])."""
    tokens, z_q = quantize(z, self.codebook)
    return tokens.reshape(tokens.shape[0], -1), z_q

  def lookup(self, tokens: jax.Array) -> jax.Array:
    """tokens [N, K] -> z_q [N, s, s, E], the codebook embeddings on the grid."""
    side = math.isqrt(tokens.shape[-1])
    return self.codebook[tokens].reshape(tokens.shape[0], side, side, -1)

  def decode(self, z_q: jax.Array) -> jax.Array:
    """z_q [N, s, s, E] -> reconstruction [N, 64, 64, 3] in [-1, 1] units (not clipped)."""
    return self.decoder(self.post_quant(z_q.astype(self.dtype)))

  def __call__(self, x: jax.Array):
    """x [N, 64, 64, 3] -> (z, z_q, tokens, reconstruction of the straight-through z + sg(z_q - z))."""
    z = self.encode(x)
    tokens, z_q = self.quantize(z)
    return z, z_q, tokens, self.decode(z + sg(z_q - z))


# --------------------------------------------------------------------------- world model net


def _gpt_dense(features: int, dtype, name: str) -> nn.Dense:
  """A Dense layer with the IRIS code's GPT init: N(0, 0.02) weights, zero bias."""
  return nn.Dense(features, dtype=dtype, param_dtype=PARAM_DTYPE, name=name,
                  kernel_init=nn.initializers.normal(0.02))


class Head(nn.Module):
  """[..., W] -> [..., out] float32: Dense(W) -> ReLU -> Dense(out) (the IRIS code's heads)."""
  hidden: int
  out: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    h = nn.relu(_gpt_dense(self.hidden, self.dtype, "hidden")(h))
    return _gpt_dense(self.out, self.dtype, "out")(h).astype(jnp.float32)


class WorldModelNet(nn.Module):
  """GPT over [K frame tokens, 1 action token] blocks with next-token, reward and end heads (IRIS sec. 2.2)."""
  cfg: Any               # the `world_model` section
  vocab: int
  tokens_per_frame: int
  act: ActionSpec
  dtype: Any = jnp.float32

  def setup(self):
    c, width = self.cfg, self.cfg.width
    embed = lambda n, name: nn.Embed(n, width, embedding_init=nn.initializers.normal(0.02),
                                     param_dtype=PARAM_DTYPE, name=name)
    self.frame_embed = embed(self.vocab, "frame_embed")
    # Discrete actions are tokens (IRIS); continuous ones a linear embedding (ours, for DMC).
    self.action_embed = (embed(self.act.num_actions, "action_embed") if self.act.discrete
                         else _gpt_dense(width, jnp.float32, "action_embed"))
    self.transformer = CausalTransformer(width=width, depth=c.depth, heads=c.heads,
                                         max_len=c.context * (self.tokens_per_frame + 1),
                                         positions="learned", dtype=self.dtype)
    self.obs_head = Head(width, self.vocab, self.dtype)
    self.reward_head = Head(width, 3, self.dtype)
    self.end_head = Head(width, 2, self.dtype)

  def embed_frame(self, tokens: jax.Array) -> jax.Array:
    """int tokens [...] -> [..., W]."""
    return self.frame_embed(tokens)

  def embed_action(self, action: jax.Array) -> jax.Array:
    """int32 [...] (discrete) or float32 [..., A] (continuous) -> [..., W]."""
    return self.action_embed(action if self.act.discrete else action.astype(jnp.float32))

  def features(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x [B, L, W] -> [B, L, W], causal and-ed with mask [B, L, L]."""
    return self.transformer(x, mask)

  def init_cache(self, batch: int):
    return self.transformer.init_cache(batch)

  def step(self, cache, x: jax.Array):
    """One token x [B, W] -> (cache, feature [B, W])."""
    return self.transformer.step(cache, x)

  def obs_logits(self, h: jax.Array) -> jax.Array:
    """[..., W] -> [..., N] float32 logits of the next frame token."""
    return self.obs_head(h)

  def reward_end_logits(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., W] at action tokens -> ([..., 3] reward-sign logits, [..., 2] end logits), float32."""
    return self.reward_head(h), self.end_head(h)

  def __call__(self, tokens: jax.Array, action: jax.Array):
    """Initialises every parameter: tokens [B, K], action [B] or [B, A] -> logits."""
    x = jnp.concatenate([self.embed_frame(tokens), self.embed_action(action)[:, None]], 1)
    h = self.features(x)
    return self.obs_logits(h), self.reward_end_logits(h)


# --------------------------------------------------------------------------- pure functions


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[..., C] logits, int [...] labels -> [...] -log softmax(logits)[label]."""
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.take_along_axis(logp, labels[..., None], -1)[..., 0]


# Per-pixel reconstruction error of the tokenizer (`tokenizer.reconstruction`): IRIS's L1, or
# squared error, which the debug variant uses (see experiments/configs/iris.py).
RECONSTRUCTION_LOSSES = {"l1": jnp.abs, "mse": jnp.square}


def to_unit(frames: jax.Array) -> jax.Array:
  """uint8 frames [...] -> float32 in [-1, 1] (the IRIS code's preprocess_input of x / 255)."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class IrisModel:
  """Tokenizer + world model of IRIS as pure functions; build with `make_iris_model`.

  params = {'tokenizer': ..., 'world_model': ...}.
  """
  cfg: Any               # the resolved agent config
  act: ActionSpec
  tokenizer: TokenizerNet
  world_model: WorldModelNet
  # LPIPS(x, y) [N] on frames in [0, 1] (wm_jax/core/perceptual.py), from the user-supplied
  # tokenizer.lpips_weights; None: no perceptual term
  perceptual: Callable[[jax.Array, jax.Array], jax.Array] | None = None

  @property
  def K(self) -> int:
    return self.cfg.tokens_per_frame

  @property
  def max_len(self) -> int:
    return self.cfg.world_model.context * (self.K + 1)

  def init(self, key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    frame = jnp.zeros((1, RESOLUTION, RESOLUTION, 3), jnp.float32)
    action = jnp.zeros((1,) + self.act.shape, self.act.dtype)
    return {"tokenizer": self.tokenizer.init(k1, frame),
            "world_model": self.world_model.init(k2, jnp.zeros((1, self.K), jnp.int32), action)}

  # ------------------------------------------------------------------ tokenizer
  def tokenizer_loss(self, params, frames: jax.Array) -> tuple[jax.Array, dict]:
    """Tokenizer params, uint8 frames [N, 64, 64, 3] -> (loss [], metrics): L1 (or `tokenizer.reconstruction`) reconstruction + ||sg(z) - z_q||^2 + beta ||z - sg(z_q)||^2 + LPIPS(x, D(z)) (IRIS sec. 2.1, tokenizer.py compute_loss: equal weights; the LPIPS term only with user-supplied weights, see the config)."""
    x = to_unit(frames)
    z, z_q, tokens, rec = self.tokenizer.apply(params, x)
    codebook = jnp.mean(jnp.square(sg(z) - z_q))
    commitment = jnp.mean(jnp.square(z - sg(z_q)))
    reconstruction = jnp.mean(RECONSTRUCTION_LOSSES[self.cfg.tokenizer.reconstruction](x - rec))
    loss = codebook + self.cfg.tokenizer.commitment * commitment + reconstruction
    used = jnp.zeros(self.cfg.tokenizer.vocab).at[tokens.reshape(-1)].set(1.0).sum()
    metrics = {"codebook_loss": codebook, "commitment_loss": commitment,
               "reconstruction_loss": reconstruction, "codes_used": used}
    if self.perceptual is not None:   # IRIS feeds LPIPS the unclipped reconstruction
      metrics["perceptual_loss"] = jnp.mean(self.perceptual((x + 1) / 2, (rec + 1) / 2))
      loss = loss + metrics["perceptual_loss"]
    return loss, {"tokenizer_loss": loss, **metrics}

  def encode(self, params, frames: jax.Array) -> jax.Array:
    """Tokenizer params, uint8 frames [..., 64, 64, 3] -> int32 tokens [..., K]."""
    lead = frames.shape[:-3]
    x = to_unit(frames.reshape((-1,) + frames.shape[-3:]))
    z = self.tokenizer.apply(params, x, method=TokenizerNet.encode)
    tokens, _ = self.tokenizer.apply(params, z, method=TokenizerNet.quantize)
    return tokens.reshape(lead + (self.K,))

  def decode(self, params, tokens: jax.Array) -> jax.Array:
    """Tokenizer params, int tokens [..., K] -> float32 frames [..., 64, 64, 3] in [0, 1]."""
    lead = tokens.shape[:-1]
    z_q = self.tokenizer.apply(params, tokens.reshape(-1, self.K), method=TokenizerNet.lookup)
    rec = self.tokenizer.apply(params, z_q, method=TokenizerNet.decode)
    return jnp.clip((rec + 1.0) / 2.0, 0.0, 1.0).reshape(lead + rec.shape[1:])

  def reconstruct(self, params, frames: jax.Array) -> jax.Array:
    """uint8 frames [..., 64, 64, 3] -> D(E(x)) float32 in [0, 1] (the IRIS code's encode_decode, what the policy sees)."""
    return self.decode(params, self.encode(params, frames))

  # ------------------------------------------------------------------ world model training
  def sequence(self, wm_params, tokens: jax.Array, next_actions: jax.Array) -> jax.Array:
    """tokens [B, S, K], next_actions [B, S] (a_t taken at frame t) -> embeddings [B, S*(K+1), W] of z_0, a_0, ..., z_{S-1}, a_{S-1} (IRIS sec. 2.2)."""
    apply = lambda method, x: self.world_model.apply(wm_params, x, method=method)
    frames = apply(WorldModelNet.embed_frame, tokens)                     # [B, S, K, W]
    actions = apply(WorldModelNet.embed_action, next_actions)[:, :, None]  # [B, S, 1, W]
    x = jnp.concatenate([frames, actions.astype(frames.dtype)], 2)
    return x.reshape(x.shape[0], -1, x.shape[-1])

  def logits(self, wm_params, tokens: jax.Array, next_actions: jax.Array,
             mask: jax.Array | None = None):
    """Full causal forward: tokens [B, S, K], next_actions [B, S], mask [B, L, L] -> (obs logits [B, L, N], reward logits [B, S, 3], end logits [B, S, 2]), L = S*(K+1); obs logits at position p predict token p + 1."""
    h = self.world_model.apply(wm_params, self.sequence(wm_params, tokens, next_actions), mask,
                               method=WorldModelNet.features)
    obs = self.world_model.apply(wm_params, h, method=WorldModelNet.obs_logits)
    at_actions = h[:, self.K::self.K + 1]
    reward, end = self.world_model.apply(wm_params, at_actions,
                                         method=WorldModelNet.reward_end_logits)
    return obs, reward, end

  def world_model_loss(self, wm_params, tok_params, batch: dict) -> tuple[jax.Array, dict]:
    """Replay batch [B, T] -> (loss [], metrics): cross-entropy of next frame tokens + reward sign + episode end over the last min(T, context + 1) frames (IRIS sec. 2.2, world_model.py compute_loss).

    Step t pairs the tokens of image[:, t] with action[:, t + 1]; a step whose next frame
    starts an episode (is_first[:, t + 1]) has no labels, and attention never crosses an
    episode start. Tokens come from the tokenizer without gradient (IRIS trains E, D apart).
    """
    S = min(batch["is_first"].shape[1] - 1, self.cfg.world_model.context)
    window = lambda x: x[:, -(S + 1):]
    tokens = sg(self.encode(tok_params, window(batch["image"])))     # [B, S + 1, K]
    is_first = window(batch["is_first"])
    B, K = tokens.shape[0], self.K
    obs_logits, reward_logits, end_logits = self.logits(
        wm_params, tokens[:, :-1], window(batch["action"])[:, 1:],
        self._episode_mask(is_first[:, :-1]))
    valid = ~is_first[:, 1:]                                           # [B, S]: a real step
    # Targets of position p: token p + 1, i.e. within a block z^{k+1} (k < K - 1), nothing
    # at the last frame token (the action follows), z_{t+1}^1 at the action token.
    inner = tokens[:, :-1, 1:]                                        # [B, S, K - 1]
    targets = jnp.concatenate([inner, jnp.zeros((B, S, 1), jnp.int32),
                               tokens[:, 1:, :1]], 2).reshape(B, -1)
    weight = jnp.concatenate([jnp.ones((B, S, K - 1), bool), jnp.zeros((B, S, 1), bool),
                              valid[..., None]], 2).reshape(B, -1)
    obs_loss = losses.masked_mean(_cross_entropy(obs_logits, targets), weight)
    reward_label = (jnp.sign(window(batch["reward"])[:, 1:]) + 1).astype(jnp.int32)
    reward_loss = losses.masked_mean(_cross_entropy(reward_logits, reward_label), valid)
    end_label = window(batch["is_terminal"])[:, 1:].astype(jnp.int32)
    end_loss = losses.masked_mean(_cross_entropy(end_logits, end_label), valid)
    loss = obs_loss + reward_loss + end_loss
    return loss, {"world_model_loss": loss, "obs_token_loss": obs_loss,
                  "reward_loss": reward_loss, "end_loss": end_loss}

  def _episode_mask(self, is_first: jax.Array) -> jax.Array:
    """is_first [B, S] -> [B, L, L] True where two tokens' frames lie in the same episode, L = S*(K+1)."""
    episode = jnp.repeat(jnp.cumsum(is_first, 1), self.K + 1, 1)
    return episode[:, :, None] == episode[:, None, :]

  # ------------------------------------------------------------------ the world model as env
  def _feed(self, wm_params, cache, x: jax.Array):
    """Writes tokens x [B, L, W] into the cache one step at a time -> cache."""
    step = lambda c, x_t: (self.world_model.apply(wm_params, c, x_t,
                                                  method=WorldModelNet.step)[0], None)
    cache, _ = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
    return cache

  def reset_from(self, params, context: dict, key: jax.Array) -> SimState:
    """Real context {'image' uint8 [B, C, 64, 64, 3], 'action' [B, C] or [B, C, A] (led to each frame), optional 'is_first' bool [B, C]} -> sim state at its last frame: the cache holds z_0, a_1, ..., z_{C-1}, of which later tokens see only the last frame's episode (IRIS code: C = 1, `reset_from_initial_observations`).

    `key` is unused (the burn-in is deterministic); it keeps the env interface uniform.
    """
    del key
    tokens = self.encode(params["tokenizer"], context["image"])
    frame = self.decode(params["tokenizer"], tokens[:, -1])
    return self.reset_from_tokens(params, tokens, context["action"], frame,
                                  context.get("is_first"))

  def reset_from_tokens(self, params, tokens: jax.Array, actions: jax.Array, frame: jax.Array,
                        is_first: jax.Array | None = None) -> SimState:
    """`reset_from` on already encoded frames: tokens [B, C, K], actions [B, C] (led to each frame), frame [B, 64, 64, 3] = decode(tokens[:, -1]), is_first [B, C] or None -> sim state.

    Only the last `world_model.context - 1` frames are kept, so that the cache has room for
    the next step (a longer context would not fit it).
    """
    wm = params["world_model"]
    keep_frames = self.cfg.world_model.context - 1
    tokens, actions = tokens[:, -keep_frames:], actions[:, -keep_frames:]
    if is_first is not None:
      is_first = is_first[:, -keep_frames:]
    B, C = tokens.shape[:2]
    x = self.sequence(wm, tokens, jnp.roll(actions, -1, axis=1))[:, :-1]   # no a_{C-1}
    cache = self.world_model.apply(wm, B, method=WorldModelNet.init_cache)
    if is_first is not None:   # context frames before the last episode start are not attended
      episode = jnp.cumsum(is_first, 1)
      keep = jnp.repeat(episode == episode[:, -1:], self.K + 1, 1)[:, :-1]
      cache["keep"] = cache["keep"].at[:, :C * (self.K + 1) - 1].set(keep)
    return {"cache": self._feed(wm, cache, x), "tokens": tokens[:, -1], "frame": frame}

  def step(self, params, sim: SimState, action: jax.Array, key: jax.Array
           ) -> tuple[SimState, jax.Array, jax.Array, jax.Array]:
    """Sim state [B], action [B] or [B, A] -> (sim state, next observation {'image': float32 [B, 64, 64, 3] in [0, 1]}, reward [B] in {-1, 0, 1}, cont [B] in {0, 1}): K + 1 cached Transformer steps, sampling reward, end and each next token (IRIS sec. 2.3, WorldModelEnv.step).

    A cache without room for K + 1 more tokens is first refilled with the current frame.
    """
    wm = params["world_model"]
    apply = lambda *a, method: self.world_model.apply(wm, *a, method=method)

    def refresh(cache):
      empty = apply(sim["tokens"].shape[0], method=WorldModelNet.init_cache)
      return self._feed(wm, empty, apply(sim["tokens"], method=WorldModelNet.embed_frame))

    cache = jax.lax.cond(sim["cache"]["pos"] + self.K + 1 > self.max_len, refresh,
                         lambda c: c, sim["cache"])
    k_reward, k_end, k_first, k_tokens = jax.random.split(key, 4)
    cache, h = apply(cache, apply(action, method=WorldModelNet.embed_action),
                     method=WorldModelNet.step)
    reward_logits, end_logits = apply(h, method=WorldModelNet.reward_end_logits)
    reward = jax.random.categorical(k_reward, reward_logits).astype(jnp.float32) - 1.0
    cont = 1.0 - jax.random.categorical(k_end, end_logits).astype(jnp.float32)
    first = jax.random.categorical(k_first, apply(h, method=WorldModelNet.obs_logits))

    def next_token(carry, k):
      cache, token = carry
      cache, h = apply(cache, apply(token, method=WorldModelNet.embed_frame),
                       method=WorldModelNet.step)
      sampled = jax.random.categorical(k, apply(h, method=WorldModelNet.obs_logits))
      return (cache, sampled.astype(jnp.int32)), token

    (cache, _), tokens = jax.lax.scan(next_token, (cache, first.astype(jnp.int32)),
                                      jax.random.split(k_tokens, self.K))
    tokens = jnp.swapaxes(tokens, 0, 1)                                   # [B, K]
    frame = self.decode(params["tokenizer"], tokens)
    return {"cache": cache, "tokens": tokens, "frame": frame}, {"image": frame}, reward, cont


def make_iris_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> IrisModel:
  """The IRIS tokenizer + world model for the resolved agent config `cfg` and an env with `spec`."""
  if "image" not in spec.obs or tuple(spec.obs["image"].shape) != (RESOLUTION, RESOLUTION, 3):
    raise RunConfigError(
        f"IRIS needs 64x64x3 'image' observations but the env gives "
        f"{ {k: v.shape for k, v in spec.obs.items()} }: use an image env such as "
        f"env.suite='sprite' or the Atari/DMC-vision presets with image_size=64.")
  dtype = DTYPES[cfg.precision]
  tokenizer = TokenizerNet(cfg.tokenizer, channel_mults(cfg.tokenizer, cfg.tokens_per_frame),
                           dtype)
  world_model = WorldModelNet(cfg.world_model, cfg.tokenizer.vocab, cfg.tokens_per_frame,
                              spec.act, dtype)
  weights = cfg.tokenizer.lpips_weights
  perceptual = functools.partial(lpips, load_lpips_weights(weights)) if weights else None
  return IrisModel(cfg, spec.act, tokenizer, world_model, perceptual)
