"""Sprite: a tiny pure-JAX pixel env whose next frame depends on the action.

An `image_size` x `image_size` RGB frame shows a `grid` x `grid` board (4x4 cells of 16x16
pixels by default, so a conv encoder's 4x4 feature map sees one cell per position) with a
red agent and a green goal on a dark background. Actions 0..4 are
noop / up / down / left / right and move the agent one cell (walls stop it). Reaching the
goal gives reward +1 and the goal respawns on another random cell, so the episode goes on;
episodes end only at the time limit (`episode_length` steps, a truncation: is_last, never
is_terminal). Per 50-step episode a random policy scores ~1.2 and walking straight to the
goal ~18 (grid 4; on grid 8: ~0.2 and ~9), so a world model plus agent learns it in minutes
on a CPU.

The core is functional: `reset(key) -> (state, step)` and `step(state, action, key) ->
(state, step)` are pure, jit/vmap/lax.scan-able, and `step` auto-resets after an episode end
(the base.py convention). `SpriteEnv` is the thin batched host wrapper the train loop uses; its
`device_step` lets the loop collect many steps in one jitted call (base.py, on-device envs).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax import errors
from wm_jax.envs import base

# Row/column move of each action: noop, up, down, left, right.
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)
_AGENT_RGB = np.array([230, 40, 40], np.uint8)
_GOAL_RGB = np.array([40, 200, 60], np.uint8)
_BACKGROUND_RGB = np.array([20, 20, 30], np.uint8)


@dataclasses.dataclass(frozen=True)
class SpriteProtocol:
  """The sprite env card: frame side in pixels, board cells per side, steps per episode."""
  image_size: int = 64
  grid: int = 4
  episode_length: int = 50

  def __post_init__(self):
    if self.grid < 2 or self.image_size % self.grid:
      raise errors.RunConfigError(
          f"Sprite grid={self.grid} must be at least 2 and divide image_size="
          f"{self.image_size}; pick e.g. grid=4 or grid=8.")


class SpriteState(NamedTuple):
  """agent, goal: int32 [2] (row, col) cells; t: int32 [] steps taken this episode."""
  agent: jax.Array
  goal: jax.Array
  t: jax.Array


def render(state: SpriteState, protocol: SpriteProtocol = SpriteProtocol()) -> jax.Array:
  """The frame of one state: uint8 [image_size, image_size, 3].

  Sprites fill their cell less a 1-pixel margin; the agent is drawn over the goal.
  """
  cell = protocol.image_size // protocol.grid
  pix = jnp.arange(protocol.image_size)
  inside = (pix % cell >= 1) & (pix % cell < cell - 1)

  def mask(pos: jax.Array) -> jax.Array:
    rows = (pix // cell == pos[0]) & inside
    cols = (pix // cell == pos[1]) & inside
    return (rows[:, None] & cols[None, :])[..., None]

  frame = jnp.where(mask(state.goal), _GOAL_RGB, _BACKGROUND_RGB)
  return jnp.where(mask(state.agent), _AGENT_RGB, frame).astype(jnp.uint8)


def locate(frame: jax.Array, protocol: SpriteProtocol = SpriteProtocol()
           ) -> tuple[jax.Array, jax.Array]:
  """Frames [..., image_size, image_size, 3] (uint8, or float in [0, 1], real or generated) ->
  (agent cell, goal cell), int32 [..., 2] each: the cells whose mean colour is reddest and
  greenest; on a rendered frame, the state's (the two never share a cell: a reached goal
  respawns elsewhere)."""
  g = protocol.grid
  cell = protocol.image_size // g
  rgb = frame.astype(jnp.float32).reshape(frame.shape[:-3] + (g, cell, g, cell, 3)).mean((-4, -2))
  def argmax_cell(score):                                  # [..., g, g] -> [..., 2]
    flat = jnp.argmax(score.reshape(score.shape[:-2] + (g * g,)), -1)
    return jnp.stack([flat // g, flat % g], -1).astype(jnp.int32)
  return (argmax_cell(rgb[..., 0] - rgb[..., 1]), argmax_cell(rgb[..., 1] - rgb[..., 0]))


def goal_visible(frame: jax.Array, protocol: SpriteProtocol = SpriteProtocol()) -> jax.Array:
  """Frames [..., image_size, image_size, 3] (uint8, or float in [0, 1]) -> bool [...]: some
  cell is at least half as green as a drawn goal's cell (mean green minus red), which every
  rendered frame has; a world model's imagined frame may have lost its goal."""
  g = protocol.grid
  cell = protocol.image_size // g
  rgb = frame.astype(jnp.float32).reshape(frame.shape[:-3] + (g, cell, g, cell, 3)).mean((-4, -2))
  if not jnp.issubdtype(frame.dtype, jnp.floating):
    rgb = rgb / 255.0
  greenness = (rgb[..., 1] - rgb[..., 0]).max((-2, -1))
  goal_cell = (int(_GOAL_RGB[1]) - int(_GOAL_RGB[0])) / 255.0 * ((cell - 2) / cell) ** 2
  return greenness >= 0.5 * goal_cell


