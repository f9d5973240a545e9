"""ViZDoom scenarios through envpool: 3-D first-person frames, 64x64 RGB, discrete actions.

The suite's 3-D benchmark for offline world modelling (the role CS:GO plays in the DWM paper,
../shared/seeds/003 sec. 5.1). envpool runs each env as a ViZDoom subprocess; the scenario
files (`<task>.cfg` / `.wad`) ship in envpool's assets, task names are envpool's without '-v1'
('HealthGathering', 'MyWayHome', 'Basic', ...).

Every option is passed explicitly (envpool's defaults are 84x84 with a 4-frame stack):
  * `use_combined_action`: the scenario's buttons become one discrete action per allowed
    button combination (HealthGathering: 6), instead of a continuous button vector;
  * the reward is envpool's shaped `reward_config` on top of the scenario's own reward (health,
    damage, deaths, ammo, ...), recorded here by name only: envpool's default, unchanged;
  * `max_episode_steps` is a time limit (a truncation); a death ends the episode (terminal).
The ViZDoom engine writes its settings file `_vizdoom.ini` into its working directory: envs are
started from ~/.cache/wm_jax/vizdoom (or $XDG_CACHE_HOME) so that it lands there, not in yours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from wm_jax.envs import base
from wm_jax.envs.atari import EnvpoolPixelEnv


@dataclasses.dataclass(frozen=True)
class VizDoomProtocol:
  """The ViZDoom protocol card (defaults: envpool's, at 64x64 RGB and combined actions).

  image_size: frames are [image_size, image_size, 3] RGB uint8 (area resize).
  frame_skip: game tics per agent step (the action is repeated).
  max_episode_steps: time limit in agent steps (envpool's 525 = 2100 tics at skip 4).
  reward: 'envpool_default' (envpool's shaped reward_config); the only value supported.
  """
  image_size: int = 64
  frame_skip: int = 4
  max_episode_steps: int = 525
  reward: str = "envpool_default"


def vizdoom_tasks() -> list[str]:
  """Scenarios envpool ships with both their .cfg and .wad ('HealthGathering', ...)."""
  from envpool.vizdoom import registration
  maps = registration.maps_path
  scenarios = [name[:-len(".cfg")] for name in os.listdir(maps) if name.endswith(".cfg")]
  return sorted("".join(part.capitalize() for part in name.split("_")) for name in scenarios
                if os.path.exists(os.path.join(maps, name + ".wad")))


@contextlib.contextmanager
def _in_cache_dir():
  """Runs the block with the working directory in wm_jax's ViZDoom cache folder."""
  cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                       "wm_jax", "vizdoom")
  # Each engine makes ./_vizdoom/ at start-up if it is missing, and dies (SIGSEGV, "Failed to
  # create ./_vizdoom/ directory: File exists") when an engine started beside it made it first
  # (seen once in CI on a fresh machine); made here, it exists before any engine starts.
  os.makedirs(os.path.join(cache, "_vizdoom"), exist_ok=True)
  previous = os.getcwd()
  os.chdir(cache)
  try:
    yield
  finally:
    os.chdir(previous)


class VizDoomEnv(EnvpoolPixelEnv):
  """N ViZDoom scenarios stepped together by envpool; see wm_jax.envs.base for the Step dict."""

  suite = "vizdoom"

  def __init__(self, task: str, num_envs: int, seed: int, protocol: VizDoomProtocol):
    import envpool
    base.check_name("ViZDoom scenario", task, vizdoom_tasks())
    base.check_name("ViZDoom reward", protocol.reward, ["envpool_default"])
    self.task = task
    self.num_envs = num_envs
    self.protocol = protocol
    self.frames_per_step = protocol.frame_skip
    size = protocol.image_size
    with _in_cache_dir():   # the engine writes _vizdoom.ini into its working directory
      self._env = envpool.make(
          f"{task}-v1", env_type="gymnasium", num_envs=num_envs, seed=seed, img_height=size,
          img_width=size, stack_num=1, frame_skip=protocol.frame_skip, use_combined_action=True,
          use_inter_area_resize=True, max_episode_steps=protocol.max_episode_steps)
    self._set_spec(size)
