"""Atari-100k protocol: shapes, episode flags, max-pool, no-op starts, life loss, bad names."""

import envpool
import numpy as np
import pytest

from wm_jax.envs import ATARI100K_GAMES, UnknownNameError, make_env, protocol_card
from wm_jax.envs import atari


def _play(env, actions):
  """Steps `env` through actions [T, N]; returns the Step dicts stacked on axis 0."""
  steps = [env.step(a) for a in actions]
  return {k: np.stack([s[k] for s in steps]) for k in steps[0]}


def test_shapes_dtypes_and_first_step():
  env = make_env("atari", "Pong", 2, seed=0)
  first = env.reset()
  assert first["image"].shape == (2, 64, 64, 3) and first["image"].dtype == np.uint8
  for key in ("is_first", "is_last", "is_terminal", "is_game_over"):
    assert first[key].shape == (2,) and first[key].dtype == bool
  assert first["reward"].dtype == np.float32
  assert first["is_first"].all() and not first["is_last"].any()
  nxt = env.step(np.zeros(2, np.int32))
  assert not nxt["is_first"].any()
  assert env.spec.act.discrete and env.spec.act.num_actions == 6   # Pong's minimal set
  assert env.frames_per_step == 4
  card = protocol_card(env)
  assert card["suite"] == "atari" and card["task"] == "Pong" and card["image_size"] == 64
  env.close()


def test_truncation_is_last_not_terminal_then_auto_reset():
  env = make_env("atari", "Pong", 2, seed=0, max_episode_frames=40)   # 10 agent steps
  env.reset()
  out = _play(env, np.zeros((11, 2), np.int32))
  assert not out["is_last"][:9].any()
  assert out["is_last"][9].all() and out["is_game_over"][9].all()
  assert not out["is_terminal"].any()
  assert out["is_first"][10].all() and (out["reward"][10] == 0).all()
  assert not out["is_last"][10].any()


def test_frame_is_max_of_last_two_raw_frames():
  """envpool max-pools the last two of the 4 skipped frames (checked at full 210x160)."""
  def make(frame_skip):
    kwargs = atari._envpool_kwargs(atari.AtariProtocol(noop_max=0, frame_skip=frame_skip))
    kwargs.update(img_height=210, img_width=160)
    return envpool.make("Pong-v5", env_type="gymnasium", num_envs=1, seed=3,
                        render_mode="rgb_array", **kwargs)
  pooled_env, raw_env = make(4), make(1)   # raw_env.render() is the current ALE screen.
  pooled_env.reset()
  raw_env.reset()
  actions = np.random.default_rng(0).integers(0, 6, (60, 1))
  pooled_differs_from_last = 0
  for action in actions:
    frame = pooled_env.step(action)[0][0].transpose(1, 2, 0)
    raws = []
    for _ in range(4):
      raw_env.step(action)
      raws.append(raw_env.render()[0])
    np.testing.assert_array_equal(frame, np.maximum(raws[2], raws[3]))
    pooled_differs_from_last += (frame != raws[3]).any()
  assert pooled_differs_from_last > 10   # The pooling is visible (moving ball and paddles).


def test_no_stale_frames_after_auto_reset():
  """After an episode ends, the new episode's frames equal a fresh env's under the same seed.

  A max-pool (or frame buffer) that kept frames of the old episode would differ here.
  """
  rng = np.random.default_rng(1)
  steps = 30
  env = make_env("atari", "Pong", 1, seed=5, noop_max=0, max_episode_frames=4 * steps)
  env.reset()
  old = _play(env, rng.integers(0, 6, (steps, 1)))
  assert old["is_last"][-1].all()
  actions = rng.integers(0, 6, (20, 1))
  first = env.step(np.zeros(1, np.int32))
  assert first["is_first"].all()
  after_reset = np.concatenate([first["image"], _play(env, actions)["image"][:, 0]])
  fresh = make_env("atari", "Pong", 1, seed=5, noop_max=0)
  fresh_frames = np.concatenate([fresh.reset()["image"], _play(fresh, actions)["image"][:, 0]])
  assert (old["image"][-1] != fresh_frames[1]).any()   # Stale pixels would show.
  np.testing.assert_array_equal(after_reset, fresh_frames)


@pytest.mark.parametrize("noop_max", [0, 30])
def test_noop_starts(noop_max):
  """Random no-op starts desynchronise envs (seeds seed..seed+3); noop_max=0 does not."""
  env = make_env("atari", "Pong", 4, seed=0, noop_max=noop_max)
  env.reset()
  frames = _play(env, np.zeros((40, 4), np.int32))["image"]
  same_as_env0 = [(frames[:, 0] == frames[:, i]).all() for i in range(1, 4)]
  assert all(same_as_env0) == (noop_max == 0)


def _breakout_flags(life_loss, eval_mode=False, steps=1200):
  env = make_env("atari", "Breakout", 1, seed=0, life_loss_terminal=life_loss,
                 eval_mode=eval_mode)
  env.reset()
  out = _play(env, np.random.default_rng(0).integers(0, 4, (steps, 1)))
  return env, {k: v[:, 0] for k, v in out.items() if k != "image"}


def test_life_loss_terminal():
  _, out = _breakout_flags(life_loss=True)
  game_over = np.flatnonzero(out["is_game_over"])
  assert game_over.size, "the random agent should lose a whole game of Breakout"
  lives_lost = np.flatnonzero(out["is_last"][:game_over[0]])
  assert lives_lost.size == 4      # Breakout has 5 lives; the 5th is the game over.
  assert out["is_terminal"][lives_lost].all()
  assert out["is_first"][lives_lost + 1].all()   # Each life starts a new episode.
  assert (out["is_last"] & ~out["is_game_over"]).any()


@pytest.mark.parametrize("eval_mode", [False, True])
def test_life_loss_off_and_eval_mode(eval_mode):
  """Without life-loss termination (or in eval mode) episodes are whole games."""
  env, out = _breakout_flags(life_loss=eval_mode, eval_mode=eval_mode)  # eval wins
  assert not env.protocol.life_loss_terminal
  assert out["is_last"].any()
  np.testing.assert_array_equal(out["is_last"], out["is_game_over"])


def test_atari100k_games_exist():
  assert len(ATARI100K_GAMES) == 26
  assert set(ATARI100K_GAMES) <= set(atari.atari_games())


def test_unknown_game_names_close_match():
  with pytest.raises(UnknownNameError, match=r"Unknown Atari game 'Pongg': did you mean 'Pong'"):
    make_env("atari", "Pongg", 1, seed=0)


def test_unknown_protocol_field():
  with pytest.raises(UnknownNameError, match="did you mean 'frame_skip'") as err:
    make_env("atari", "Pong", 1, seed=0, frameskip=4)
  assert "\n" not in str(err.value)
