"""STORM (Zhang et al. 2023, arXiv:2310.09615): a stochastic Transformer world model, as pure functions.

Model (paper sec. 3.1-3.2, Fig. 1; sizes from its code's config_files/STORM.yaml):
  z_t ~ q(z_t | o_t)                one 32 x 32 categorical latent per frame (1% unimix,
                                    straight-through), from a stride-2 CNN encoder;
  e_t = m([z_t, a_t])               one token per step (Linear-LN-ReLU-Linear-LN stem);
  h_{1:T} = f(e_{1:T})              a causal Transformer (2 post-LN blocks, width 512, 8 heads,
                                    learned positions, context 64): wm_jax/core/transformer.py;
  z^_{t+1} ~ p(z | h_t), r^_t = g_r(h_t), tau^_t = g_tau(h_t)
                                    prior over the next latent, twohot symlog reward and
                                    termination logit, all read h_t; the decoder reads z_t only.
Loss (paper eq. 4-5): reconstruction MSE + reward (twohot symlog) + termination BCE
+ 0.5 dynamics KL + 0.1 representation KL, each KL averaged then clipped below 1 nat
(`losses.mean_clipped_kl_loss`, as the code's CategoricalKLDivLossWithFreeBits).
Imagination (paper sec. 3.3): burn-in of a real context (8 steps) through the KV cache, then
16 imagined steps for a batch of 1024 starts, all in `lax.scan`; the imagination state is
s_t = [h_{t-1}, z_t] (`'deter'`, `'stoch'`), the features the DreamerV3 actor-critic reads.

Replay batches follow wm_jax/agents/base.py, where `action[:, t]` led to `obs[:, t]`, so
STORM's token t pairs z_t with `action[:, t + 1]`, and its reward and termination targets are
`reward[:, t + 1]` and `is_terminal[:, t + 1]`. Deviations from the paper's code, each named
in experiments/configs/storm.py: LayerNorm instead of BatchNorm in the CNNs, no dropout,
attention and losses never cross an episode start (the code ignores episode boundaries).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.core import losses
from wm_jax.core.distributions import TwoHotSymlog, sample_onehot_st, unimix_logits
from wm_jax.core.nets import MLP, PARAM_DTYPE, ConvDecoder, ConvEncoder, Head, dense
from wm_jax.core.transformer import CausalTransformer
from wm_jax.envs.base import EnvSpec
from wm_jax.models.rssm import (DTYPES, clip_action, decode_observation, decoded_observation,
                                embed_observation, encode_action, preprocess_image)

State = dict  # 'deter' h [..., D], 'stoch' z [..., S*K]; imagination starts add 'cache'.
sg = jax.lax.stop_gradient


def episode_mask(is_first: jax.Array) -> jax.Array:
  """[B, T] episode-start flags -> [B, T, T] True where two steps lie in the same episode."""
  episode = jnp.cumsum(is_first.astype(jnp.int32), 1)
  return episode[:, :, None] == episode[:, None, :]


class StormNet(nn.Module):
  """Encoder(s), posterior and prior heads, token stem, Transformer, decoder(s), reward and termination heads of STORM (paper Fig. 1)."""
  cfg: Any  # FrozenConfigDict: the STORM agent config
  obs_shapes: Any  # tuple of (key, shape) for 'image' [64, 64, C] and/or 'vector' [D]
  dtype: Any = jnp.float32

  def setup(self):
    c, shapes = self.cfg, dict(self.obs_shapes)
    e, d, t = c.encoder, c.decoder, c.transformer
    if "image" in shapes:
      self.enc_image = ConvEncoder(e.cnn_depth, e.cnn_mults, e.cnn_kernel, e.act, e.norm,
                                   self.dtype)
      self.dec_image = ConvDecoder(shapes["image"][-1], d.cnn_depth, d.cnn_mults, d.cnn_kernel,
                                   d.act, d.norm, self.dtype)
    if "vector" in shapes:
      self.enc_vector = MLP(e.units, e.layers, e.act, e.norm, self.dtype)
      self.dec_vector = Head(shapes["vector"], d.units, d.layers, 1.0, d.act, d.norm,
                             self.dtype)
    self.post_head = dense(c.stoch * c.classes, self.dtype)
    self.stem_in = MLP(t.width, 1, "relu", True, self.dtype)
    self.stem_out = dense(t.width, self.dtype, use_bias=False)
    self.stem_norm = nn.LayerNorm(dtype=self.dtype, param_dtype=PARAM_DTYPE)
    self.transformer = CausalTransformer(t.width, t.depth, t.heads, t.max_len, t.positions,
                                         t.mlp_ratio, t.pre_norm, t.act, self.dtype)
    self.prior_head = dense(c.stoch * c.classes, self.dtype)
    r, k = c.reward_head, c.term_head
    self.reward_head = Head((r.bins,), r.units, r.layers, r.outscale, r.act, r.norm, self.dtype)
    self.term_head = Head((), k.units, k.layers, k.outscale, k.act, k.norm, self.dtype)

  def _logits(self, raw: jax.Array) -> jax.Array:
    """[..., S*K] -> [..., S, K] log-probs with the 1% uniform mix (paper sec. 3.1)."""
    c = self.cfg
    raw = raw.astype(jnp.float32).reshape(raw.shape[:-1] + (c.stoch, c.classes))
    return unimix_logits(raw, c.unimix) if c.unimix else raw

  def post_logits(self, obs: dict) -> jax.Array:
    """obs dict [...] -> [..., S, K] posterior logits q(z_t | o_t)."""
    return self._logits(self.post_head(embed_observation(self, obs,
                                                         self.cfg.encoder.symlog_inputs)))

  def prior_logits(self, h: jax.Array) -> jax.Array:
    """[..., D] -> [..., S, K] prior logits p(z_{t+1} | h_t)."""
    return self._logits(self.prior_head(h))

  def token(self, stoch: jax.Array, action: jax.Array) -> jax.Array:
    """z [..., S*K], a [..., A] -> e [..., D] = LN(W2 ReLU(LN(W1 [z, a]))) (paper eq. 2, code's stem)."""
    x = self.stem_in(jnp.concatenate([stoch, action.astype(jnp.float32)], -1))
    return self.stem_norm(self.stem_out(x))

  def sequence(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """e [B, L, D], mask [B, L, L] -> h [B, L, D] (causal, and-ed with `mask`)."""
    return self.transformer(tokens, mask).astype(jnp.float32)

  def init_cache(self, batch: int):
    return self.transformer.init_cache(batch)

  def step(self, cache, token: jax.Array):
    """One cached Transformer step: e [N, D] -> (cache, h [N, D])."""
    cache, h = self.transformer.step(cache, token)
    return cache, h.astype(jnp.float32)

  def decode(self, stoch: jax.Array) -> dict:
    """z [..., S*K] -> {'image': [..., 64, 64, C] in [-0.5, 0.5] units, 'vector': [..., D] (symlog)}."""
    return decode_observation(self, stoch)

  def reward_out(self, h: jax.Array) -> jax.Array:
    """[..., D] -> [..., bins] twohot symlog reward logits."""
    return self.reward_head(h)

  def term_logit(self, h: jax.Array) -> jax.Array:
    """[..., D] -> [...] Bernoulli logit of termination."""
    return self.term_head(h)

  def __call__(self, obs: dict, action: jax.Array):
    """Touches every submodule once (obs [B, L], action [B, L, A]) so `init` creates all parameters."""
    stoch = self.post_logits(obs).reshape(action.shape[:2] + (-1,))
    h = self.sequence(self.token(stoch, action), jnp.ones((1,) + action.shape[1:2] * 2, bool))
    return (self.decode(stoch), self.prior_logits(h), self.reward_out(h), self.term_logit(h))


@dataclasses.dataclass(frozen=True)
class StormModel:
  """Pure functions of one STORM world model (DESIGN.md "The functional contract"); build with `make_storm_model`."""
  net: StormNet
  cfg: Any
  spec: EnvSpec

  @property
  def action_size(self) -> int:
    return self.spec.act.size

  @property
  def feat_size(self) -> int:
    """Size of the actor-critic's input s_t = [h_{t-1}, z_t]."""
    return self.cfg.transformer.width + self.cfg.stoch * self.cfg.classes

  def _apply(self, params, *args, method):
    return self.net.apply(params, *args, method=method)

  def init(self, key: jax.Array):
    """Params pytree of all STORM networks."""
    obs = {k: jnp.zeros((1, 2) + tuple(v.shape), v.dtype) for k, v in self.spec.obs.items()
           if k in ("image", "vector")}
    return self.net.init(key, obs, jnp.zeros((1, 2, self.action_size)))

  def _token_action(self, action: jax.Array) -> jax.Array:
    """Model-format action [..., A] as the token stem sees it (continuous: clipped into [-c, c])."""
    return clip_action(action.astype(jnp.float32), self.cfg.action_clip)

  # ------------------------------------------------------------------ acting and sequences
  def posterior(self, params, obs: dict, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """obs dict [...] -> (logits [..., S, K], straight-through sample z [..., S*K])."""
    logits = self._apply(params, obs, method=StormNet.post_logits)
    stoch = sample_onehot_st(key, logits)
    return logits, stoch.reshape(stoch.shape[:-2] + (-1,))

  def observe(self, params, stoch: jax.Array, action: jax.Array, is_first: jax.Array
              ) -> jax.Array:
    """z [B, L, S*K], a_t [B, L, A] (taken at z_t), is_first [B, L] -> h [B, L, D] (paper eq. 3), attention within each episode only."""
    tokens = self._apply(params, stoch, self._token_action(action), method=StormNet.token)
    return self._apply(params, tokens, episode_mask(is_first), method=StormNet.sequence)

  def context_feature(self, params, window: dict) -> jax.Array:
    """Acting: window {'stoch' [N, C, S*K], 'action' [N, C, A], 'valid' [N, C]} of the last C steps -> h [N, D] after its last token (zeros where no step is valid, i.e. at an episode start)."""
    valid = window["valid"]
    tokens = self._apply(params, window["stoch"], self._token_action(window["action"]),
                         method=StormNet.token)
    mask = jnp.broadcast_to(valid[:, None, :], valid.shape + valid.shape[-1:])
    h = self._apply(params, tokens, mask, method=StormNet.sequence)[:, -1]
    return jnp.where(jnp.any(valid, -1, keepdims=True), h, 0.0)

  # ------------------------------------------------------------------ heads
  def _bins(self) -> jax.Array:
    r = self.cfg.reward_head
    return losses.twohot_bins(r.bins, r.bin_low, r.bin_high)

  def reward(self, params, feat: jax.Array) -> jax.Array:
    """Imagination feature [..., D + Z] (h first) -> [...] predicted reward of the step that produced h."""
    out = self._apply(params, feat[..., :self.cfg.transformer.width],
                      method=StormNet.reward_out)
    return TwoHotSymlog(out, self._bins()).mean()

  def cont(self, params, feat: jax.Array) -> jax.Array:
    """Imagination feature [..., D + Z] -> [...] continuation: 1 - termination mode (code: termination_hat > 0), or 1 - its probability (`term_head.imagine='prob'`)."""
    logit = self._apply(params, feat[..., :self.cfg.transformer.width],
                        method=StormNet.term_logit).astype(jnp.float32)
    if self.cfg.term_head.imagine == "mode":
      return (logit <= 0).astype(jnp.float32)
    return 1.0 - jax.nn.sigmoid(logit)

  # ------------------------------------------------------------------ training
  def loss(self, params, batch: dict, key: jax.Array):
    """Replay batch [B, T] -> (loss [], (metrics, out)): paper eq. 4-5, reconstruction over all T frames, the other terms over the T - 1 transitions inside an episode.

    out: 'stoch' [B, T, S*K], the posterior samples (imagination contexts).
    """
    c = self.cfg
    is_first = batch["is_first"]
    obs = {k: batch[k] for k in ("image", "vector") if k in batch}
    post, stoch = self.posterior(params, obs, key)
    terms = {}
    dec = self._apply(params, stoch, method=StormNet.decode)
    if "image" in dec:
      terms["image"] = jnp.mean(losses.image_loss(dec["image"], preprocess_image(obs["image"])))
    if "vector" in dec:
      terms["vector"] = jnp.mean(losses.vector_loss(dec["vector"],
                                                    obs["vector"].astype(jnp.float32)))
    action = encode_action(self.spec.act, batch["action"][:, 1:])   # a_t taken at z_t
    h = self.observe(params, stoch[:, :-1], action, is_first[:, :-1])   # [B, T-1, D]
    inside = 1.0 - is_first[:, 1:].astype(jnp.float32)   # t -> t+1 within one episode
    rew_out = self._apply(params, h, method=StormNet.reward_out)
    reward_nll = -TwoHotSymlog(rew_out, self._bins()).log_prob(batch["reward"][:, 1:])
    terms["reward"] = losses.masked_mean(reward_nll, inside)
    term = distrax.Bernoulli(logits=self._apply(params, h, method=StormNet.term_logit))
    terms["term"] = losses.masked_mean(
        -term.log_prob(batch["is_terminal"][:, 1:].astype(jnp.float32)), inside)
    prior = self._apply(params, h, method=StormNet.prior_logits)
    k = c.kl
    kl_loss, dyn, rep = losses.mean_clipped_kl_loss(post[:, 1:], prior, k.free_nats,
                                                    k.dyn_scale, k.rep_scale, inside)
    total = kl_loss + sum(c.loss_scales[name] * value for name, value in terms.items())
    metrics = {f"{name}_loss": value for name, value in terms.items()}
    metrics.update(dyn_loss=dyn, rep_loss=rep, model_loss=total,
                   kl=losses.masked_mean(losses.kl_categorical(post[:, 1:], prior), inside))
    return total, (metrics, {"stoch": stoch})

  # ------------------------------------------------------------------ imagination
  def imagination_starts(self, params, stoch: jax.Array, batch: dict, key: jax.Array
                         ) -> tuple[State, jax.Array]:
    """Burn-in (paper sec. 3.3): `imag_batch` windows of `imag_context` steps drawn from the batch's posterior samples z [B, T, S*K], run through the KV cache -> (start {'deter' h_e, 'stoch' z^_{e+1} ~ p(z | h_e), 'cache'} [N], start continuation [N]).

    A window may cross an episode start: its steps before the start stay in the cache but are
    never attended to (cache['keep']). Windows whose next frame starts an episode are not
    drawn (their last action is a reset placeholder); a start on a terminal frame gets
    continuation 0.
    """
    c = self.cfg
    C, N = c.imag_context, c.imag_batch
    B, T = batch["is_first"].shape
    E = T - C                                        # window ends e = C-1 .. T-2 per row
    ends = jnp.arange(C - 1, T - 1)
    drawable = ~batch["is_first"][:, ends + 1]                          # [B, E]
    k_pick, k_prior = jax.random.split(key)
    flat = jax.random.categorical(k_pick, jnp.where(drawable.reshape(-1), 0.0, -jnp.inf),
                                  shape=(N,))
    row, end = flat // E, flat % E + C - 1
    take = lambda x, first: jax.vmap(
        lambda b, s: jax.lax.dynamic_slice_in_dim(x[b], s, C, 0))(row, first)
    episode = jnp.cumsum(batch["is_first"].astype(jnp.int32), 1)
    ctx_episode = take(episode, end - C + 1)                            # [N, C]
    ctx_stoch = take(stoch, end - C + 1)                # z_{e-C+1..e}       [N, C, S*K]
    ctx_action = take(encode_action(self.spec.act, batch["action"]), end - C + 2)  # a at each z
    cache, h = self.burn_in(params, ctx_stoch, ctx_action,
                            ctx_episode == ctx_episode[:, -1:])
    z = self._sample_prior(params, h, k_prior)
    terminal = batch["is_terminal"][row, end + 1].astype(jnp.float32)
    start_cont = drawable.reshape(-1)[flat].astype(jnp.float32) * (1.0 - terminal)
    return {"deter": h, "stoch": z, "cache": cache}, start_cont

  def burn_in(self, params, stoch: jax.Array, action: jax.Array, keep: jax.Array):
    """Context z [N, C, S*K], a [N, C, A], keep [N, C] (False: not part of the current episode) -> (KV cache after C cached steps, h [N, D] of the last step)."""
    N, C = keep.shape
    cache = self._apply(params, N, method=StormNet.init_cache)
    if C == 0:
      return cache, jnp.zeros((N, self.cfg.transformer.width), jnp.float32)
    tokens = self._apply(params, stoch, self._token_action(action), method=StormNet.token)
    cache["keep"] = cache["keep"].at[:, :C].set(keep)

    def step(cache, token):
      return self._apply(params, cache, token, method=StormNet.step)

    cache, hs = jax.lax.scan(step, cache, jnp.swapaxes(tokens, 0, 1))
    return cache, hs[-1]

  def _sample_prior(self, params, h: jax.Array, key: jax.Array) -> jax.Array:
    """h [N, D] -> straight-through sample z^ [N, S*K] of p(z | h)."""
    sample = sample_onehot_st(key, self._apply(params, h, method=StormNet.prior_logits))
    return sample.reshape(sample.shape[:-2] + (-1,))

  def imagine(self, params, policy: Callable[[State, jax.Array], jax.Array], start: State,
              horizon: int, key: jax.Array) -> tuple[State, jax.Array]:
    """Rolls the Transformer under `policy(state [N], key) -> [N, A]` from `start` (with its KV cache), one cached step per imagined step: -> (states {'deter', 'stoch'} [N, H+1] incl. start, actions [N, H]) (paper sec. 3.3)."""
    def step(carry, k):
      cache, state = carry
      k1, k2 = jax.random.split(k)
      action = policy(state, k1)
      token = self._apply(params, state["stoch"], self._token_action(action),
                          method=StormNet.token)
      cache, h = self._apply(params, cache, token, method=StormNet.step)
      nxt = {"deter": h, "stoch": self._sample_prior(params, h, k2)}
      return (cache, nxt), (nxt, action)

    first = {"deter": start["deter"], "stoch": start["stoch"]}
    _, (states, actions) = jax.lax.scan(step, (start["cache"], first),
                                        jax.random.split(key, horizon))
    states = jax.tree.map(lambda s, x: jnp.concatenate([s[None], x], 0), first, states)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return jax.tree.map(swap, states), swap(actions)


  # ------------------------------------------------------------------ the world model as env
  def reset_from(self, params, context: dict, key: jax.Array) -> State:
    """Real context {'image' uint8 [N, C, 64, 64, 3] and/or 'vector', 'action' [N, C] or [N, C, A] (led to each frame)} of one episode -> sim state {'cache' after C - 1 steps, 'stoch' z_{C-1}} at its last frame; `step` takes C - 1 + steps <= max_len."""
    obs = {k: context[k] for k in ("image", "vector") if k in context}
    _, stoch = self.posterior(params, obs, key)                         # [N, C, S*K]
    action = encode_action(self.spec.act, context["action"])
    cache, _ = self.burn_in(params, stoch[:, :-1], action[:, 1:],
                            jnp.ones(stoch.shape[:1] + (stoch.shape[1] - 1,), bool))
    return {"cache": cache, "stoch": stoch[:, -1]}

  def step(self, params, sim: State, action: jax.Array, key: jax.Array
           ) -> tuple[State, dict, jax.Array, jax.Array]:
    """Sim state [N], env action [N] or [N, A] -> (sim state, decoded next observation {'image' float32 [N, 64, 64, C] in [0, 1] and/or 'vector'}, reward [N], cont [N]): one cached Transformer step and a prior sample (paper sec. 3.3)."""
    token = self._apply(params, sim["stoch"],
                        self._token_action(encode_action(self.spec.act, action)),
                        method=StormNet.token)
    cache, h = self._apply(params, sim["cache"], token, method=StormNet.step)
    stoch = self._sample_prior(params, h, key)
    obs = decoded_observation(self._apply(params, stoch, method=StormNet.decode),
                              symlog_vector=True)
    feat = jnp.concatenate([h, stoch], -1)
    return ({"cache": cache, "stoch": stoch}, obs, self.reward(params, feat),
            self.cont(params, feat))


def make_storm_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> StormModel:
  """The STORM world model of an agent config (experiments/configs/storm.py) for an env with `spec`."""
  frozen = ml_collections.FrozenConfigDict(cfg)
  shapes = tuple((k, tuple(v.shape)) for k, v in sorted(spec.obs.items())
                 if k in ("image", "vector"))
  return StormModel(StormNet(frozen, shapes, DTYPES[cfg.precision]), frozen, spec)
