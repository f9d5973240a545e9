"""The cost of training S seeds vmapped in one process (run.num_seeds) against one seed, as JSON.

  python -m benchmarks.seed_scaling [--config=experiments/configs/dreamerv3.py:debug]
      [--seeds=1,5] [--seconds=120] [--rounds=1] [--overrides=--config.env.num_envs=4,...]

Each run is `experiments.train` in a fresh workdir with run.num_seeds=S, stopped by SIGINT
`--seconds` after its first update has compiled and logged; its rates are read from the log
intervals after that one (benchmarks/run_figures.py), per seed. `time_ratio` is the wall time
of S seeds over that of one seed for the same agent steps and updates per seed: S separate runs
one after another cost S, and issue 10's goal on an accelerator is <= 1.5 at S = 5. Runs
alternate over the seed counts, `--rounds` times; the JSON holds every run and the medians.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile

from absl import app, flags
import jax

from benchmarks.run_figures import log_tail, run_command, steady_figures, updates_began

_CONFIG = flags.DEFINE_string("config", "experiments/configs/dreamerv3.py:debug",
                              "config file and variant, as for experiments.train")
_SEEDS = flags.DEFINE_list("seeds", ["1", "5"], "seed counts to compare; the first is the base")
_SECONDS = flags.DEFINE_integer("seconds", 120, "seconds each run trains after its first "
                                "update, before its SIGINT")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "alternations over the seed counts")
_OVERRIDES = flags.DEFINE_list("overrides", [], "extra --config.* flags for every run")

# Never reached: the runs end by SIGINT. No evaluation inside the timed window.
_ENDLESS = ["--config.run.steps=1000000000", "--config.run.eval_every=1000000000"]


def run_once(num_seeds: int, log_dir: str) -> dict:
  """One run of `num_seeds` seeds; its per-seed steady-state rates."""
  workdir = tempfile.mkdtemp(prefix=f"seed_scaling_{num_seeds}_")
  log_path = os.path.join(log_dir, f"seeds_{num_seeds}.log")
  cmd = [sys.executable, "-m", "experiments.train", f"--config={_CONFIG.value}",
         f"--workdir={workdir}", "--noprogress", f"--config.run.num_seeds={num_seeds}",
         *_ENDLESS, *_OVERRIDES.value]
  status, _ = run_command(cmd, _SECONDS.value + 600, log_path, sigint_after_s=_SECONDS.value,
                          clock_starts=lambda: updates_began(workdir))
  try:
    figures = steady_figures(workdir)
  except (OSError, ValueError, KeyError, ZeroDivisionError) as e:
    figures = {"error": f"no figures ({e}); {log_tail(log_path)}"}
  shutil.rmtree(workdir, ignore_errors=True)   # its checkpoint holds the replays
  return {"num_seeds": num_seeds, "exit": status, **figures}


def main(_):
  counts = [int(s) for s in _SEEDS.value]
  log_dir = tempfile.mkdtemp(prefix="seed_scaling_logs_")
  runs = []
  for _ in range(_ROUNDS.value):
    for count in counts:
      runs.append(run_once(count, log_dir))
      print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
  rate = {c: statistics.median(r["agent_steps_per_s"] for r in runs
                               if r["num_seeds"] == c and "agent_steps_per_s" in r)
          for c in counts if any("agent_steps_per_s" in r for r in runs if r["num_seeds"] == c)}
  base = counts[0]
  print(json.dumps({
      "benchmark": "seed_scaling", "config": _CONFIG.value, "overrides": _OVERRIDES.value,
      "seconds_per_run": _SECONDS.value, "rounds": _ROUNDS.value,
      "device": str(jax.devices()[0].device_kind), "platform": platform.platform(),
      "cpus_usable": len(os.sched_getaffinity(0)),
      "median_agent_steps_per_s_per_seed": rate,
      "time_ratio": {c: round(rate[base] / rate[c], 3) for c in rate if base in rate},
      "runs": runs, "logs": log_dir}, indent=1))


if __name__ == "__main__":
  app.run(main)
