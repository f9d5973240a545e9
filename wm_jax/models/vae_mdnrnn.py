"""Ha & Schmidhuber's World Models (2018, arXiv:1803.10122): the vision model V (a VAE of
64 x 64 frames to z, 32 dims) and the memory model M (an MDN-RNN: an LSTM over [z_t, a_t]
whose output is a mixture of Gaussians per dimension of z_{t+1}), as pure functions.

V (paper sec. 2.1 and App. A.1): frame -> conv encoder -> mu, log sigma of q(z | frame);
reconstruction L2 plus a KL to N(0, I) that is not penalised below `kl_tolerance` nats per
dimension (the reference code's kl_tolerance 0.5: 16 nats in all for z 32).
Deviation, named: the conv stacks are the suite's DreamerV3 ones (wm_jax/core/nets.py:
ConvEncoder / ConvDecoder with the paper's channels 32-64-128-256, kernel 4, ReLU, no norm,
'same' padding to a 4 x 4 bottleneck) instead of the paper's 'valid'-padded 2 x 2 one, and the
decoder's output is the image mean in [-0.5, 0.5] (the suite's image units) instead of a sigmoid.

M (sec. 2.2 and App. A.2): LSTM (256 units), input [z_t, a_t], state h_{t+1}; from h_{t+1}, for
each dimension of z_{t+1}, a mixture of 5 Gaussians (log pi, mu, log sigma), trained by the
mixture's negative log-likelihood (`mdn_log_prob`); sampling at temperature tau divides the
logits of pi by tau and multiplies sigma by sqrt(tau) (sec. 2.2, "temperature"). It also
predicts the reward r_{t+1} (MSE) and the end of the episode (Bernoulli), which the dream needs
(the paper's DoomTakeCover model predicts the end only; CarRacing's dream needs the reward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from wm_jax.core.losses import masked_mean
from wm_jax.core.nets import ConvDecoder, ConvEncoder
from wm_jax.models.rssm import preprocess_image

LOG_SQRT_2PI = 0.5 * jnp.log(2.0 * jnp.pi)


class VAENet(nn.Module):
  """Frames [..., 64, 64, 3] uint8 -> (mu, log sigma) [..., Z]; z [..., Z] -> image mean [..., 64, 64, 3] in [-0.5, 0.5]."""
  z_size: int = 32
  depth: int = 32

  def setup(self):
    self.encoder = ConvEncoder(self.depth, (1, 2, 4, 8), 4, "relu", False)
    self.stats = nn.Dense(2 * self.z_size)
    self.decoder = ConvDecoder(3, self.depth, (1, 2, 4, 8), 4, "relu", False)

  def encode(self, image):
    mu, log_sigma = jnp.split(self.stats(self.encoder(preprocess_image(image))), 2, -1)
    return mu, log_sigma

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, image):
    mu, _ = self.encode(image)
    return self.decode(mu)


def sample_latent(mu: jax.Array, log_sigma: jax.Array, key: jax.Array) -> jax.Array:
  """z [..., Z] ~ q(z | frame) = N(mu, sigma^2) (reparameterised): what V gives M in training
  and C in the real env, as in Ha's code (encode_obs; the MDN-RNN's random_batch)."""
  return mu + jnp.exp(log_sigma) * jax.random.normal(key, mu.shape)


def vae_loss(net: VAENet, params, image: jax.Array, key: jax.Array, kl_tolerance: float):
  """image uint8 [B, 64, 64, 3] -> (loss, metrics): per frame, the summed squared error of the reconstruction from a sampled z plus max(KL(q(z|x) || N(0, I)), kl_tolerance * Z) (reference code)."""
  mu, log_sigma = net.apply(params, image, method=VAENet.encode)
  recon = net.apply(params, sample_latent(mu, log_sigma, key), method=VAENet.decode)
  error = jnp.sum(jnp.square(recon - preprocess_image(image)), (-3, -2, -1))
  kl = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(2 * log_sigma) - 1.0 - 2 * log_sigma, -1)
  kl_term = jnp.maximum(kl, kl_tolerance * mu.shape[-1])
  loss = jnp.mean(error + kl_term)
  return loss, {"vae_loss": loss, "recon_error": jnp.mean(error), "kl": jnp.mean(kl)}


def mdn_log_prob(log_pi: jax.Array, mu: jax.Array, log_sigma: jax.Array,
                 x: jax.Array) -> jax.Array:
  """log p(x) [..., Z] of x [..., Z] under a per-dimension mixture of K Gaussians, params [..., Z, K]: logsumexp_k (log pi_k + log N(x; mu_k, sigma_k)) (World Models eq. in sec. 2.2 / Bishop 1994); log_pi normalised over K."""
  z = (x[..., None] - mu) * jnp.exp(-log_sigma)
  log_normal = -0.5 * jnp.square(z) - log_sigma - LOG_SQRT_2PI
  return jax.nn.logsumexp(log_pi + log_normal, axis=-1)


def mdn_sample(key: jax.Array, log_pi: jax.Array, mu: jax.Array, log_sigma: jax.Array,
               temperature: float) -> jax.Array:
  """One sample [..., Z] of the mixture [..., Z, K] at temperature tau: component ~ softmax(log_pi / tau), then N(mu_k, sigma_k^2 * tau) (sec. 2.2)."""
  k1, k2 = jax.random.split(key)
  component = jax.random.categorical(k1, log_pi / temperature, axis=-1)
  pick = lambda p: jnp.take_along_axis(p, component[..., None], -1)[..., 0]
  noise = jax.random.normal(k2, component.shape)
  return pick(mu) + pick(jnp.exp(log_sigma)) * jnp.sqrt(temperature) * noise


class MDNRNNNet(nn.Module):
  """One step: (carry (c, h) [N, U] each, z_t [N, Z], a_t [N, A]) -> (carry, out) with out 'log_pi', 'mu', 'log_sigma' [N, Z, K] for z_{t+1}, 'reward' [N], 'end_logit' [N]."""
  z_size: int = 32
  units: int = 256
  mixtures: int = 5

  def setup(self):
    self.cell = nn.OptimizedLSTMCell(self.units)
    self.mixture = nn.Dense(3 * self.z_size * self.mixtures)
    self.heads = nn.Dense(2)

  def __call__(self, carry, z, action):
    carry, h = self.cell(carry, jnp.concatenate([z, action], -1))
    raw = self.mixture(h).reshape(h.shape[:-1] + (self.z_size, self.mixtures, 3))
    log_pi = jax.nn.log_softmax(raw[..., 0], -1)
    reward, end_logit = jnp.moveaxis(self.heads(h), -1, 0)
    return carry, {"log_pi": log_pi, "mu": raw[..., 1], "log_sigma": raw[..., 2],
                   "reward": reward, "end_logit": end_logit}


@dataclasses.dataclass(frozen=True)
class MDNRNN:
  """Pure functions of M: initial state, one step, the sequence loss and a dream step."""
  net: MDNRNNNet

  def initial(self, batch: int):
    """Zero LSTM state ((c, h), [N, U] each)."""
    zeros = jnp.zeros((batch, self.net.units), jnp.float32)
    return (zeros, zeros)

  def hidden(self, carry) -> jax.Array:
    """h [N, U], the part of the state the controller reads."""
    return carry[1]

  def init(self, key: jax.Array, action_size: int):
    return self.net.init(key, self.initial(1), jnp.zeros((1, self.net.z_size)),
                         jnp.zeros((1, action_size)))

  def step(self, params, carry, z, action):
    return self.net.apply(params, carry, z, action)

  def unroll(self, params, carry, z: jax.Array, action: jax.Array, first: jax.Array):
    """M over z [B, T, Z] and the actions [B, T, A] taken at them from `carry`, its state reset
    to zero before each z_t that starts an episode (first bool [B, T]) -> (carry after the
    last step, outputs [B, T, ...] for z_{t+1})."""
    def scan_step(carry, xs):
      z_t, a_t, first_t = xs
      carry = jax.tree.map(lambda c: jnp.where(first_t[:, None], 0.0, c), carry)
      return self.step(params, carry, z_t, a_t)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    carry, out = jax.lax.scan(scan_step, carry, (swap(z), swap(action), swap(first)))
    return carry, jax.tree.map(swap, out)

  def loss(self, params, z: jax.Array, action: jax.Array, reward: jax.Array, end: jax.Array,
           first: jax.Array | None = None):
    """Sequences [B, T]: z [B, T, Z] (sampled from V), action [B, T, A] taken at z_t, reward and end [B, T] received after it, optional first bool [B, T] (z_t starts an episode: M is reset before it and the transition into it is left out; default: one episode per sequence) -> (loss, metrics): the mixture NLL of z_{t+1} per dimension, plus reward MSE and end BCE, averaged over the T-1 transitions that stay inside one episode."""
    first = jnp.zeros(z.shape[:2], bool) if first is None else first
    _, out = self.unroll(params, self.initial(z.shape[0]), z[:, :-1], action[:, :-1],
                         first[:, :-1])
    nll = -jnp.mean(mdn_log_prob(out["log_pi"], out["mu"], out["log_sigma"], z[:, 1:]), -1)
    reward_error = jnp.square(out["reward"] - reward[:, :-1])
    end_nll = optax.sigmoid_binary_cross_entropy(out["end_logit"], end[:, :-1])
    terms = {"z_nll": nll, "reward_mse": reward_error, "end_bce": end_nll}
    metrics = {k: masked_mean(v, ~first[:, 1:]) for k, v in terms.items()}
    loss = metrics["z_nll"] + metrics["reward_mse"] + metrics["end_bce"]
    return loss, {"rnn_loss": loss, **metrics}

  def dream_step(self, params, carry, z, action, key, temperature: float):
    """One imagined step: (state, z_t, a_t) -> (state, z_{t+1} sampled at tau, predicted reward, end probability)."""
    carry, out = self.step(params, carry, z, action)
    z_next = mdn_sample(key, out["log_pi"], out["mu"], out["log_sigma"], temperature)
    return carry, z_next, out["reward"], jax.nn.sigmoid(out["end_logit"])


def make_mdnrnn(cfg: Any) -> MDNRNN:
  """M for the `rnn` config section (z_size, units, mixtures)."""
  return MDNRNN(MDNRNNNet(cfg.z_size, cfg.units, cfg.mixtures))


@dataclasses.dataclass(frozen=True)
class VisionMemoryModel:
  """V and M as one world model of env steps in the suite's alignment (the action and reward at
  step t led *to* frame t): their losses on a replay batch [B, T] and the world-model-as-env
  interface (`reset_from`, `step`; wm_jax/agents/base.py) for offline open-loop rollouts.
  Actions are one-hot of `num_actions` (discrete) or the env's vector (num_actions None)."""
  vae: VAENet
  rnn: MDNRNN
  kl_tolerance: float
  temperature: float
  action_size: int
  num_actions: int | None

  def init(self, key: jax.Array) -> dict:
    k_vae, k_rnn = jax.random.split(key)
    return {"vae": self.vae.init(k_vae, jnp.zeros((1, 64, 64, 3), jnp.uint8)),
            "rnn": self.rnn.init(k_rnn, self.action_size)}

  def encode_action(self, action: jax.Array) -> jax.Array:
    """Env actions [...] (int) or [..., A] -> M's input [..., A] float32."""
    if self.num_actions is None:
      return action.astype(jnp.float32)
    return jax.nn.one_hot(action, self.num_actions, dtype=jnp.float32)

  def latents(self, vae_params, image: jax.Array, key: jax.Array) -> jax.Array:
    """Frames uint8 [..., 64, 64, 3] -> z [..., Z] sampled from V's q(z | frame)."""
    mu, log_sigma = self.vae.apply(vae_params, image, method=VAENet.encode)
    return sample_latent(mu, log_sigma, key)

  def vae_loss(self, vae_params, batch: dict, key: jax.Array):
    """V's loss (`vae_loss`) on every frame of the batch [B, T]."""
    frames = batch["image"].reshape((-1,) + batch["image"].shape[2:])
    return vae_loss(self.vae, vae_params, frames, key, self.kl_tolerance)

  def rnn_loss(self, rnn_params, vae_params, batch: dict, key: jax.Array):
    """M's loss on the batch [B, T] in M's alignment: z from V (no gradient to V), the action
    taken at z_t and the reward and end received after it, which the suite stores at t + 1;
    the LSTM reset at episode starts and transitions across them left out."""
    z = jax.lax.stop_gradient(self.latents(vae_params, batch["image"], key))
    after = lambda x: jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], 1)
    return self.rnn.loss(rnn_params, z, after(self.encode_action(batch["action"])),
                         after(batch["reward"].astype(jnp.float32)),
                         after(batch["is_terminal"].astype(jnp.float32)), batch["is_first"])

  def reset_from(self, params, context: dict, key: jax.Array) -> dict:
    """Real context {'image' uint8 [B, C, 64, 64, 3], 'action' [B, C] or [B, C, A] (led to each
    frame), optional 'is_first' bool [B, C]} -> sim {'carry': M's state after z_0 .. z_{C-2}
    and the actions taken at them, 'z': z_{C-1}}, each z sampled from V's q(z | frame)."""
    z = self.latents(params["vae"], context["image"], key)
    B, C = z.shape[:2]
    first = context.get("is_first")
    first = jnp.zeros((B, C), bool).at[:, 0].set(True) if first is None else first
    taken = self.encode_action(context["action"][:, 1:])
    carry, _ = self.rnn.unroll(params["rnn"], self.rnn.initial(B), z[:, :-1], taken,
                               first[:, :-1])
    carry = jax.tree.map(lambda c: jnp.where(first[:, -1:], 0.0, c), carry)
    return {"carry": carry, "z": z[:, -1]}

  def step(self, params, sim: dict, action: jax.Array, key: jax.Array):
    """Sim [B], action taken at its frame [B] or [B, A] -> (sim, {'image': V's decoding of
    z_{t+1} sampled by M at `temperature`, float32 [B, 64, 64, 3] in [0, 1]}, reward [B], cont
    [B]: 0 where M's end probability passes 0.5, as the dream (sec. 4))."""
    carry, z, reward, end = self.rnn.dream_step(params["rnn"], sim["carry"], sim["z"],
                                                self.encode_action(action), key,
                                                self.temperature)
    image = jnp.clip(self.vae.apply(params["vae"], z, method=VAENet.decode) + 0.5, 0.0, 1.0)
    return {"carry": carry, "z": z}, {"image": image}, reward, (end < 0.5).astype(jnp.float32)
