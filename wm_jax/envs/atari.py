"""Atari-100k through envpool: 64x64 RGB frames, the protocol written down as a card.

Every envpool option is passed explicitly, because envpool's defaults (84x84 gray, 4-frame
stack, fire reset on) are a different protocol. What envpool does internally, checked in
tests/test_envs_atari.py:
  * frame skip 4 with a max-pool over the last two raw frames of each agent step;
  * no-op starts draw 1..noop_max no-ops (never 0), so `noop_max=0` here means one fixed
    no-op, the closest envpool gets to a deterministic start;
  * with `episodic_life` a lost life ends the episode (`terminated`), and the following
    reset keeps the game running (it only plays 1..noop_max no-ops); `info['terminated']`
    is the ALE's game-over flag, which tells a lost life from the real end of the game;
  * next-step auto-reset: the step after a done returns the reset frame and ignores the action.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wm_jax.envs import base


@dataclasses.dataclass(frozen=True)
class AtariProtocol:
  """The Atari-100k protocol card (defaults: DreamerV3's Atari-100k setting, raw rewards).

  image_size: frames are [image_size, image_size, 3] RGB uint8 (area resize of 210x160).
  frame_skip: emulator frames per agent step, max-pooled over the last two.
  sticky_prob: ALE repeat_action_probability (0.25 gives the sticky-action protocol of STORM).
  noop_max: random no-ops (1..noop_max) at the start of each episode; 0 = one fixed no-op.
  fire_reset: press FIRE after reset in games that need it.
  full_action_space: 18 actions instead of the game's minimal set.
  max_episode_frames: time limit in emulator frames (108k = 30 min of play), a truncation.
  life_loss_terminal: training episodes end at each lost life (is_last and is_terminal), as
    IRIS and STORM train; always off in evaluation, where scores count whole games.
  """
  image_size: int = 64
  frame_skip: int = 4
  sticky_prob: float = 0.0
  noop_max: int = 30
  fire_reset: bool = False
  full_action_space: bool = False
  max_episode_frames: int = 108_000
  life_loss_terminal: bool = False


def atari_games() -> list[str]:
  """Every Atari game envpool ships, in envpool's spelling without '-v5' ('MsPacman')."""
  from envpool.atari.registration import atari_game_list
  return ["".join(part.capitalize() for part in game.split("_")) for game in atari_game_list]


def _envpool_kwargs(protocol: AtariProtocol) -> dict[str, Any]:
  """Every envpool Atari option, spelled out from the protocol card."""
  return dict(
      img_height=protocol.image_size, img_width=protocol.image_size, gray_scale=False,
      stack_num=1, use_inter_area_resize=True, frame_skip=protocol.frame_skip,
      noop_max=max(protocol.noop_max, 1),  # envpool draws from 1..noop_max; 0 is undefined.
      use_fire_reset=protocol.fire_reset,
      repeat_action_probability=protocol.sticky_prob,
      full_action_space=protocol.full_action_space,
      max_episode_steps=protocol.max_episode_frames // protocol.frame_skip,
      episodic_life=protocol.life_loss_terminal, zero_discount_on_life_loss=False,
      reward_clip=False)


def to_hwc(obs: np.ndarray) -> np.ndarray:
  """envpool's [N, 3, H, W] uint8 frames -> [N, H, W, 3]."""
  return np.ascontiguousarray(obs.transpose(0, 2, 3, 1))


class EnvpoolPixelEnv:
  """N envpool envs with RGB frames and discrete actions behind the Step dict of
  wm_jax.envs.base (auto-reset flags, [N, H, W, 3] frames); subclasses set `_env`, `spec`,
  `num_envs` and may override `_game_over`."""

  def _set_spec(self, size: int) -> None:
    """The EnvSpec of [size, size, 3] frames and the envpool env's discrete actions."""
    self.spec = base.EnvSpec(
        obs={"image": base.ArraySpec((size, size, 3), "uint8")},
        act=base.ActionSpec(discrete=True, num_actions=int(self._env.action_space.n)))
    self._was_last = np.zeros(self.num_envs, bool)

  def _game_over(self, is_last, terminated, truncated, info):
    """is_game_over [N] of a step; None: the same as is_last."""
    del is_last, terminated, truncated, info
    return None

  def reset(self) -> base.Step:
    """Starts every env: 'image' uint8 [N, image_size, image_size, 3], is_first all True."""
    obs, _ = self._env.reset()
    self._was_last = np.zeros(self.num_envs, bool)
    return {"image": to_hwc(obs), **base.first_step_flags(self.num_envs)}

  def step(self, actions: np.ndarray) -> base.Step:
    """One agent step (frame_skip frames) of every env; actions int [N]."""
    obs, reward, terminated, truncated, info = self._env.step(np.asarray(actions, np.int32))
    is_last = terminated | truncated
    flags = base.auto_reset_flags(self._was_last, reward, is_last, terminated,
                                  self._game_over(is_last, terminated, truncated, info))
    self._was_last = is_last
    return {"image": to_hwc(obs), **flags}

  def close(self) -> None:
    self._env.close()


class AtariEnv(EnvpoolPixelEnv):
  """N Atari games stepped together by envpool; see wm_jax.envs.base for the Step dict."""

  suite = "atari"

  def __init__(self, game: str, num_envs: int, seed: int, protocol: AtariProtocol):
    import envpool
    base.check_name("Atari game", game, atari_games())
    self.task = game
    self.num_envs = num_envs
    self.protocol = protocol
    self.frames_per_step = protocol.frame_skip
    self._env = envpool.make(f"{game}-v5", env_type="gymnasium", num_envs=num_envs,
                             seed=seed, **_envpool_kwargs(protocol))
    self._set_spec(protocol.image_size)

  def _game_over(self, is_last, terminated, truncated, info):
    # A lost life is `terminated` while the ALE game goes on; the game ends at game over.
    return is_last & (info["terminated"].astype(bool) | truncated)
