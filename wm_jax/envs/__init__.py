"""Environments behind one batched interface (wm_jax.envs.base): `make_env(suite, task, ...)`.

Suites: 'atari' (Atari-100k via envpool), 'dmc' (DMControl proprio via envpool),
'dmc_vision' (DMControl rendered 64x64 with dm_control), 'classic' (envpool classic
control), 'tabular' (envpool's toy-text tasks: Taxi, FrozenLake, ...; 'state' observations
for tabular methods such as Dyna-Q), 'vizdoom' (3-D ViZDoom scenarios via envpool), 'sprite'
(a tiny pure-JAX pixel env, task 'reach'). Every env carries its protocol
card (`env.protocol`, a frozen dataclass) and `env.frames_per_step` (emulator/control frames
per agent step, for frame budgets such as Atari-100k's 400k frames).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wm_jax.envs import base
from wm_jax.envs.base import BatchedEnv, EnvSpec, Step, UnknownNameError

SUITES = ("atari", "dmc", "dmc_vision", "classic", "tabular", "box2d", "vizdoom", "sprite")
SPRITE_TASKS = ("reach",)

# The 26 games of Atari-100k (Kaiser et al. 2020), envpool names without '-v5'.
ATARI100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown")


def check_task(suite: str, task: str) -> None:
  """Raises UnknownNameError (one sentence with close matches) unless `suite` has a task
  `task`; starts no env, so a sweep can check its games before launching any run."""
  base.check_name("suite", suite, SUITES)
  if suite == "atari":
    from wm_jax.envs import atari
    base.check_name("Atari game", task, atari.atari_games())
  elif suite in ("dmc", "dmc_vision"):
    from wm_jax.envs import dmc
    tasks = dmc.proprio_tasks() if suite == "dmc" else dmc.vision_tasks()
    base.check_name("DMC task", task, sorted(tasks))
  elif suite == "classic":
    from wm_jax.envs import classic
    base.check_name("classic-control task", task, classic.classic_tasks())
  elif suite == "box2d":
    from wm_jax.envs import classic
    base.check_name("Box2D task", task, list(classic.BOX2D_TASKS))
  elif suite == "tabular":
    from wm_jax.envs import classic
    base.check_name("tabular task", task, classic.TABULAR_TASKS)
  elif suite == "vizdoom":
    from wm_jax.envs import vizdoom
    base.check_name("ViZDoom scenario", task, vizdoom.vizdoom_tasks())
  else:
    base.check_name("sprite task", task, SPRITE_TASKS)


def make_env(suite: str, task: str, num_envs: int, seed: int, *, eval_mode: bool = False,
             **protocol_overrides: Any) -> BatchedEnv:
  """N envs of `suite`/`task` seeded seed..seed+N-1; overrides replace protocol-card fields.

  eval_mode turns off Atari life-loss termination (scores count whole games).
  """
  check_task(suite, task)
  if suite == "atari":
    from wm_jax.envs import atari
    protocol = base.replace_protocol(atari.AtariProtocol(), "Atari", protocol_overrides)
    if eval_mode:
      protocol = dataclasses.replace(protocol, life_loss_terminal=False)
    return atari.AtariEnv(task, num_envs, seed, protocol)
  if suite in ("dmc", "dmc_vision"):
    from wm_jax.envs import dmc
    protocol = base.replace_protocol(dmc.DMCProtocol(suite=suite), "DMC", protocol_overrides)
    env_cls = dmc.DMCProprioEnv if suite == "dmc" else dmc.DMCVisionEnv
    return env_cls(task, num_envs, seed, protocol)
  if suite in ("classic", "tabular"):
    from wm_jax.envs import classic
    protocol = base.replace_protocol(classic.ClassicProtocol(), suite, protocol_overrides)
    env_cls = classic.ClassicEnv if suite == "classic" else classic.TabularEnv
    return env_cls(task, num_envs, seed, protocol)
  if suite == "box2d":
    from wm_jax.envs import classic
    protocol = base.replace_protocol(classic.Box2DProtocol(), "Box2D", protocol_overrides)
    return classic.CarRacingEnv(task, num_envs, seed, protocol)
  if suite == "vizdoom":
    from wm_jax.envs import vizdoom
    protocol = base.replace_protocol(vizdoom.VizDoomProtocol(), "ViZDoom", protocol_overrides)
    return vizdoom.VizDoomEnv(task, num_envs, seed, protocol)
  from wm_jax.envs import sprite
  protocol = base.replace_protocol(sprite.SpriteProtocol(), "sprite", protocol_overrides)
  return sprite.SpriteEnv(num_envs, seed, protocol)


def protocol_card(env: BatchedEnv) -> dict[str, Any]:
  """The env's protocol card as a plain dict (for the run directory), with 'suite' and 'task'."""
  return {**dataclasses.asdict(env.protocol), "suite": env.suite, "task": env.task}


__all__ = ["ATARI100K_GAMES", "SUITES", "BatchedEnv", "EnvSpec", "Step", "UnknownNameError",
           "check_task", "make_env", "protocol_card"]
