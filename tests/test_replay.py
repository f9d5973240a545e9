"""Replay: storage dtypes, memory estimate, add/sample under jit, episode boundaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.replay import make_replay, replay_nbytes, stored_spec, to_stored

IMAGE_SPEC = EnvSpec(obs={"image": ArraySpec((8, 8, 3), "uint8"),
                          "vector": ArraySpec((2,), "float32")},
                     act=ActionSpec(discrete=True, num_actions=4))


def _fake_stream(num_envs, steps, episode_len, seed=0):
  """Steps of N envs whose episodes have random lengths; 'vector' holds (episode id, t)."""
  rng = np.random.default_rng(seed)
  episode = np.arange(num_envs) * 1000
  t = np.zeros(num_envs, np.int64)
  for _ in range(steps):
    is_first = t == 0
    ends = rng.random(num_envs) < 1.0 / episode_len
    step = {
        "image": np.full((num_envs, 8, 8, 3), t[:, None, None, None] % 256, np.uint8),
        "vector": np.stack([episode, t], -1).astype(np.float32),
        "reward": rng.normal(size=num_envs).astype(np.float32),
        "is_first": is_first, "is_last": ends & ~is_first, "is_terminal": ends & ~is_first,
    }
    action = rng.integers(0, 4, num_envs).astype(np.int32)
    yield step, action
    t = np.where(step["is_last"], 0, t + 1)
    episode = np.where(step["is_last"], episode + 1, episode)


def test_stored_spec_keeps_frames_uint8_and_counts_bytes():
  spec = stored_spec(IMAGE_SPEC)
  assert spec["image"].dtype == "uint8"
  assert set(spec) == {"image", "vector", "action", "reward", "is_first", "is_last",
                       "is_terminal"}
  per_step = 8 * 8 * 3 + 2 * 4 + 4 + 4 + 3
  assert replay_nbytes(IMAGE_SPEC, 1000) == 1000 * per_step


def test_atari100k_replay_size_is_about_1_2_gb():
  atari = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                  act=ActionSpec(discrete=True, num_actions=18))
  assert 1.2e9 < replay_nbytes(atari, 100_000) < 1.3e9


def test_to_stored_zeroes_the_action_on_first_steps():
  step = {"image": np.zeros((3, 8, 8, 3), np.uint8), "vector": np.zeros((3, 2), np.float32),
          "reward": np.zeros(3, np.float32), "is_first": np.array([True, False, True]),
          "is_last": np.zeros(3, bool), "is_terminal": np.zeros(3, bool)}
  out = to_stored(step, jnp.array([3, 2, 1]), IMAGE_SPEC)
  np.testing.assert_array_equal(out["action"], [0, 2, 0])
  cont = EnvSpec(obs={"vector": ArraySpec((2,), "float32")},
                 act=ActionSpec(discrete=False, dim=2))
  out = to_stored({k: v for k, v in step.items() if k != "image"}, jnp.ones((3, 2)), cont)
  np.testing.assert_array_equal(out["action"], [[0, 0], [1, 1], [0, 0]])


def test_sampled_sequences_are_contiguous_and_mark_every_episode_start():
  num_envs, capacity, batch, length = 3, 3 * 40, 64, 10
  replay = make_replay(IMAGE_SPEC, num_envs, capacity, batch, length)
  add = jax.jit(lambda s, step, a: replay.add(s, to_stored(step, a, IMAGE_SPEC)))
  sample = jax.jit(replay.sample)
  state = replay.init()
  assert not bool(replay.can_sample(state))
  key = jax.random.PRNGKey(0)
  for i, (step, action) in enumerate(_fake_stream(num_envs, 130, episode_len=7)):
    state = add(state, step, action)   # 130 steps > 40 per env: the ring wraps around
    if i >= length and i % 13 == 0:
      key, k = jax.random.split(key)
      out = jax.device_get(sample(state, k))
      assert out["image"].dtype == np.uint8 and out["image"].shape == (batch, length, 8, 8, 3)
      episode, t = out["vector"][..., 0], out["vector"][..., 1]
      same_episode = episode[:, 1:] == episode[:, :-1]
      # Within an episode time advances by one; a new episode starts only at is_first.
      assert np.all(np.where(same_episode, t[:, 1:] == t[:, :-1] + 1, out["is_first"][:, 1:]))
      assert np.all(out["is_first"] == (t == 0))
      # The image frame and its vector were stored together.
      assert np.all(out["image"][..., 0, 0, 0] == t % 256)
  assert bool(replay.can_sample(state))


def test_replay_shorter_than_a_sequence_is_refused_with_the_fix():
  with pytest.raises(RunConfigError, match="raise run.replay_capacity or lower run.batch_length"):
    make_replay(IMAGE_SPEC, num_envs=4, capacity=100, batch_size=2, batch_length=64)
