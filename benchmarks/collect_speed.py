"""Collection speed on the sprite env: the host loop against the on-device loop, as JSON.

  python -m benchmarks.collect_speed [--steps=20000] [--num_envs=16] [--methods=random,dreamerv3]

Runs `wm_jax.train.train` on sprite/reach with run.collect_on_device False (one device call and
one env step per loop iteration) and True (the iterations between host events in one jitted
loop), for the random agent (act -> env step) and DreamerV3's debug policy (act -> env step ->
replay add into its 10k-step replay; learning never starts, so no update is timed). Env
steps/s come from the log intervals after the first two (which hold the compiles; once the
replay has wrapped, its pages are no longer touched for the first time); host and device runs
alternate `--rounds` times and the medians are compared. Both loops give the same episodes
(tests/test_train.py checks it).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import tempfile

import jax
from absl import app, flags

from wm_jax.train import train

_STEPS = flags.DEFINE_integer("steps", 20_000, "agent steps per run")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 16, "sprite envs stepped together")
_LOG_EVERY = flags.DEFINE_integer("log_every", 2_000, "agent steps per timed interval")
_METHODS = flags.DEFINE_list("methods", ["random", "dreamerv3"], "agents whose policy collects")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "alternations of host and device runs per method")


def sprite_config(method: str, on_device: bool):
  """The method's debug config on sprite/reach, collecting without updates."""
  config = importlib.import_module(f"experiments.configs.{method}").get_config("debug")
  config.env.suite, config.env.task, config.env.protocol = "sprite", "reach", {}
  config.env.num_envs = config.env.eval_envs = _NUM_ENVS.value
  config.run.update(dict(steps=_STEPS.value, log_every=_LOG_EVERY.value,
                         eval_every=_STEPS.value, checkpoint_every=_STEPS.value, eval_episodes=1,
                         learning_starts=10 * _STEPS.value, collect_on_device=on_device))
  return config


def measure(method: str, on_device: bool) -> dict:
  workdir = tempfile.mkdtemp(prefix=f"collect_speed_{method}_")
  train(sprite_config(method, on_device), workdir, progress=False)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f][2:]
  seconds = sum(_LOG_EVERY.value / r["steps_per_second"] for r in rows)
  return {"method": method, "collect_on_device": on_device,
          "env_steps_per_s": round(len(rows) * _LOG_EVERY.value / seconds, 1),
          "timed_steps": len(rows) * _LOG_EVERY.value}


def main(_):
  results = [measure(method, on_device) for method in _METHODS.value
             for _ in range(_ROUNDS.value) for on_device in (False, True)]
  rate = {(r["method"], r["collect_on_device"]): statistics.median(
      s["env_steps_per_s"] for s in results
      if (s["method"], s["collect_on_device"]) == (r["method"], r["collect_on_device"]))
      for r in results}
  print(json.dumps({
      "benchmark": "collect_speed", "env": "sprite/reach", "num_envs": _NUM_ENVS.value,
      "device": str(jax.devices()[0].device_kind), "platform": platform.platform(),
      "cpus_usable": len(os.sched_getaffinity(0)), "runs": results,
      "median_env_steps_per_s": {f"{m} {'device' if d else 'host'}": v
                                 for (m, d), v in rate.items()},
      "speedup": {m: round(rate[(m, True)] / rate[(m, False)], 2) for m in _METHODS.value}},
      indent=1))


if __name__ == "__main__":
  app.run(main)
