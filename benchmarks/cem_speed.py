"""PlaNet's planning time per env step (CEM in latent space, wm_jax/core/planning.py), as JSON.

  python -m benchmarks.cem_speed [--variant=dmc_proprio] [--num_envs=1] [--repeats=5]

Builds the PlaNet agent of experiments/configs/planet.py:<variant> for its DMC task, then
times the jitted act (one RSSM filtering step + CEM: horizon x candidates x iterations prior
steps and reward predictions) after a compile call, with untrained parameters (planning cost
does not depend on them).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
from absl import app, flags

from experiments.configs import planet
from wm_jax.agents import make_agent
from wm_jax.envs import make_env

_VARIANT = flags.DEFINE_enum("variant", "dmc_proprio", planet.VARIANTS, "PlaNet config variant")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 1, "envs planned for in one call")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed act calls")


def main(_):
  config = planet.get_config(_VARIANT.value)
  env = make_env(config.env.suite, config.env.task, _NUM_ENVS.value, 0, **config.env.protocol)
  agent = make_agent("planet", config.agent, env.spec)
  state = agent.init(jax.random.PRNGKey(0))
  act = jax.jit(agent.act, static_argnums=4)
  carry, obs = agent.initial_carry(env.num_envs), env.reset()
  obs = {k: obs[k] for k in list(env.spec.obs) + ["is_first"]}
  start = time.perf_counter()
  jax.block_until_ready(act(state, carry, obs, jax.random.PRNGKey(1), True))
  compile_s = time.perf_counter() - start
  seconds = []
  for i in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(act(state, carry, obs, jax.random.PRNGKey(2 + i), True))
    seconds.append(time.perf_counter() - start)
  env.close()
  planner = config.agent.planner.to_dict()
  per_step = statistics.median(seconds)
  print(json.dumps({
      "benchmark": "cem_speed", "variant": _VARIANT.value, "task": config.env.task,
      "num_envs": _NUM_ENVS.value, "planner": planner,
      "prior_steps_per_plan": planner["horizon"] * planner["candidates"] * planner["iterations"],
      "compile_s": round(compile_s, 2), "seconds_per_env_step_median": round(per_step, 4),
      "plans_per_s": round(_NUM_ENVS.value / per_step, 2),
      "device": str(jax.devices()[0].device_kind), "platform": platform.platform(),
      "cpus_usable": len(os.sched_getaffinity(0))}, indent=1))


if __name__ == "__main__":
  app.run(main)
