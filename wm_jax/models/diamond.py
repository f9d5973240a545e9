"""DIAMOND: a diffusion world model (EDM denoiser + reward/termination model) as pure functions.

DIAMOND (Alonso et al. 2024, "Diffusion for world modeling: visual details matter in Atari",
arXiv:2405.12399; code eloialonso/diamond) and DWM (../shared/seeds/003, sec. 4):
  * Next-frame model (sec. 2-3; DWM sec. 4.1-4.2): an EDM denoiser D(x, sigma) =
    c_skip x + c_out F(c_in x, c_noise, o_{t-H+1..t}, a_{t-H+1..t}) (wm_jax/core/edm.py) whose
    network F is a frame-stack or cross-attention U-Net (wm_jax/models/diffusion.py), H = 4
    previous frames and the actions taken at them. Trained on single steps (DIAMOND's
    `num_autoregressive_steps: 1`) with observation/action dropout for classifier-free
    guidance (DWM sec. 4.2.2; rate 0 in DIAMOND).
  * Reward/termination model (DIAMOND rew_end_model.py): a separate CNN-LSTM over transitions
    (o_t, a_t, o_{t+1}) predicting the reward's sign (3 classes) and the episode end (2).
  * Imagination (DIAMOND envs/world_model_env.py): each step samples the next frame with
    `sampler.num_steps` Euler (or Heun) steps of the Karras schedule, conditioned on the last H
    frames and actions (and optionally guided, DWM eq. 4), quantised to 8 bits after every
    denoiser call; then samples reward and end from the reward/end model.

The world model stands in for an env (DESIGN.md): `reset_from(params, context, key)` and
`step(params, sim, action, key) -> (sim, obs, reward, cont)` are pure and jit/scan-able, so
the whole imagination (sampler steps x horizon) is one `lax.scan`.

Conventions. Replay batches follow wm_jax/agents/base.py (`action[:, t]` led to `obs[:, t]`),
so DIAMOND's a_t, the action taken at frame t, is action[:, t + 1] here. Frames enter as uint8
[..., h, w, 3]; the models work on x / 127.5 - 1 in [-1, 1]; imagined frames leave as float32
[B, h, w, 3] in [0, 1]. Frames of another episode inside a conditioning window are padding:
zeros (mid-grey), their actions 0, as DIAMOND's segments padded at an episode start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.core import edm, losses
from wm_jax.envs.base import ActionSpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.diffusion import RewardEndNet, make_denoiser_net

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SimState = dict  # 'frames' [B, H, h, w, 3] in [-1, 1], 'actions' int32 [B, H - 1], 'carry', 'frame' [B, h, w, 3] in [0, 1]


def to_unit(frames: jax.Array) -> jax.Array:
  """uint8 frames [...] -> float32 in [-1, 1] (DIAMOND's obs.div(255).mul(2).sub(1))."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[..., C] logits, int [...] labels -> [...] -log softmax(logits)[label]."""
  return -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), labels[..., None], -1)[..., 0]


def same_episode_as_last(is_first: jax.Array) -> jax.Array:
  """is_first [B, L] -> bool [B, L]: True where a step lies in the episode of the window's last step."""
  episode = jnp.cumsum(is_first, 1)
  return episode == episode[:, -1:]


def edm_config(cfg: ml_collections.ConfigDict) -> edm.EDMConfig:
  """The `denoiser.edm` section as an EDMConfig."""
  return edm.EDMConfig(**cfg.denoiser.edm.to_dict())


def sampler_config(cfg: ml_collections.ConfigDict) -> edm.SamplerConfig:
  """The `denoiser.sampler` section as a SamplerConfig (one sentence on impossible values)."""
  return edm.SamplerConfig(**cfg.denoiser.sampler.to_dict())