def walk_to_goal(frame: jax.Array, protocol: SpriteProtocol = SpriteProtocol()) -> jax.Array:
  """Frames [..., H, W, 3] -> int32 [...] the action of the scripted policy that walks straight
  to the goal seen in the frame (rows first, then columns; noop on it): about 18 per 50-step
  episode in the real env, the reference a world model's imagination should support."""
  agent, goal = locate(frame, protocol)
  down, right = goal[..., 0] - agent[..., 0], goal[..., 1] - agent[..., 1]
  return jnp.select([down < 0, down > 0, right < 0, right > 0], [1, 2, 3, 4], 0).astype(jnp.int32)


def _other_cell(key: jax.Array, avoid: jax.Array, grid: int) -> jax.Array:
  """A uniformly random cell [2] different from `avoid` [2]."""
  index = jax.random.randint(key, (), 0, grid * grid - 1)
  index = index + (index >= avoid[0] * grid + avoid[1])
  return jnp.stack([index // grid, index % grid]).astype(jnp.int32)


def _observe(state: SpriteState, reward: jax.Array, is_first: jax.Array,
             protocol: SpriteProtocol) -> base.Step:
  """The Step dict of one env (no batch axis): 'image' uint8 [image_size, image_size, 3]."""
  is_last = state.t >= protocol.episode_length
  return {"image": render(state, protocol), "reward": jnp.asarray(reward, jnp.float32),
          "is_first": jnp.asarray(is_first), "is_last": is_last,
          "is_terminal": jnp.zeros((), bool), "is_game_over": is_last}


def reset(key: jax.Array, protocol: SpriteProtocol = SpriteProtocol()
          ) -> tuple[SpriteState, base.Step]:
  """A new episode: agent and goal on two distinct random cells."""
  agent_key, goal_key = jax.random.split(key)
  agent = jax.random.randint(agent_key, (2,), 0, protocol.grid, jnp.int32)
  state = SpriteState(agent, _other_cell(goal_key, agent, protocol.grid), jnp.zeros((), jnp.int32))
  return state, _observe(state, 0.0, True, protocol)


def step(state: SpriteState, action: jax.Array, key: jax.Array,
         protocol: SpriteProtocol = SpriteProtocol()) -> tuple[SpriteState, base.Step]:
  """Moves the agent by `action` (int in 0..4); after an episode end, resets instead."""
  agent = jnp.clip(state.agent + jnp.asarray(_MOVES)[action], 0, protocol.grid - 1)
  reached = jnp.all(agent == state.goal)
  goal = jnp.where(reached, _other_cell(key, agent, protocol.grid), state.goal)
  moved = SpriteState(agent, goal, state.t + 1)
  moved_step = _observe(moved, reached.astype(jnp.float32), False, protocol)
  restart = reset(key, protocol)
  was_last = state.t >= protocol.episode_length
  return jax.tree.map(lambda r, m: jnp.where(was_last, r, m), restart, (moved, moved_step))


class SpriteEnv:
  """N sprite envs behind the BatchedEnv interface (one jitted vmap per call)."""

  suite = "sprite"
  task = "reach"

  def __init__(self, num_envs: int, seed: int, protocol: SpriteProtocol = SpriteProtocol()):
    self.num_envs = num_envs
    self.protocol = protocol
    self.frames_per_step = 1
    size = protocol.image_size
    self.spec = base.EnvSpec(
        obs={"image": base.ArraySpec((size, size, 3), "uint8")},
        act=base.ActionSpec(discrete=True, num_actions=len(_MOVES)))
    self._key = jax.random.PRNGKey(seed)
    self._reset = jax.jit(jax.vmap(functools.partial(reset, protocol=protocol)))
    self._step = jax.jit(self.device_step)
    self._state = None

  def _keys(self) -> jax.Array:
    """N fresh keys [N, 2], advancing the env's own key."""
    self._key, key = jax.random.split(self._key)
    return jax.random.split(key, self.num_envs)

  def device_carry(self):
    """(SpriteState with leaves [N, ...], key [2]): the env's whole state, for `device_step`.
    Call after reset()."""
    return self._state, self._key

  def device_step(self, env_carry, actions: jax.Array):
    """A pure, jittable `step`: (env_carry, actions int [N]) -> (env_carry, Step of jax arrays).
    The train loop runs it inside its on-device collection loop; `step` runs it on the host
    with the same key chain, so both give the same episodes."""
    state, key = env_carry
    key, sub = jax.random.split(key)
    step_all = jax.vmap(functools.partial(step, protocol=self.protocol))
    state, out = step_all(state, jnp.asarray(actions, jnp.int32),
                          jax.random.split(sub, self.num_envs))
    return (state, key), out

  def reset(self) -> base.Step:
    """Starts every episode: 'image' uint8 [N, image_size, image_size, 3], is_first all True."""
    self._state, out = self._reset(self._keys())
    return jax.tree.map(np.asarray, out)

  def step(self, actions: np.ndarray) -> base.Step:
    """One step of every env; actions int [N] in 0..4."""
    (self._state, self._key), out = self._step(self.device_carry(), actions)
    return jax.tree.map(np.asarray, out)

  def close(self) -> None:
    self._state = None
