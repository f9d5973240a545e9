"""Recurrent state-space world models of the Dreamer family as pure functions over params.

One module, three papers, chosen by config fields (see experiments/configs/dreamerv{1,2,3}.py):
  DreamerV1 (Hafner et al. 2020, arXiv:1912.01603): Gaussian latents (`rssm.classes = 0`),
    KL with free nats 3 (`kl.kind = 'gaussian'`), plain GRU, MSE image/reward heads.
  DreamerV2 (Hafner et al. 2021, arXiv:2010.02193): 32 x 32 categorical latents with
    straight-through samples, KL balancing 0.8 (`kl.kind = 'balance'`), LayerNorm GRU.
  DreamerV3 (Hafner et al. 2023, arXiv:2301.04104 v1): categorical latents with a 1% uniform
    mix, free bits 1 with beta_dyn 0.5 / beta_rep 0.1 (`kl.kind = 'free_bits'`), symlog
    inputs, symlog-MSE vector and plain MSE image losses, twohot symlog reward, Bernoulli
    continue, learned initial state.

Model (DreamerV3 eq. 1): h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) (GRU), z_t ~ q(z_t | h_t, x_t)
(posterior), z^_t ~ p(z_t | h_t) (prior), heads on the feature s_t = [h_t, z_t].

A model state is a dict of arrays with a leading batch shape `[...]`:
  'deter' [..., D] (h), 'stoch' [..., S*K] one-hot groups (categorical) or [..., S] (Gaussian),
  and the distribution's statistics: 'logits' [..., S, K], or 'mean' and 'std' [..., S].
Replay batches follow wm_jax/agents/base.py: `action[:, t]` is the action that led to
`obs[:, t]` (a_{t-1} in the paper's indexing), zeros where `is_first`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.core import losses
from wm_jax.core.distributions import (TwoHotSymlog, gaussian_std, onehot_mode,
                                       sample_onehot_st, unimix_logits)
from wm_jax.core.nets import MLP, ConvDecoder, ConvEncoder, GRUCell, Head, dense
from wm_jax.envs.base import EnvSpec

State = dict
sg = jax.lax.stop_gradient
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def feat_of(state: State) -> jax.Array:
  """[..., D + Z] model feature s_t = concat(h_t, z_t) that every head reads (DreamerV3 eq. 1)."""
  return jnp.concatenate([state["deter"], state["stoch"]], -1)


def tree_where(mask: jax.Array, a, b):
  """Per-batch-entry select of two pytrees with leading axis [B]: a where mask [B] else b."""
  def pick(x, y):
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x, y)
  return jax.tree.map(pick, a, b)


def clip_action(action: jax.Array, clip: float) -> jax.Array:
  """[..., A] action scaled into [-clip, clip] with a stop-gradient scale, a * sg(c / max(c, |a|)), so imagined actions match the env-clipped ones in replay while gradients still pass (DreamerV3 2023 code, nets.RSSM.img_step); clip 0 leaves it unchanged."""
  if not clip:
    return action
  return action * sg(clip / jnp.maximum(clip, jnp.abs(action)))


def encode_action(act_spec, action: jax.Array) -> jax.Array:
  """Env action (int32 [...] or float32 [..., A]) -> float32 [..., A] model input (one-hot for discrete)."""
  if act_spec.discrete:
    return jax.nn.one_hot(action, act_spec.num_actions, dtype=jnp.float32)
  return action.astype(jnp.float32)


def embed_observation(module: nn.Module, obs: dict, symlog_inputs: bool) -> jax.Array:
  """obs dict [..., ...] -> [..., E]: `module.enc_image` of the scaled image and/or `module.enc_vector` of the (DreamerV3: symlog'ed, sec. "Robust predictions") vector, concatenated."""
  parts = []
  if "image" in obs:
    parts.append(module.enc_image(preprocess_image(obs["image"])))
  if "vector" in obs:
    vec = obs["vector"].astype(jnp.float32)
    parts.append(module.enc_vector(losses.symlog(vec) if symlog_inputs else vec))
  return jnp.concatenate(parts, -1).astype(jnp.float32)


def decode_observation(module: nn.Module, x: jax.Array) -> dict:
  """[..., F] -> {'image': `module.dec_image(x)`, 'vector': `module.dec_vector(x)`} for the decoders the module has."""
  return {key: getattr(module, f"dec_{key}")(x) for key in ("image", "vector")
          if hasattr(module, f"dec_{key}")}


def decoded_observation(dec: dict, symlog_vector: bool) -> dict:
  """Decoder means {'image' [..., H, W, C] in [-0.5, 0.5] units, 'vector' [..., D]} -> the
  observation as an env gives it: 'image' float32 in [0, 1], 'vector' (symexp'd where the decoder
  predicts symlog space). Shared by the RSSM and STORM world-model envs."""
  obs = {}
  if "image" in dec:
    obs["image"] = jnp.clip(dec["image"].astype(jnp.float32) + 0.5, 0.0, 1.0)
  if "vector" in dec:
    vector = dec["vector"].astype(jnp.float32)
    obs["vector"] = losses.symexp(vector) if symlog_vector else vector
  return obs


def preprocess_image(image: jax.Array) -> jax.Array:
  """uint8 [..., 64, 64, C] -> float32 in [-0.5, 0.5], only ever inside jit (DreamerV1-V3 image scaling)."""
  return image.astype(jnp.float32) / 255.0 - 0.5


class RSSMNet(nn.Module):
  """The RSSM cells: img_in + GRU (deterministic path), prior head p(z|h) and posterior head q(z|h, e) (DreamerV3 eq. 1, DreamerV2 App. A)."""
  cfg: Any  # FrozenConfigDict: the agent config's `rssm` section (sizes resolved)
  dtype: Any = jnp.float32

  def setup(self):
    c = self.cfg
    self.img_in = MLP(c.hidden, 1, c.act, c.norm, self.dtype)
    self.gru = GRUCell(c.deter, c.gru_norm, c.gru_update_bias, self.dtype)
    self.img_out = MLP(c.hidden, 1, c.act, c.norm, self.dtype)
    self.prior_head = dense(self.stats_size, self.dtype)
    self.obs_out = MLP(c.hidden, 1, c.act, c.norm, self.dtype)
    self.post_head = dense(self.stats_size, self.dtype)
    if c.initial == "learned":
      self.init_deter = self.param("init_deter", nn.initializers.zeros, (c.deter,))

  @property
  def stats_size(self) -> int:
    c = self.cfg
    return c.stoch * c.classes if c.classes else 2 * c.stoch

  def _stats(self, raw: jax.Array) -> dict:
    """[..., stats_size] -> distribution statistics ('logits' [..., S, K] with unimix, or 'mean'/'std' [..., S])."""
    c = self.cfg
    raw = raw.astype(jnp.float32)
    if c.classes:
      logits = raw.reshape(raw.shape[:-1] + (c.stoch, c.classes))
      return {"logits": unimix_logits(logits, c.unimix) if c.unimix else logits}
    mean, raw_std = jnp.split(raw, 2, -1)
    return {"mean": mean, "std": gaussian_std(raw_std, c.min_std)}

  def _sample(self, stats: dict, key: jax.Array) -> jax.Array:
    """Straight-through one-hot sample flattened to [..., S*K], or reparameterised Gaussian [..., S]."""
    if self.cfg.classes:
      onehot = sample_onehot_st(key, stats["logits"])
      return onehot.reshape(onehot.shape[:-2] + (-1,))
    return stats["mean"] + stats["std"] * jax.random.normal(key, stats["mean"].shape)

  def initial(self, batch: int) -> State:
    """[batch] start state: h0 = tanh(learned) and z0 = prior mode (DreamerV3), or all zeros (DreamerV1/V2)."""
    c = self.cfg
    if c.initial == "learned":
      deter = jnp.broadcast_to(jnp.tanh(self.init_deter), (batch, c.deter))
      stats = self._stats(self.prior_head(self.img_out(deter)))
      if c.classes:
        stoch = onehot_mode(stats["logits"]).reshape(batch, -1)
      else:
        stoch = stats["mean"]
      return {"deter": deter, "stoch": stoch, **stats}
    deter = jnp.zeros((batch, c.deter), jnp.float32)
    if c.classes:
      stats = {"logits": jnp.zeros((batch, c.stoch, c.classes), jnp.float32)}
      return {"deter": deter, "stoch": jnp.zeros((batch, c.stoch * c.classes)), **stats}
    zeros = jnp.zeros((batch, c.stoch), jnp.float32)
    return {"deter": deter, "stoch": zeros, "mean": zeros, "std": jnp.ones_like(zeros)}

  def img_step(self, prev: State, prev_action: jax.Array, key: jax.Array) -> State:
    """([B] state, [B, A] action) -> [B] prior state: h_t = GRU(h_{t-1}, img_in[z_{t-1}, a_{t-1}]), z_t ~ p(z_t | h_t) (DreamerV3 eq. 1, sequence + dynamics models)."""
    prev_action = clip_action(prev_action.astype(jnp.float32), self.cfg.action_clip)
    x = self.img_in(jnp.concatenate([prev["stoch"], prev_action], -1))
    deter = self.gru(prev["deter"], x)
    stats = self._stats(self.prior_head(self.img_out(deter)))
    return {"deter": deter, "stoch": self._sample(stats, key), **stats}

  def obs_step(self, prev: State, prev_action: jax.Array, embed: jax.Array,
               is_first: jax.Array, key: jax.Array) -> tuple[State, State]:
    """([B] state, [B, A] action, [B, E] embedding, [B] is_first) -> (posterior, prior) [B]; resets to `initial` where is_first (DreamerV3 eq. 1, encoder q(z_t | h_t, x_t))."""
    init = self.initial(prev["deter"].shape[0])
    prev = tree_where(is_first, init, prev)
    prev_action = jnp.where(is_first[:, None], 0.0, prev_action)
    k1, k2 = jax.random.split(key)
    prior = self.img_step(prev, prev_action, k1)
    x = self.obs_out(jnp.concatenate([prior["deter"], embed.astype(jnp.float32)], -1))
    stats = self._stats(self.post_head(x))
    post = {"deter": prior["deter"], "stoch": self._sample(stats, k2), **stats}
    return post, prior


class WorldModelNet(nn.Module):
  """Encoder(s), RSSM, decoder(s), reward head and continue head of one Dreamer world model (DreamerV3 eq. 1 and App. B)."""
  cfg: Any  # FrozenConfigDict: the resolved agent config
  obs_shapes: Any  # tuple of (key, shape) for 'image' [64, 64, C] and/or 'vector' [D]
  dtype: Any = jnp.float32

  def setup(self):
    c, shapes = self.cfg, dict(self.obs_shapes)
    e, d = c.encoder, c.decoder
    if "image" in shapes:
      self.enc_image = ConvEncoder(e.cnn_depth, e.cnn_mults, e.cnn_kernel, e.act, e.norm,
                                   self.dtype)
      self.dec_image = ConvDecoder(shapes["image"][-1], d.cnn_depth, d.cnn_mults, d.cnn_kernel,
                                   d.act, d.norm, self.dtype)
    if "vector" in shapes:
      self.enc_vector = MLP(e.units, e.layers, e.act, e.norm, self.dtype)
      self.dec_vector = Head(shapes["vector"], d.units, d.layers, 1.0, d.act, d.norm,
                             self.dtype)
    self.rssm = RSSMNet(c.rssm, self.dtype)
    r = c.reward_head
    self.reward_head = Head((r.bins,) if r.dist == "symlog_twohot" else (), r.units, r.layers,
                            r.outscale, r.act, r.norm, self.dtype)
    if c.cont_head.enabled:
      k = c.cont_head
      self.cont_head = Head((), k.units, k.layers, k.outscale, k.act, k.norm, self.dtype)

  def embed(self, obs: dict) -> jax.Array:
    """obs dict [..., ...] -> [..., E] concatenated encoder outputs (see `embed_observation`)."""
    return embed_observation(self, obs, self.cfg.encoder.symlog_inputs)

  def decode(self, feat: jax.Array) -> dict:
    """[..., F] -> {'image': [..., 64, 64, C] mean in [-0.5, 0.5], 'vector': [..., D] (symlog space in DreamerV3)}."""
    return decode_observation(self, feat)

  def reward_out(self, feat: jax.Array) -> jax.Array:
    """[..., F] -> [..., bins] twohot logits (DreamerV3) or [...] reward mean (DreamerV1/V2)."""
    return self.reward_head(feat)

  def cont_logit(self, feat: jax.Array) -> jax.Array:
    """[..., F] -> [...] Bernoulli logit of continuing (DreamerV2 discount head / DreamerV3 continue head)."""
    return self.cont_head(feat)

  def initial(self, batch: int) -> State:
    return self.rssm.initial(batch)

  def img_step(self, prev, prev_action, key):
    return self.rssm.img_step(prev, prev_action, key)

  def obs_step(self, prev, prev_action, embed, is_first, key):
    return self.rssm.obs_step(prev, prev_action, embed, is_first, key)

  def __call__(self, obs: dict, action: jax.Array, is_first: jax.Array, key: jax.Array):
    """Touches every submodule once ([B] inputs) so `init` creates all parameters."""
    post, _ = self.obs_step(self.initial(is_first.shape[0]), action, self.embed(obs), is_first,
                            key)
    feat = feat_of(post)
    out = {"decode": self.decode(feat), "reward": self.reward_out(feat)}
    if self.cfg.cont_head.enabled:
      out["cont"] = self.cont_logit(feat)
    return out


@dataclasses.dataclass(frozen=True)
class WorldModel:
  """Pure functions of one RSSM world model (DESIGN.md "The functional contract"); build with `make_world_model`."""
  net: WorldModelNet
  cfg: Any
  spec: EnvSpec

  # ------------------------------------------------------------------ sizes and actions
  @property
  def action_size(self) -> int:
    return self.spec.act.size

  @property
  def feat_size(self) -> int:
    r = self.cfg.rssm
    return r.deter + (r.stoch * r.classes if r.classes else r.stoch)

  def encode_action(self, action: jax.Array) -> jax.Array:
    """Env action (int32 [...] or float32 [..., A]) -> float32 [..., A] model input."""
    return encode_action(self.spec.act, action)

  # ------------------------------------------------------------------ params and steps
  def init(self, key: jax.Array):
    """Params pytree of all world-model networks."""
    obs = {k: jnp.zeros((1,) + tuple(v.shape), v.dtype) for k, v in self.spec.obs.items()
           if k in ("image", "vector")}
    k1, k2 = jax.random.split(key)
    return self.net.init(k1, obs, jnp.zeros((1, self.action_size)), jnp.ones((1,), bool), k2)

  def initial(self, params, batch: int) -> State:
    """[batch] start state (learned in DreamerV3, zeros in V1/V2)."""
    return self.net.apply(params, batch, method=WorldModelNet.initial)

  def embed(self, params, obs: dict) -> jax.Array:
    """obs dict [...] -> [..., E] encoder embedding."""
    return self.net.apply(params, obs, method=WorldModelNet.embed)

  def obs_step(self, params, prev: State, prev_action: jax.Array, embed: jax.Array,
               is_first: jax.Array, key: jax.Array) -> tuple[State, State]:
    """One filtering step for acting: ([B] state, [B, A], [B, E], [B]) -> (posterior, prior) [B]."""
    return self.net.apply(params, prev, prev_action, embed, is_first, key,
                          method=WorldModelNet.obs_step)

  def img_step(self, params, prev: State, action: jax.Array, key: jax.Array) -> State:
    """One imagination step: ([B] state, [B, A] action) -> [B] prior state."""
    return self.net.apply(params, prev, action, key, method=WorldModelNet.img_step)

  # ------------------------------------------------------------------ sequences
  def observe(self, params, start: State, embed: jax.Array, action: jax.Array,
              is_first: jax.Array, key: jax.Array) -> tuple[State, State]:
    """Filters a sequence: ([B] start, [B, T, E], [B, T, A], [B, T]) -> (posteriors, priors) [B, T] (DreamerV3 eq. 1, lax.scan over T)."""
    chex.assert_rank([embed, action, is_first], [3, 3, 2])
    chex.assert_equal_shape_prefix([embed, action, is_first], 2)
    keys = jax.random.split(key, embed.shape[1])

    def step(prev, xs):
      emb, act, first, k = xs
      post, prior = self.obs_step(params, prev, act, emb, first, k)
      return post, (post, prior)

    xs = (jnp.swapaxes(embed, 0, 1), jnp.swapaxes(action, 0, 1), jnp.swapaxes(is_first, 0, 1),
          keys)
    _, (post, prior) = jax.lax.scan(step, start, xs)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return jax.tree.map(swap, post), jax.tree.map(swap, prior)

  def imagine(self, params, policy: Callable[[State, jax.Array], jax.Array], start: State,
              horizon: int, key: jax.Array) -> tuple[State, jax.Array]:
    """Rolls the prior under `policy(state [N], key) -> [N, A]` from start [N]: -> (states [N, H+1] incl. start, actions [N, H]) (DreamerV3 sec. "Actor critic learning", imagination)."""
    def step(state, k):
      k1, k2 = jax.random.split(k)
      action = policy(state, k1)
      nxt = self.img_step(params, state, action, k2)
      return nxt, (nxt, action)

    _, (states, actions) = jax.lax.scan(step, start, jax.random.split(key, horizon))
    states = jax.tree.map(lambda s, x: jnp.concatenate([s[None], x], 0), start, states)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return jax.tree.map(swap, states), swap(actions)

  # ------------------------------------------------------------------ the world model as env
  def reset_from(self, params, context: dict, key: jax.Array) -> dict:
    """Real context {'image' uint8 [B, C, H, W, 3] and/or 'vector', 'action' [B, C] or
    [B, C, A] (led to each frame), optional 'is_first' bool [B, C]} -> sim state {'state': the
    posterior [B] at the context's last frame}, filtered from the initial state (eq. 1)."""
    obs = {k: context[k] for k in ("image", "vector") if k in context}
    B, C = context["action"].shape[:2]
    is_first = jnp.asarray(context.get("is_first", jnp.zeros((B, C), bool)), bool)
    post, _ = self.observe(params, self.initial(params, B), self.embed(params, obs),
                           self.encode_action(context["action"]), is_first.at[:, 0].set(True),
                           key)
    return {"state": jax.tree.map(lambda x: x[:, -1], post)}

  def step(self, params, sim: dict, action: jax.Array, key: jax.Array
           ) -> tuple[dict, dict, jax.Array, jax.Array]:
    """Sim state [B], env action [B] or [B, A] -> (sim state, decoded next observation {'image'
    float32 [B, H, W, 3] in [0, 1] and/or 'vector'}, reward [B], cont [B]): one prior step."""
    state = self.img_step(params, sim["state"], self.encode_action(action), key)
    feat = feat_of(state)
    dec = self.net.apply(params, feat, method=WorldModelNet.decode)
    obs = decoded_observation(dec, self.cfg.decoder.symlog_vector)
    return {"state": state}, obs, self.reward(params, feat), self.cont(params, feat)

  # ------------------------------------------------------------------ heads
  def reward(self, params, feat: jax.Array) -> jax.Array:
    """[..., F] -> [...] predicted reward (twohot symlog mean in DreamerV3, Gaussian mean in V1/V2)."""
    out = self.net.apply(params, feat, method=WorldModelNet.reward_out)
    if self.cfg.reward_head.dist == "symlog_twohot":
      return TwoHotSymlog(out, self._bins()).mean()
    return out

  def cont(self, params, feat: jax.Array) -> jax.Array:
    """[..., F] -> [...] imagined continuation: the continue head's Bernoulli mode (`cont_head.imagine='mode'`, DreamerV3 2023 code) or probability ('prob', 2024 code, DreamerV2's discount mean); ones without a continue head (DreamerV1)."""
    if not self.cfg.cont_head.enabled:
      return jnp.ones(feat.shape[:-1], jnp.float32)
    logit = self.net.apply(params, feat, method=WorldModelNet.cont_logit).astype(jnp.float32)
    if self.cfg.cont_head.imagine == "mode":
      return (logit > 0).astype(jnp.float32)
    return jax.nn.sigmoid(logit)

  def _bins(self) -> jax.Array:
    r = self.cfg.reward_head
    return losses.twohot_bins(r.bins, r.bin_low, r.bin_high)

  # ------------------------------------------------------------------ training
  def loss(self, params, batch: dict, key: jax.Array):
    """Replay batch [B, T] -> (loss [], (metrics, out)): reconstruction + reward + continue + KL, averaged over B and T (DreamerV3 eq. 5; DreamerV2 eq. 2; DreamerV1 eq. 10).

    out: 'post' (posterior states [B, T], the imagination starts), 'feat' [B, T, F],
    'embed' [B, T, E] (the encoder's output).
    """
    c = self.cfg
    is_first = batch["is_first"]
    chex.assert_rank(is_first, 2)
    B = is_first.shape[0]
    obs = {k: batch[k] for k in ("image", "vector") if k in batch}
    embed = self.embed(params, obs)
    action = self.encode_action(batch["action"])
    post, prior = self.observe(params, self.initial(params, B), embed, action, is_first, key)
    feat = feat_of(post)
    terms = {}
    dec = self.net.apply(params, feat, method=WorldModelNet.decode)
    if "image" in dec:
      terms["image"] = losses.image_loss(dec["image"], preprocess_image(obs["image"]))
    if "vector" in dec:
      target = obs["vector"].astype(jnp.float32)
      terms["vector"] = (losses.vector_loss(dec["vector"], target) if c.decoder.symlog_vector
                         else jnp.sum(jnp.square(dec["vector"] - target), -1))
    # Plan2Explore's task-agnostic representation: the reward head reads sg(feat) when
    # reward_head.stop_grad (reference code: freeze_extrinsic_heads); absent = False.
    rew_feat = sg(feat) if c.reward_head.get("stop_grad", False) else feat
    rew_out = self.net.apply(params, rew_feat, method=WorldModelNet.reward_out)
    reward = batch["reward"].astype(jnp.float32)
    if c.reward_transform == "tanh":   # DreamerV2 App. C (Atari)
      reward = jnp.tanh(reward)
    if c.reward_head.dist == "symlog_twohot":
      terms["reward"] = -TwoHotSymlog(rew_out, self._bins()).log_prob(reward)
    else:
      terms["reward"] = 0.5 * jnp.square(rew_out - reward)
    if c.cont_head.enabled:
      logit = self.net.apply(params, feat, method=WorldModelNet.cont_logit)
      cont = 1.0 - batch["is_terminal"].astype(jnp.float32)
      terms["cont"] = -distrax.Bernoulli(logits=logit).log_prob(cont)
    chex.assert_shape(list(terms.values()), is_first.shape)
    kl_loss, kl_metrics = self._kl(post, prior)
    scales = c.loss_scales
    total = kl_loss + sum(scales[k] * jnp.mean(v) for k, v in terms.items())
    metrics = {f"{k}_loss": jnp.mean(v) for k, v in terms.items()}
    metrics.update(kl_metrics)
    metrics["model_loss"] = total
    return total, (metrics, {"post": post, "feat": feat, "embed": embed})

  def _kl(self, post: State, prior: State) -> tuple[jax.Array, dict]:
    """Posterior/prior states [B, T] -> (scaled KL loss [], metrics) for the configured kind."""
    k = self.cfg.kl
    if k.kind == "free_bits":     # DreamerV3 sec. "World model learning"
      loss, dyn, rep = losses.dreamerv3_kl_loss(post["logits"], prior["logits"], k.free_nats,
                                                k.dyn_scale, k.rep_scale)
      raw = losses.kl_categorical(post["logits"], prior["logits"])
      return jnp.mean(loss), {"dyn_loss": jnp.mean(dyn), "rep_loss": jnp.mean(rep),
                              "kl": jnp.mean(raw)}
    if k.kind == "balance":       # DreamerV2 Algorithm 2
      loss = losses.dreamerv2_kl_loss(post["logits"], prior["logits"], k.balance, k.free_nats)
      raw = losses.kl_categorical(post["logits"], prior["logits"])
      return k.scale * loss, {"kl_loss": loss, "kl": jnp.mean(raw)}
    loss = losses.gaussian_kl_loss(post["mean"], post["std"], prior["mean"], prior["std"],
                                   k.free_nats)   # DreamerV1 sec. 4 / eq. 10
    return k.scale * loss, {"kl_loss": loss}


def make_world_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """The world model of a resolved agent config (sizes filled in, see agents/dreamer.py) for an env with `spec`."""
  frozen = ml_collections.FrozenConfigDict(cfg)
  shapes = tuple((k, tuple(v.shape)) for k, v in sorted(spec.obs.items())
                 if k in ("image", "vector"))
  net = WorldModelNet(frozen, shapes, DTYPES[cfg.precision])
  return WorldModel(net, frozen, spec)
