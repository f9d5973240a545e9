"""DeepMind Control: proprio through envpool, vision rendered with dm_control.

Both follow wm_jax.envs.base: continuous actions float32 [N, A] in [-1, 1], action repeat
done here (rewards summed over the repeated control steps, as DreamerV3), dm_env step types
mapped to FIRST -> is_first, LAST -> is_last, and is_terminal = LAST with discount 0 (the
1000-step time limit is a truncation). envpool's own `frame_skip` is *not* action repeat:
it sets MuJoCo substeps per control step and scores only the last one, so we leave it alone
and repeat on the host, stepping only the envs still inside their repeat (envpool accepts
an `env_id` subset in synchronous mode).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from wm_jax import errors
from wm_jax.envs import base

_MID, _LAST = 1, 2    # dm_env.StepType values
_INSTALL_GL = ("install headless GL with `apt-get install libegl1 libgl1-mesa-dri libosmesa6` "
               "and set MUJOCO_GL=egl or MUJOCO_GL=osmesa")


class RenderingUnavailableError(errors.MissingDependencyError):
  """MuJoCo cannot render offscreen on this machine (no usable EGL/OSMesa)."""


@dataclasses.dataclass(frozen=True)
class DMCProtocol:
  """The DMControl protocol card (defaults follow DreamerV3).

  suite: 'dmc' (proprio 'vector') or 'dmc_vision' ('image').
  action_repeat: control steps per agent step, rewards summed.
  time_limit: episode length in control steps (frames), a truncation.
  image_size, camera: vision only; camera -1 picks DreamerV3's (2 for quadruped, else 0).
  """
  suite: str = "dmc"
  action_repeat: int = 2
  time_limit: int = 1000
  image_size: int = 64
  camera: int = -1


def _camel(name: str) -> str:
  """'ball_in_cup' -> 'BallInCup' (envpool's spelling; keeps 'humanoid_CMU' -> 'HumanoidCMU')."""
  return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def proprio_tasks() -> dict[str, tuple[str, str]]:
  """'cheetah_run' -> ('cheetah', 'run') for every DMC task envpool ships."""
  from envpool.mujoco.dmc.registration import dmc_mujoco_envs
  return {f"{domain}_{task}": (domain, task) for domain, task, _ in dmc_mujoco_envs}


def vision_tasks() -> dict[str, tuple[str, str]]:
  """'cheetah_run' -> ('cheetah', 'run') for every dm_control suite task."""
  suite = _import_suite()
  return {f"{domain}_{task}": (domain, task) for domain, task in suite.ALL_TASKS}


def _check_repeat(protocol: DMCProtocol) -> None:
  """Action repeat must split the time limit into whole agent steps."""
  if protocol.action_repeat < 1 or protocol.time_limit % protocol.action_repeat:
    raise errors.RunConfigError(
        f"DMC action_repeat={protocol.action_repeat} must be a positive divisor of "
        f"time_limit={protocol.time_limit}; pick e.g. 1, 2, 4 or 8.")


class DMCProprioEnv:
  """N DMC tasks stepped by envpool (dm_env API): 'vector' float32 [N, D] observations."""

  suite = "dmc"

  def __init__(self, task: str, num_envs: int, seed: int, protocol: DMCProtocol):
    import envpool
    tasks = proprio_tasks()
    base.check_name("DMC task", task, sorted(tasks))
    _check_repeat(protocol)
    domain, name = tasks[task]
    self.task = task
    self.num_envs = num_envs
    self.protocol = protocol
    self.frames_per_step = protocol.action_repeat
    self._env = envpool.make(f"{_camel(domain)}{_camel(name)}-v1", env_type="dm",
                             num_envs=num_envs, seed=seed,
                             max_episode_steps=protocol.time_limit)
    obs_spec = self._env.observation_spec()
    self._keys = [k for k in obs_spec._fields if k not in ("env_id", "players")]
    dim = sum(int(np.prod(getattr(obs_spec, k).shape)) for k in self._keys)
    self.spec = base.EnvSpec(
        obs={"vector": base.ArraySpec((dim,), "float32")},
        act=base.ActionSpec(discrete=False, dim=int(self._env.action_spec().shape[-1])))
    self._was_last = np.zeros(num_envs, bool)

  def _vector(self, observation: Any) -> np.ndarray:
    """envpool's observation namedtuple -> float32 [n, D], entries concatenated in spec order."""
    parts = [np.asarray(getattr(observation, k)) for k in self._keys]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], 1).astype(np.float32)

  def reset(self) -> base.Step:
    """Starts every episode: 'vector' float32 [N, D], is_first all True."""
    ts = self._env.reset()
    self._was_last = np.zeros(self.num_envs, bool)
    return {"vector": self._vector(ts.observation), **base.first_step_flags(self.num_envs)}

  def step(self, actions: np.ndarray) -> base.Step:
    """One agent step (action_repeat control steps); actions float [N, A] in [-1, 1]."""
    actions = np.asarray(actions, np.float64)
    n = self.num_envs
    vector = np.zeros((n,) + self.spec.obs["vector"].shape, np.float32)
    reward = np.zeros(n, np.float32)
    is_last, is_terminal = np.zeros(n, bool), np.zeros(n, bool)
    active = np.arange(n)
    for _ in range(self.protocol.action_repeat):
      ts = self._env.step(actions[active], active)
      ids = np.asarray(ts.observation.env_id)
      vector[ids] = self._vector(ts.observation)
      reward[ids] += ts.reward
      is_last[ids] = ts.step_type == _LAST
      is_terminal[ids] = (ts.step_type == _LAST) & (ts.discount == 0)
      # Auto-reset (FIRST) and episode ends (LAST) leave the repeat; only MID steps go on.
      active = ids[ts.step_type == _MID]
      if not active.size:
        break
    flags = base.auto_reset_flags(self._was_last, reward, is_last, is_terminal)
    self._was_last = is_last
    return {"vector": vector, **flags}

  def close(self) -> None:
    self._env.close()