@dataclasses.dataclass(frozen=True)
class DiamondModel:
  """Denoiser + reward/end model of DIAMOND as pure functions; build with `make_diamond_model`.

  params = {'denoiser': ..., 'reward_end': ...}.
  """
  cfg: Any               # the resolved agent config
  act: ActionSpec
  image_shape: tuple     # (h, w, 3)
  denoiser_net: nn.Module
  reward_end_net: RewardEndNet

  @property
  def H(self) -> int:
    return self.cfg.denoiser.num_cond_frames

  def init(self, key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    frame = jnp.zeros((1,) + self.image_shape, jnp.float32)
    history = jnp.zeros((1, self.H) + self.image_shape, jnp.float32)
    action = jnp.zeros((1,), jnp.int32)
    return {"denoiser": self.denoiser_net.init(k1, frame, jnp.zeros((1,)), history,
                                               jnp.zeros((1, self.H), jnp.int32)),
            "reward_end": self.reward_end_net.init(k2, self.zero_carry(1), frame, action, frame)}

  def zero_carry(self, n: int) -> tuple:
    zeros = jnp.zeros((n, self.cfg.reward_end.lstm), jnp.float32)
    return (zeros, zeros)

  # ------------------------------------------------------------------ denoiser
  def network(self, params, prev_frames: jax.Array, prev_actions: jax.Array,
              keep_obs: jax.Array | None = None, keep_act: jax.Array | None = None):
    """The EDM network F(c_in x [B, h, w, 3], c_noise [B]) conditioned on prev_frames [B, H, h, w, 3] in [-1, 1] and the actions taken at them, int32 [B, H]."""
    return lambda x, c_noise: self.denoiser_net.apply(params, x, c_noise, prev_frames,
                                                      prev_actions, keep_obs, keep_act)

  def guided_denoiser(self, params, prev_frames: jax.Array, prev_actions: jax.Array):
    """D(x [B, h, w, 3], sigma [B]) for sampling: EDM denoising (DWM eq. 2) of the conditional network, guided with weight `denoiser.cfg_weight` against the action-dropped one (DWM eq. 4; w = 0: conditional only), quantised to 8 bits (DIAMOND Denoiser.wrap_model_output)."""
    w, cfg = self.cfg.denoiser.cfg_weight, edm_config(self.cfg)
    cond = self.network(params, prev_frames, prev_actions)
    if w:
      no_act = jnp.zeros(prev_actions.shape[:1], bool)
      uncond = self.network(params, prev_frames, prev_actions, keep_act=no_act)
      net = lambda x, c: edm.cfg_combine(cond(x, c), uncond(x, c), w)
    else:
      net = cond
    return lambda x, sigma: edm.quantize_frame(edm.denoise(net, x, sigma, cfg))

  def conditioning(self, frames: jax.Array, actions: jax.Array, is_first: jax.Array):
    """A window of H frames [B, H, h, w, 3] in [-1, 1], the actions taken at them [B, H] and is_first [B, H + 1] (the window and the frame to predict) -> (frames, actions) with the steps of earlier episodes zeroed (DIAMOND's padding)."""
    keep = same_episode_as_last(is_first)[:, :-1]
    frames = jnp.where(keep[:, :, None, None, None], frames, 0.0)
    return frames, jnp.where(keep, actions, 0)

  def denoiser_loss(self, params, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
    """Replay batch [B, T] -> (loss [], metrics): the EDM loss (DWM eq. 3) of predicting each sequence's last frame from the H before it and the actions taken at them, with observation and action dropout (`denoiser.obs_dropout`, `act_dropout`; DWM sec. 4.2.2)."""
    c, H = self.cfg.denoiser, self.H
    frames = to_unit(batch["image"][:, -(H + 1):])                     # [B, H + 1, h, w, 3]
    actions = batch["action"][:, -H:].astype(jnp.int32)                # taken at frames 0..H-1
    prev, prev_actions = self.conditioning(frames[:, :-1], actions,
                                           batch["is_first"][:, -(H + 1):])
    k_obs, k_act, k_loss = jax.random.split(key, 3)
    B = frames.shape[0]
    keep_obs = edm.drop_conditioning(k_obs, (B,), c.obs_dropout)
    keep_act = edm.drop_conditioning(k_act, (B,), c.act_dropout)
    net = self.network(params, prev, prev_actions, keep_obs, keep_act)
    loss, _ = edm.denoising_loss(net, frames[:, -1], k_loss, edm_config(self.cfg))
    return loss, {"denoiser_loss": loss}

  # ------------------------------------------------------------------ reward / end
  def reward_end_step(self, params, carry, frame, action, next_frame):
    """One transition [N] (frames in [-1, 1]) -> (carry, reward-sign logits [N, 3], end logits [N, 2])."""
    return self.reward_end_net.apply(params, carry, frame, action, next_frame)

  def _transitions(self, params, carry, frames: jax.Array, next_actions: jax.Array,
                   next_is_first: jax.Array):
    """Runs the reward/end model over transitions frames[:, t] -> frames[:, t + 1] under next_actions[:, t] [B, L - 1]: all transitions encoded at once, then the LSTM over time, its carry restarting at 0 where next_is_first [B, L - 1] (a transition into a new episode is no transition) -> (carry, reward logits [B, L - 1, 3], end logits [B, L - 1, 2])."""
    B, L = frames.shape[:2]
    flat = lambda x: x.reshape((B * (L - 1),) + x.shape[2:])
    features = self.reward_end_net.apply(params, flat(frames[:, :-1]), flat(next_actions),
                                         flat(frames[:, 1:]), method=RewardEndNet.encode)

    def step(carry, xs):
      feature, first = xs
      carry, reward, end = self.reward_end_net.apply(params, carry, feature,
                                                     method=RewardEndNet.recur)
      carry = jax.tree.map(lambda c: jnp.where(first[:, None], 0.0, c), carry)
      return carry, (reward, end)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    carry, (reward, end) = jax.lax.scan(
        step, carry, (swap(features.reshape(B, L - 1, -1)), swap(next_is_first)))
    return carry, swap(reward), swap(end)

  def reward_end_loss(self, params, batch: dict) -> tuple[jax.Array, dict]:
    """Replay batch [B, T] -> (loss [], metrics): cross-entropy of the reward's sign and of the episode end over the T - 1 transitions that stay in one episode (DIAMOND RewEndModel.forward)."""
    frames = to_unit(batch["image"])
    is_first = batch["is_first"][:, 1:]
    _, reward_logits, end_logits = self._transitions(
        params, self.zero_carry(frames.shape[0]), frames,
        batch["action"][:, 1:].astype(jnp.int32), is_first)
    valid = ~is_first
    reward_label = (jnp.sign(batch["reward"][:, 1:]) + 1).astype(jnp.int32)
    reward_loss = losses.masked_mean(_cross_entropy(reward_logits, reward_label), valid)
    end_loss = losses.masked_mean(
        _cross_entropy(end_logits, batch["is_terminal"][:, 1:].astype(jnp.int32)), valid)
    loss = reward_loss + end_loss
    return loss, {"reward_end_loss": loss, "reward_loss": reward_loss, "end_loss": end_loss}

  # ------------------------------------------------------------------ the world model as env
  def reset_from(self, params, context: dict, key: jax.Array) -> SimState:
    """Real context {'image' uint8 [B, C, h, w, 3], 'action' [B, C] (led to each frame), optional 'is_first' bool [B, C]}, C >= H -> sim state at its last frame: the last H frames as conditioning and the reward/end LSTM burnt in on the context's transitions (DIAMOND WorldModelEnv.make_generator_init). `key` is unused."""
    del key
    image, action = context["image"], context["action"].astype(jnp.int32)
    B, C = action.shape
    is_first = context.get("is_first")
    if is_first is None:
      is_first = jnp.zeros((B, C), bool).at[:, 0].set(True)
    frames = to_unit(image)
    carry, _, _ = self._transitions(params["reward_end"], self.zero_carry(B), frames,
                                    action[:, 1:], is_first[:, 1:])
    H = self.H
    # The action taken at the last frame is the one `step` is given: pad it for the mask.
    taken = jnp.concatenate([action[:, -H + 1:], jnp.zeros((B, 1), jnp.int32)], 1)
    window_first = jnp.concatenate([is_first[:, -H:], jnp.zeros((B, 1), bool)], 1)
    cond_frames, cond_actions = self.conditioning(frames[:, -H:], taken, window_first)
    return {"frames": cond_frames, "actions": cond_actions[:, :-1], "carry": carry,
            "frame": (frames[:, -1] + 1.0) / 2.0}

  def step(self, params, sim: SimState, action: jax.Array, key: jax.Array
           ) -> tuple[SimState, dict, jax.Array, jax.Array]:
    """Sim state [B], action int [B] -> (sim state, next observation {'image': float32 [B, h, w, 3] in [0, 1]}, reward [B] in {-1, 0, 1}, cont [B] in {0, 1}): the next frame sampled by the EDM sampler, then reward and end sampled from the reward/end model (DIAMOND WorldModelEnv.step)."""
    k_sample, k_reward, k_end = jax.random.split(key, 3)
    action = action.astype(jnp.int32)
    actions = jnp.concatenate([sim["actions"], action[:, None]], 1)      # [B, H]
    denoiser = self.guided_denoiser(params["denoiser"], sim["frames"], actions)
    shape = sim["frames"].shape[:1] + sim["frames"].shape[2:]
    next_frame = edm.sample(denoiser, k_sample, shape, sampler_config(self.cfg))
    carry, reward_logits, end_logits = self.reward_end_step(
        params["reward_end"], sim["carry"], sim["frames"][:, -1], action, next_frame)
    reward = jax.random.categorical(k_reward, reward_logits).astype(jnp.float32) - 1.0
    cont = 1.0 - jax.random.categorical(k_end, end_logits).astype(jnp.float32)
    frame = (next_frame + 1.0) / 2.0
    sim = {"frames": jnp.concatenate([sim["frames"][:, 1:], next_frame[:, None]], 1),
           "actions": actions[:, 1:], "carry": carry, "frame": frame}
    return sim, {"image": frame}, reward, cont


def make_diamond_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> DiamondModel:
  """The DIAMOND denoiser + reward/end model for the resolved agent config `cfg` and an env with `spec` (one sentence unless it has image observations and discrete actions)."""
  if "image" not in spec.obs:
    raise RunConfigError(
        f"DIAMOND models 'image' observations but the env gives {sorted(spec.obs)}: use an "
        f"image env such as env.suite='sprite' or the Atari preset.")
  if not spec.act.discrete:
    raise RunConfigError(
        "DIAMOND embeds discrete actions (its denoiser and reward model use action tables): "
        "use a discrete-action env such as Atari or sprite.")
  dtype = DTYPES[cfg.precision]
  r = cfg.reward_end
  return DiamondModel(cfg, spec.act, tuple(spec.obs["image"].shape),
                      make_denoiser_net(cfg.denoiser, spec.act.num_actions, dtype),
                      RewardEndNet(tuple(r.channels), tuple(r.depths), r.cond_channels, r.lstm,
                                   spec.act.num_actions, dtype))
