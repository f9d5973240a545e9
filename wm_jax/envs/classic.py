"""envpool's small tasks: classic control (CartPole, Acrobot, MountainCar, Pendulum) as
'vector' envs, and the tabular toy-text tasks (Taxi, FrozenLake, CliffWalking) as 'state' envs.

Small, fast sanity checks for world models and agents, and the tabular home of Dyna-Q.
Classic-control observations are float32 [N, D]; tabular ones are the state index, int32 [N]
in [0, env.num_states). Discrete tasks take int32 [N] actions, continuous ones float32 [N, A]
in [-1, 1], rescaled here to the task's own bounds (Pendulum's torque is [-2, 2]). A time
limit (CartPole-v1: 500 steps, Taxi-v3: 200) is a truncation: is_last without is_terminal.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from wm_jax.envs import base


@dataclasses.dataclass(frozen=True)
class ClassicProtocol:
  """The classic-control protocol card.

  time_limit: episode length in steps, a truncation; None keeps the task's own
    (CartPole-v1 500, Acrobot-v1 500, MountainCar-v0 200, Pendulum-v1 200) and the env's
    card records the number.
  """
  time_limit: int | None = None


def _envpool_tasks(module: str) -> list[str]:
  from envpool.registration import registry
  return sorted(k for k, v in registry.specs.items() if v[0] == module)


def classic_tasks() -> list[str]:
  """The envpool ids of the classic-control tasks ('CartPole-v1', ...)."""
  return _envpool_tasks("envpool.classic_control")


# Tabular tasks with one discrete state and a fixed number of states ('tabular/*' and
# Blackjack's tuple observations are left out).
TABULAR_TASKS = ("CliffWalking-v1", "FrozenLake-v1", "FrozenLake8x8-v1", "NChain-v0", "Taxi-v3")


class ClassicEnv:
  """N copies of one classic-control task stepped by envpool (gymnasium API)."""

  suite = "classic"
  kind = "classic-control task"

  def tasks(self) -> list[str]:
    return classic_tasks()

  def _obs_spec(self, obs_space) -> dict:
    return {"vector": base.ArraySpec((int(np.prod(obs_space.shape)),), "float32")}

  def _obs(self, obs: np.ndarray) -> dict:
    return {"vector": obs.astype(np.float32)}

  def __init__(self, task: str, num_envs: int, seed: int, protocol: ClassicProtocol):
    import envpool
    base.check_name(self.kind, task, self.tasks())
    overrides = {} if protocol.time_limit is None else {"max_episode_steps": protocol.time_limit}
    with warnings.catch_warnings():  # envpool's float64 Box bounds make gymnasium warn.
      warnings.simplefilter("ignore", UserWarning)
      self._env = envpool.make(task, env_type="gymnasium", num_envs=num_envs, seed=seed,
                               **overrides)
      space, obs_space = self._env.action_space, self._env.observation_space
    self.protocol = dataclasses.replace(
        protocol, time_limit=int(self._env.spec.config.max_episode_steps))
    self.task = task
    self.num_envs = num_envs
    self.frames_per_step = 1
    self._discrete = hasattr(space, "n")
    if self._discrete:
      act = base.ActionSpec(discrete=True, num_actions=int(space.n))
    else:
      act = base.ActionSpec(discrete=False, dim=int(space.shape[0]))
      self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
    self.spec = base.EnvSpec(obs=self._obs_spec(obs_space), act=act)
    self._was_last = np.zeros(num_envs, bool)

  def _env_actions(self, actions: np.ndarray) -> np.ndarray:
    """Our actions (int [N], or float [N, A] in [-1, 1]) -> envpool's (the task's bounds)."""
    if self._discrete:
      return np.asarray(actions, np.int32)
    unit = (np.clip(np.asarray(actions, np.float32), -1, 1) + 1) / 2
    return self._low + unit * (self._high - self._low)

  def reset(self) -> base.Step:
    """Starts every episode: the observation [N, ...], is_first all True."""
    obs, _ = self._env.reset()
    self._was_last = np.zeros(self.num_envs, bool)
    return {**self._obs(obs), **base.first_step_flags(self.num_envs)}

  def step(self, actions: np.ndarray) -> base.Step:
    """One step of every env (envpool auto-resets the envs that ended on the last step)."""
    obs, reward, terminated, truncated, _ = self._env.step(self._env_actions(actions))
    flags = base.auto_reset_flags(self._was_last, reward, terminated | truncated, terminated)
    self._was_last = flags["is_last"]
    return {**self._obs(obs), **flags}

  def close(self) -> None:
    self._env.close()


class TabularEnv(ClassicEnv):
  """N copies of one tabular toy-text task (TABULAR_TASKS): 'state' int32 [N], and
  `num_states`, the size of the state space (Taxi-v3: 500)."""

  suite = "tabular"
  kind = "tabular task"

  def tasks(self) -> list[str]:
    return list(TABULAR_TASKS)

  def __init__(self, task: str, num_envs: int, seed: int, protocol: ClassicProtocol):
    super().__init__(task, num_envs, seed, protocol)
    self.num_states = int(self._env.observation_space.n)

  def _obs_spec(self, obs_space) -> dict:
    return {"state": base.ArraySpec((), "int32")}

  def _obs(self, obs: np.ndarray) -> dict:
    return {"state": obs.astype(np.int32)}


BOX2D_TASKS = ("CarRacing-v3",)


@dataclasses.dataclass(frozen=True)
class Box2DProtocol:
  """The Box2D (CarRacing) protocol card.

  time_limit: as ClassicProtocol (CarRacing-v3: 1000 steps, a truncation).
  crop_status_bar: drop the bottom 12 of the 96 rows (the speed and sensor bar), as World
    Models' reference code does (obs[:84]), before resizing.
  image_size: the square frame size after a bilinear resize (64 for World Models' VAE).
  """
  time_limit: int | None = None
  crop_status_bar: bool = True
  image_size: int = 64


class CarRacingEnv(ClassicEnv):
  """N copies of envpool's CarRacing-v3 (gymnasium 1.x physics, continuous actions):
  'image' uint8 [N, S, S, 3] (96 x 96 frames, status bar cropped, resized to S), actions
  float32 [N, 3] in [-1, 1] mapped to steer [-1, 1], gas [0, 1], brake [0, 1]; reward -0.1 per
  frame plus 1000 / tiles for each new track tile, an episode ends after 1000 steps or off the
  playfield (-100, terminal)."""

  suite = "box2d"
  kind = "Box2D task"

  def tasks(self) -> list[str]:
    return list(BOX2D_TASKS)

  def __init__(self, task: str, num_envs: int, seed: int, protocol: Box2DProtocol):
    self._crop, self._size = protocol.crop_status_bar, protocol.image_size
    super().__init__(task, num_envs, seed, protocol)

  def _obs_spec(self, obs_space) -> dict:
    return {"image": base.ArraySpec((self._size, self._size, 3), "uint8")}

  def _obs(self, obs: np.ndarray) -> dict:
    from PIL import Image
    frames = obs[:, :84] if self._crop else obs
    size = (self._size, self._size)
    return {"image": np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))
                               for f in frames])}