def _import_suite() -> Any:
  """dm_control.suite, rendering headless through EGL unless MUJOCO_GL says otherwise."""
  os.environ.setdefault("MUJOCO_GL", "egl")
  try:
    from dm_control import suite
  except Exception as e:  # a missing libEGL/libOSMesa surfaces as ImportError, OSError, ...
    raise RenderingUnavailableError(_rendering_message(e)) from None
  return suite


def _rendering_message(error: Exception) -> str:
  """One sentence: why DMC vision cannot render and what to install."""
  return (f"DMC vision cannot render with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): "
          f"{_INSTALL_GL}.")


def _render_frame(physics: Any, size: int, camera: int) -> np.ndarray:
  """One offscreen frame of a dm_control physics: uint8 [size, size, 3]."""
  return physics.render(size, size, camera_id=camera)


class _VisionEnv:
  """One dm_control env whose observation is a rendered frame."""

  def __init__(self, domain: str, task: str, seed: int, protocol: DMCProtocol):
    self._protocol = protocol
    self.env = _import_suite().load(
        domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
    self._elapsed = 0
    self._was_last = False

  def image(self) -> np.ndarray:
    """The current frame, uint8 [size, size, 3]."""
    p = self._protocol
    try:
      return _render_frame(self.env.physics, p.image_size, p.camera)
    except Exception as e:  # EGL/OSMesa failures only show up at the first render.
      raise RenderingUnavailableError(_rendering_message(e)) from None

  def reset(self) -> tuple[np.ndarray, float, bool, bool, bool]:
    """(image [H, W, 3], reward, is_first, is_last, is_terminal) of a new episode."""
    self.env.reset()
    self._elapsed, self._was_last = 0, False
    return self.image(), 0.0, True, False, False

  def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, bool]:
    """One agent step: action_repeat control steps, or a reset after an episode end."""
    if self._was_last:
      return self.reset()
    reward, terminal = 0.0, False
    for _ in range(self._protocol.action_repeat):
      ts = self.env.step(action)
      reward += ts.reward
      self._elapsed += 1
      terminal = ts.last() and ts.discount == 0
      if terminal:
        break
    self._was_last = terminal or self._elapsed >= self._protocol.time_limit
    return self.image(), reward, False, self._was_last, terminal


class DMCVisionEnv:
  """N dm_control tasks rendered to 'image' uint8 [N, size, size, 3].

  The envs step and render one after another on the calling thread: with EGL, dm_control
  binds each GL context to the thread that made it (and frees it from the main thread at
  exit), and the software rasteriser already spreads a frame over the CPU cores.
  """

  suite = "dmc_vision"

  def __init__(self, task: str, num_envs: int, seed: int, protocol: DMCProtocol):
    tasks = vision_tasks()
    base.check_name("DMC task", task, sorted(tasks))
    _check_repeat(protocol)
    domain, name = tasks[task]
    camera = protocol.camera if protocol.camera >= 0 else (2 if domain == "quadruped" else 0)
    self.protocol = dataclasses.replace(protocol, camera=camera)
    self.task = task
    self.num_envs = num_envs
    self.frames_per_step = protocol.action_repeat
    self._envs = [_VisionEnv(domain, name, seed + i, self.protocol) for i in range(num_envs)]
    self._envs[0].image()  # Fail here, not mid-training, when rendering is unavailable.
    size = protocol.image_size
    self.spec = base.EnvSpec(
        obs={"image": base.ArraySpec((size, size, 3), "uint8")},
        act=base.ActionSpec(discrete=False, dim=int(self._envs[0].env.action_spec().shape[0])))

  @staticmethod
  def _stack(results: list[tuple[np.ndarray, float, bool, bool, bool]]) -> base.Step:
    """Per-env (image, reward, is_first, is_last, is_terminal) tuples -> a Step dict."""
    image, reward, is_first, is_last, is_terminal = zip(*results)
    is_last = np.array(is_last)
    return {"image": np.stack(image), "reward": np.array(reward, np.float32),
            "is_first": np.array(is_first), "is_last": is_last,
            "is_terminal": np.array(is_terminal), "is_game_over": is_last.copy()}

  def reset(self) -> base.Step:
    """Starts every episode: 'image' uint8 [N, size, size, 3], is_first all True."""
    return self._stack([env.reset() for env in self._envs])

  def step(self, actions: np.ndarray) -> base.Step:
    """One agent step of every env; actions float [N, A] in [-1, 1]."""
    actions = np.asarray(actions, np.float64)
    return self._stack([env.step(a) for env, a in zip(self._envs, actions)])

  def close(self) -> None:
    for env in self._envs:
      env.env.physics.free()
