"""ViZDoom through envpool (the offline 3-D benchmark): shapes, combined discrete actions,
episode flags under auto-reset, the time limit, bad names.

The env checks run in a freshly spawned interpreter, in its own process group, under a time
limit. The ViZDoom engine and its controller sometimes deadlock at start-up, both waiting on
the message queue they share (seen twice in a pytest process that had run the rest of the
suite: the engine in pthread_cond_wait, pytest in futex waits, for over an hour in one CI run,
where pytest-timeout cannot interrupt C code). A check that hangs is killed with the engines
it started and run once more; a second hang, like any assertion, fails the test.
"""

import contextlib
import multiprocessing
import os
import signal

import numpy as np
import pytest

from wm_jax.envs import UnknownNameError, check_task, make_env, protocol_card
from wm_jax.envs.vizdoom import _in_cache_dir

ENV_CHECK_TIMEOUT_S = 120
ENV_CHECK_ATTEMPTS = 2


def _run_in_own_group(check, errors):
  os.setsid()   # the engines it starts join this process group and die with it
  try:
    check()
  except BaseException as e:
    errors.put(f"{type(e).__name__}: {e}")
    raise


def _in_fresh_process(check):
  """Runs `check()` (a module-level function) in a spawned interpreter; an exception there is
  raised here as AssertionError with its message, a repeated hang as TimeoutError."""
  context = multiprocessing.get_context("spawn")
  for _ in range(ENV_CHECK_ATTEMPTS):
    errors = context.Queue()
    process = context.Process(target=_run_in_own_group, args=(check, errors))
    process.start()
    process.join(ENV_CHECK_TIMEOUT_S)
    hung = process.exitcode is None
    with contextlib.suppress(ProcessLookupError):   # the hung child and its engines
      os.killpg(process.pid, signal.SIGKILL)
    process.join()
    if not hung:
      if process.exitcode != 0:
        raise AssertionError(errors.get(timeout=10) if not errors.empty() else
                             f"the check exited with code {process.exitcode}")
      return
  raise TimeoutError(f"the ViZDoom check hung {ENV_CHECK_ATTEMPTS} times in a row "
                     f"({ENV_CHECK_TIMEOUT_S} s each)")


def _check_health_gathering_frames_actions_and_card():
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


def _check_time_limit_is_last_not_terminal_then_auto_reset():
  env = make_env("vizdoom", "HealthGathering", 1, seed=0, max_episode_steps=5)
  env.reset()
  steps = [env.step(np.zeros(1, np.int32)) for _ in range(6)]
  assert [bool(s["is_last"][0]) for s in steps] == [False] * 4 + [True, False]
  assert not any(s["is_terminal"][0] for s in steps)
  assert steps[5]["is_first"][0] and steps[5]["reward"][0] == 0.0
  env.close()


def test_health_gathering_frames_actions_and_card():
  _in_fresh_process(_check_health_gathering_frames_actions_and_card)


def test_time_limit_is_last_not_terminal_then_auto_reset():
  _in_fresh_process(_check_time_limit_is_last_not_terminal_then_auto_reset)


def test_unknown_scenario_is_one_sentence():
  with pytest.raises(UnknownNameError, match="did you mean 'HealthGathering'"):
    check_task("vizdoom", "HealthGatherin")


def test_a_failing_check_fails_the_test():
  """The isolation does not swallow failures: an assertion in the child is raised here."""
  with pytest.raises(AssertionError, match="frames differ"):
    _in_fresh_process(_failing_check)


def _failing_check():
  assert False, "frames differ"


def test_the_engines_folder_exists_before_any_engine_starts(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  with _in_cache_dir():   # engines started side by side raced to create it (a crash in CI)
    assert os.path.isdir("_vizdoom")
    assert os.getcwd() == str(tmp_path / "wm_jax" / "vizdoom")
