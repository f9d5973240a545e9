"""Env throughput with random actions: env steps/s and frames/s per suite, printed as JSON.

  python -m benchmarks.env_throughput [--steps=200] [--warmup=20]

Each case builds N envs, resets, takes `warmup` untimed steps, then times `steps` batched
steps. env_steps_per_s counts steps of single envs (N per batched step); frames_per_s
multiplies by the env's frames_per_step (Atari frame skip 4, DMC action repeat 2).
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app, flags
import numpy as np

from wm_jax.envs import make_env

_STEPS = flags.DEFINE_integer("steps", 200, "Timed batched steps per case.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed batched steps before timing.")

# (suite, task, num_envs); DMC vision renders in software on CPU, so fewer envs.
CASES = (("atari", "Pong", 1), ("atari", "Pong", 8), ("atari", "Pong", 32),
         ("dmc", "cheetah_run", 8), ("dmc_vision", "cheetah_run", 4), ("sprite", "reach", 32))


def random_actions(env, rng: np.random.Generator) -> np.ndarray:
  """Uniform random actions for every env: int32 [N] or float32 [N, A] in [low, high]."""
  act = env.spec.act
  if act.discrete:
    return rng.integers(0, act.num_actions, env.num_envs).astype(np.int32)
  return rng.uniform(act.low, act.high, (env.num_envs, act.dim)).astype(np.float32)


def measure(suite: str, task: str, num_envs: int, steps: int, warmup: int) -> dict:
  """Times `steps` random batched steps after `warmup`; returns rates and the setting."""
  env = make_env(suite, task, num_envs, seed=0)
  rng = np.random.default_rng(0)
  env.reset()
  for _ in range(warmup):
    env.step(random_actions(env, rng))
  actions = [random_actions(env, rng) for _ in range(steps)]
  start = time.perf_counter()
  for a in actions:
    env.step(a)
  seconds = time.perf_counter() - start
  env.close()
  env_steps = steps * num_envs
  return {"suite": suite, "task": task, "num_envs": num_envs, "batched_steps": steps,
          "seconds": round(seconds, 3), "env_steps_per_s": round(env_steps / seconds, 1),
          "frames_per_s": round(env_steps * env.frames_per_step / seconds, 1)}


def machine_info() -> dict:
  """CPU count (all and usable), platform, library versions and JAX devices."""
  import envpool
  import jax
  return {"cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
          "platform": platform.platform(), "python": platform.python_version(),
          "jax": jax.__version__, "envpool": envpool.__version__,
          "jax_devices": [str(d) for d in jax.devices()],
          "mujoco_gl": os.environ.get("MUJOCO_GL")}


def main(argv) -> None:
  del argv
  results = [measure(*case, steps=_STEPS.value, warmup=_WARMUP.value) for case in CASES]
  print(json.dumps({"machine": machine_info(), "results": results}, indent=2))


if __name__ == "__main__":
  app.run(main)
