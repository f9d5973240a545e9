"""DMControl proprio (envpool) and vision (dm_control rendering): shapes, flags, errors."""

import sys

import numpy as np
import pytest

from wm_jax.envs import UnknownNameError, dmc, make_env, protocol_card


def _actions(steps, num_envs, dim, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (steps, num_envs, dim)).astype(np.float32)


def _check_flags(step, num_envs):
  for key in ("is_first", "is_last", "is_terminal", "is_game_over"):
    assert step[key].shape == (num_envs,) and step[key].dtype == bool
  assert step["reward"].shape == (num_envs,) and step["reward"].dtype == np.float32


def test_proprio_shapes_and_time_limit():
  env = make_env("dmc", "cheetah_run", 2, seed=0, time_limit=10)   # 5 agent steps
  first = env.reset()
  assert first["vector"].shape == (2, 17) and first["vector"].dtype == np.float32
  _check_flags(first, 2)
  assert first["is_first"].all()
  assert env.spec.act.dim == 6 and not env.spec.act.discrete
  assert env.frames_per_step == 2
  steps = [env.step(a) for a in _actions(6, 2, 6)]
  assert [s["is_last"].all() for s in steps] == [False] * 4 + [True, False]
  assert not any(s["is_terminal"].any() for s in steps)   # The time limit truncates.
  assert steps[5]["is_first"].all() and (steps[5]["reward"] == 0).all()
  assert protocol_card(env)["task"] == "cheetah_run"


def test_proprio_action_repeat_sums_rewards():
  """An agent step with repeat 2 equals two control steps with repeat 1."""
  actions = _actions(4, 2, 6)
  twice = make_env("dmc", "cheetah_run", 2, seed=3, action_repeat=2)
  once = make_env("dmc", "cheetah_run", 2, seed=3, action_repeat=1)
  np.testing.assert_array_equal(twice.reset()["vector"], once.reset()["vector"])
  for a in actions:
    pair = [once.step(a), once.step(a)]
    step = twice.step(a)
    np.testing.assert_allclose(step["reward"], pair[0]["reward"] + pair[1]["reward"], rtol=1e-5)
    np.testing.assert_allclose(step["vector"], pair[1]["vector"], rtol=1e-6)


def test_action_repeat_must_divide_time_limit():
  with pytest.raises(ValueError, match="must be a positive divisor"):
    make_env("dmc", "cheetah_run", 1, seed=0, action_repeat=3)


@pytest.mark.parametrize("suite", ["dmc", "dmc_vision"])
def test_unknown_task_names_close_match(suite):
  with pytest.raises(UnknownNameError, match="did you mean 'cheetah_run'"):
    make_env(suite, "cheetah_rn", 1, seed=0)


def test_vision_shapes_flags_and_camera():
  env = make_env("dmc_vision", "cheetah_run", 2, seed=0, time_limit=4)   # 2 agent steps
  first = env.reset()
  assert first["image"].shape == (2, 64, 64, 3) and first["image"].dtype == np.uint8
  _check_flags(first, 2)
  assert first["is_first"].all() and env.protocol.camera == 0
  steps = [env.step(a) for a in _actions(3, 2, 6)]
  assert [s["is_last"].all() for s in steps] == [False, True, False]
  assert not any(s["is_terminal"].any() for s in steps)
  assert steps[2]["is_first"].all() and (steps[2]["reward"] == 0).all()
  assert (steps[0]["reward"] >= 0).all()
  assert first["image"].std() > 0    # A real rendering, not a blank frame.
  env.close()


def test_vision_quadruped_uses_camera_2():
  env = make_env("dmc_vision", "quadruped_walk", 1, seed=0)
  assert env.protocol.camera == 2
  env.close()


def test_missing_render_backend_at_first_frame(monkeypatch):
  def no_gl(*args, **kwargs):
    raise RuntimeError("No OpenGL rendering backend is available.")
  monkeypatch.setattr(dmc, "_render_frame", no_gl)
  with pytest.raises(dmc.RenderingUnavailableError, match="apt-get install libegl1") as err:
    make_env("dmc_vision", "cheetah_run", 1, seed=0)
  assert "MUJOCO_GL=egl" in str(err.value) and "\n" not in str(err.value)


def test_missing_render_libs_at_import(monkeypatch):
  import dm_control
  monkeypatch.setitem(sys.modules, "dm_control.suite", None)   # `import` now fails.
  monkeypatch.delattr(dm_control, "suite", raising=False)
  with pytest.raises(dmc.RenderingUnavailableError, match="MUJOCO_GL=egl or MUJOCO_GL=osmesa"):
    make_env("dmc_vision", "cheetah_run", 1, seed=0)
