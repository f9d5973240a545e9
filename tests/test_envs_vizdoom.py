"""ViZDoom through envpool (the offline 3-D benchmark): shapes, combined discrete actions,
episode flags under auto-reset, the time limit, bad names."""

import numpy as np
import pytest

from wm_jax.envs import UnknownNameError, check_task, make_env, protocol_card


def test_health_gathering_frames_actions_and_card():
  env = make_env("vizdoom", "HealthGathering", 2, seed=0)
  first = env.reset()
  assert first["image"].shape == (2, 64, 64, 3) and first["image"].dtype == np.uint8
  assert first["is_first"].all() and not first["is_last"].any()
  assert env.spec.act.discrete and env.spec.act.num_actions == 6   # combined button choices
  frames = [env.step(np.array([2, 3], np.int32))["image"] for _ in range(3)]
  assert np.abs(frames[-1].astype(int) - first["image"]).mean() > 1   # turning changes the view
  card = protocol_card(env)
  assert card == {"image_size": 64, "frame_skip": 4, "max_episode_steps": 525,
                  "reward": "envpool_default", "suite": "vizdoom", "task": "HealthGathering"}
  env.close()


def test_time_limit_is_last_not_terminal_then_auto_reset():
  env = make_env("vizdoom", "HealthGathering", 1, seed=0, max_episode_steps=5)
  env.reset()
  steps = [env.step(np.zeros(1, np.int32)) for _ in range(6)]
  assert [bool(s["is_last"][0]) for s in steps] == [False] * 4 + [True, False]
  assert not any(s["is_terminal"][0] for s in steps)
  assert steps[5]["is_first"][0] and steps[5]["reward"][0] == 0.0
  env.close()


def test_unknown_scenario_is_one_sentence():
  with pytest.raises(UnknownNameError, match="did you mean 'HealthGathering'"):
    check_task("vizdoom", "HealthGatherin")
