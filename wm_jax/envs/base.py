"""The one batched interface every environment suite follows.

Every suite (Atari-100k, DMC proprio, DMC vision, classic control, the sprite env) is a
`BatchedEnv`: `reset()` and `step(actions)` act on N environments at once and return a
`Step` dict of numpy arrays, leading axis N:

  obs keys     'image' uint8 [N, H, W, 3] and/or 'vector' float32 [N, D] (see `spec.obs`)
  'reward'     float32 [N]  raw reward received on arriving at this observation (0 on is_first)
  'is_first'   bool [N]     first observation of an episode (after reset or auto-reset)
  'is_last'    bool [N]     last observation of an episode (termination or time limit)
  'is_terminal' bool [N]    episode ended by the MDP (no bootstrap); a time-limit truncation
                            is last but not terminal
  'is_game_over' bool [N]   the *scored* episode ends here. Equals is_last except for Atari
                            with life-loss termination, where is_last marks each lost life and
                            is_game_over the end of the game (scores count whole games).

Auto-reset: an env whose previous step was `is_last` ignores its action on the next `step`
and returns the first observation of a new episode (`is_first=True`, reward 0). This is the
DreamerV3 / envpool convention, so a recorded stream of steps is all the model needs.

On-device envs (pure JAX, e.g. the sprite env) also offer, after reset():
  env_carry = env.device_carry()                         the env's state and key, a pytree
  env_carry, step = env.device_step(env_carry, actions)  pure and jittable; step as above,
                                                         leaves jax arrays
so the train loop can run act -> env step -> replay add for many steps in one jitted loop
(wm_jax/train.py, `run.collect_on_device`); `step(actions)` must equal a device_step of the
env's own carry.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.errors import UnknownNameError

Step = dict[str, np.ndarray]
STEP_KEYS = ("reward", "is_first", "is_last", "is_terminal", "is_game_over")


@dataclasses.dataclass(frozen=True)
class ArraySpec:
  """Shape (without the batch axis) and dtype of one observation entry."""
  shape: tuple[int, ...]
  dtype: str


@dataclasses.dataclass(frozen=True)
class ActionSpec:
  """Discrete actions are int32 [N] in [0, num_actions); continuous are float32 [N, dim]
  in [low, high] (always [-1, 1] for the suites here)."""
  discrete: bool
  num_actions: int = 0          # discrete only
  dim: int = 0                  # continuous only
  low: float = -1.0
  high: float = 1.0

  @property
  def shape(self) -> tuple[int, ...]:
    """Per-env shape of one action: () for discrete, (dim,) for continuous."""
    return () if self.discrete else (self.dim,)

  @property
  def size(self) -> int:
    """Width of the model-format action: num_actions (one-hot) or dim."""
    return self.num_actions if self.discrete else self.dim

  @property
  def dtype(self) -> str:
    return "int32" if self.discrete else "float32"


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """What a model needs to know about an env: observation entries and the action space."""
  obs: Mapping[str, ArraySpec]
  act: ActionSpec


class BatchedEnv(Protocol):
  """N environments stepped together; see the module docstring for the Step dict."""
  num_envs: int
  spec: EnvSpec
  protocol: Any   # a frozen dataclass (the protocol card), written into every run directory
  suite: str      # 'atari', 'dmc', 'dmc_vision', 'classic', 'vizdoom' or 'sprite'
  task: str       # game or task name as given to make_env
  frames_per_step: int   # emulator/control frames per agent step (Atari 4, DMC action repeat)

  def reset(self) -> Step: ...
  def step(self, actions: np.ndarray) -> Step: ...
  def close(self) -> None: ...


def check_name(kind: str, name: str, known: Sequence[str]) -> None:
  """Raises UnknownNameError with one sentence naming close matches when `name` is unknown."""
  if name in known:
    return
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
  hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
      f"choose one of {', '.join(sorted(known))}.")
  raise UnknownNameError(f"Unknown {kind} {name!r}: {hint}")


def replace_protocol(protocol: Any, kind: str, overrides: Mapping[str, Any]) -> Any:
  """`dataclasses.replace(protocol, **overrides)`, naming close field matches on a typo."""
  fields = [f.name for f in dataclasses.fields(protocol)]
  for key in overrides:
    check_name(f"{kind} protocol field", key, fields)
  return dataclasses.replace(protocol, **overrides)


def first_step_flags(num_envs: int) -> Step:
  """The non-observation part of a Step where every env starts an episode: [N] arrays."""
  false = np.zeros(num_envs, bool)
  return {"reward": np.zeros(num_envs, np.float32), "is_first": np.ones(num_envs, bool),
          "is_last": false, "is_terminal": false.copy(), "is_game_over": false.copy()}


def auto_reset_flags(was_last: np.ndarray, reward: np.ndarray, is_last: np.ndarray,
                     is_terminal: np.ndarray, is_game_over: np.ndarray | None = None) -> Step:
  """The non-observation part of a Step under next-step auto-reset, all [N].

  Envs whose previous step was last (`was_last`) have just been reset by the backend: they
  are is_first with reward 0. `is_game_over` defaults to `is_last`.
  """
  is_last = np.asarray(is_last, bool)
  return {"reward": np.where(was_last, 0.0, reward).astype(np.float32),
          "is_first": np.asarray(was_last, bool).copy(), "is_last": is_last,
          "is_terminal": np.asarray(is_terminal, bool),
          "is_game_over": is_last.copy() if is_game_over is None else is_game_over}


class SeedStackedEnv:
  """One BatchedEnv per seed, stepped together for a run that trains S seeds in one process
  (wm_jax/train.py, `run.num_seeds`): Step leaves are [S, N, ...], actions [S, N, ...].

  Each env is exactly the one a single-seed run with that seed would make, so seed s sees the
  same episodes here as alone.
  """

  def __init__(self, envs: Sequence[BatchedEnv]):
    self.envs = list(envs)
    first = self.envs[0]
    self.num_envs, self.spec, self.protocol = first.num_envs, first.spec, first.protocol
    self.suite, self.task, self.frames_per_step = first.suite, first.task, first.frames_per_step

  def reset(self) -> Step:
    return _stack_steps([env.reset() for env in self.envs])

  def step(self, actions: np.ndarray) -> Step:
    return _stack_steps([env.step(a) for env, a in zip(self.envs, actions)])

  def close(self) -> None:
    for env in self.envs:
      env.close()

  def device_carry(self):
    """Every seed's env carry, stacked on a leading seed axis (on-device envs only)."""
    carries = [env.device_carry() for env in self.envs]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *carries)

  def device_step(self, env_carry, actions):
    """device_step of every seed's env (they differ only in their carries), vmapped."""
    return jax.vmap(self.envs[0].device_step)(env_carry, actions)


def steps_on_device(env) -> bool:
  """Whether `env` offers device_carry / device_step (stacked seeds: every seed's env does)."""
  envs = env.envs if isinstance(env, SeedStackedEnv) else [env]
  return all(hasattr(e, "device_step") for e in envs)


def _stack_steps(steps: Sequence[Step]) -> Step:
  return {k: np.stack([step[k] for step in steps]) for k in steps[0]}
