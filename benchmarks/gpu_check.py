"""One prepared accelerator check: the suite's speed figures on a GPU (or TPU), written as JSON.

  python -m benchmarks.gpu_check --out_dir=DIR [--checks=dreamerv3|families|NAME[@S],...]
      [--budget_s=470] [--torch_python=python3 --storm_src=DIR --diamond_src=DIR]

Runs each check in its own subprocess under a time limit (`--check_s`, or S seconds for a name
written `NAME@S`), in the order given, and appends the check's JSON to DIR/gpu_check.jsonl the
moment it finishes (so a machine lent for a few minutes keeps whatever finished), with its
stderr in DIR/logs/<check>.log. A check that would start with less than `--min_left_s` of
`--budget_s` left is skipped and recorded as such; the last line printed is a summary table.
`--checks` takes checks and the sets of CHECK_SETS: `dreamerv3` (the default; DreamerV3 S and M
in bf16 and fp32, Pong with 1 and 5 vmapped seeds; under 8 minutes) and `families` (STORM,
IRIS, DIAMOND, beside the official STORM and DIAMOND). Checks:

  speed:<method>:<sizes>:<precision>  `benchmarks.train_speed` (update time, imagination rate,
                                      compile time, peak device memory)
  official:storm:<precision>          `benchmarks.storm_official --device=cuda` (STORM's
                                      world-model update, the official PyTorch code side by side)
  official:diamond                    `benchmarks.diamond_official --device=cuda`
  atari:<method>[:<seeds>]            a short Atari-100k Pong run through `experiments.train` at the
                                      method's atari100k config, stopped by SIGINT
                                      `--atari_s` seconds after its first update has compiled
                                      and logged: env frames/s and updates/s of the log
                                      intervals after that one. Every component of a
                                      staged schedule (IRIS, DIAMOND) trains from update 0, and
                                      learning starts at 1,024 agent steps, so the figure is the
                                      steady-state rate of the full update. With <seeds>, that
                                      many seeds train vmapped in the one process
                                      (run.num_seeds); the rates are per seed.

Official checks need --torch_python (a Python with torch and CUDA; STORM also needs einops)
and the source checkouts; without them they are skipped. Nothing here is needed by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.run_figures import log_tail, run_command, steady_figures, updates_began

FLAGS = flags.FLAGS
# Measured on one H200 (2026-11-27, jax 0.11.2, a fresh compilation cache): a DreamerV3 speed
# check takes 60-70 s (42-47 s of it the update's compile), official:storm:bfloat16 71 s, an Atari
# run about 50 s to its first update; official:diamond and speed:iris:paper took over 110 s.
CHECK_SETS = {
    # Issue 10's check, under 8 minutes: DreamerV3 S and M in both precisions, Pong 1 vs 5 seeds.
    "dreamerv3": ["speed:dreamerv3:S:bfloat16", "speed:dreamerv3:S:float32", "atari:dreamerv3@130",
                  "atari:dreamerv3:5@130", "speed:dreamerv3:M:bfloat16",
                  "speed:dreamerv3:M:float32"],
    # The Transformer and diffusion families, beside their official code where it is given.
    "families": ["official:storm:bfloat16", "official:diamond@240",
                 "speed:iris:paper:bfloat16@240", "speed:storm:paper:bfloat16",
                 "speed:diamond:paper:float32@180", "atari:storm@130", "atari:diamond@180",
                 "atari:iris@180", "official:storm:float32", "speed:storm:paper:float32",
                 "speed:iris:paper:float32@240"],
}
flags.DEFINE_string("out_dir", None, "folder for gpu_check.jsonl and the logs")
flags.DEFINE_list("checks", ["dreamerv3"], "checks or check sets to run, in order (see the "
                  "docstring)")
flags.DEFINE_integer("budget_s", 470, "seconds for all checks together")
flags.DEFINE_integer("check_s", 100, "time limit of a check without its own `@<seconds>`")
flags.DEFINE_integer("min_left_s", 45, "skip a check that would start with less time left")
flags.DEFINE_integer("atari_s", 40, "seconds each Atari run trains after its first update, "
                     "before its SIGINT")
flags.DEFINE_integer("speed_updates", 4, "timed updates per train_speed figure")
flags.DEFINE_list("atari_overrides", [], "extra --config.* flags for every Atari run (e.g. a "
                  "smaller model for a rehearsal on the CPU)")
flags.DEFINE_enum("official_device", "cuda", ["cuda", "cpu"], "torch device of official:* checks")
flags.DEFINE_string("torch_python", None, "Python with torch (CUDA) for official:* checks")
flags.DEFINE_string("storm_src", None, "checkout of STORM's repository (weipu-zhang/STORM)")
flags.DEFINE_string("diamond_src", None, "checkout of DIAMOND's repository (eloialonso/diamond)")

STAGED_SCHEDULES = {
    "iris": ["--config.agent.schedule.world_model_start=0",
             "--config.agent.schedule.actor_critic_start=0"],
    "diamond": ["--config.agent.schedule.actor_critic_start=0"],
}


def last_json(text: str) -> dict:
  """The JSON object a benchmark printed last (it may span several lines)."""
  start = text.rfind("\n{")
  return json.loads(text[start + 1 if start >= 0 else text.find("{"):])


def speed_command(method: str, sizes: str, precision: str) -> list:
  return [sys.executable, "-m", "benchmarks.train_speed", f"--method={method}", f"--sizes={sizes}",
          f"--precision={precision}", f"--updates={FLAGS.speed_updates}"]


def expand_checks(entries: list) -> list:
  """[(check name, its own time limit in seconds or None)] of `--checks` entries, each a check
  (optionally `name@<seconds>`) or the name of a set in CHECK_SETS."""
  names = [n for entry in entries for n in CHECK_SETS.get(entry, [entry])]
  checks = [(n.split("@")[0], n.split("@")[1] if "@" in n else None) for n in names]
  bad_limit = [f"{n}@{s}" for n, s in checks if s is not None and not s.isdigit()]
  if bad_limit:
    raise app.UsageError(f"Bad time limit in {bad_limit[0]!r}: write the seconds as a whole "
                         f"number, e.g. atari:dreamerv3@130.")
  check_names([n for n, _ in checks])
  return [(n, None if s is None else int(s)) for n, s in checks]


def check_names(names: list) -> None:
  """One sentence for a check name of none of the docstring's forms."""
  forms = {"speed": (3,), "official:storm": (0, 1), "official:diamond": (0,), "atari": (1, 2)}
  for name in names:
    kind, *args = name.split(":")
    if kind == "official":
      kind, args = f"official:{args[0] if args else ''}", args[1:]
    bad_seeds = kind == "atari" and len(args) == 2 and not args[1].isdigit()
    if len(args) not in forms.get(kind, ()) or bad_seeds:
      raise app.UsageError(
          f"Unknown check {name!r}: use speed:<method>:<sizes>:<precision>, "
          f"official:storm:<precision>, official:diamond, atari:<method>[:<seeds>] or a set "
          f"({', '.join(CHECK_SETS)}).")


def official_command(which: str, precision: str | None) -> list | None:
  src = {"storm": FLAGS.storm_src, "diamond": FLAGS.diamond_src}[which]
  if not FLAGS.torch_python or not src:
    return None
  cmd = [sys.executable, "-m", f"benchmarks.{which}_official", f"--device={FLAGS.official_device}",
         f"--official_python={FLAGS.torch_python}", f"--official_src={src}", "--rounds=3"]
  return cmd + ([f"--precision={precision}"] if precision else [])


def run_atari(method: str, seeds: str, limit_s: float, log_path: str) -> dict:
  workdir = tempfile.mkdtemp(prefix=f"gpu_check_{method}_")
  cmd = [sys.executable, "-m", "experiments.train",
         f"--config=experiments/configs/{method}.py:atari100k", f"--workdir={workdir}",
         f"--config.run.num_seeds={seeds}",
         # Intervals of 32 agent steps: several must finish within --atari_s after the first
         # update's (on an H200 DreamerV3 S does 40 updates/s; IRIS and DIAMOND far fewer).
         "--config.run.learning_starts=1024", "--config.run.log_every=32",
         "--config.run.replay_capacity=20000", *STAGED_SCHEDULES.get(method, []),
         *FLAGS.atari_overrides]
  status, _ = run_command(cmd, limit_s, log_path, sigint_after_s=FLAGS.atari_s,
                          clock_starts=lambda: updates_began(workdir))
  result = {"command": " ".join(cmd[1:]), "trained_s_after_first_update": FLAGS.atari_s,
            "exit": status}
  try:
    result.update(steady_figures(workdir))
  except (OSError, ValueError, KeyError, ZeroDivisionError) as e:
    result["error"] = f"no figures: {e}"
  shutil.rmtree(workdir, ignore_errors=True)   # its checkpoint holds the replay
  if status not in (0, "timeout"):
    result["error"] = log_tail(log_path)
  return result


def run_check(name: str, limit_s: float, log_path: str) -> dict:
  kind, *args = name.split(":")
  if kind == "atari":
    return run_atari(args[0], (args[1:] or ["1"])[0], limit_s, log_path)
  cmd = speed_command(*args) if kind == "speed" else official_command(args[0], (args[1:] or [None])[0])
  if cmd is None:
    return {"skipped": "no --torch_python or source checkout"}
  status, out = run_command(cmd, limit_s, log_path)
  if status != 0:
    return {"exit": status, "error": log_tail(log_path)}
  return last_json(out)


def summary_line(name: str, result: dict, seconds: float) -> str:
  if "skipped" in result or "error" in result:
    state = result.get("skipped") or f"exit {result.get('exit')}: {result['error'][-160:]}"
  else:
    keys = ("speedup_median", "update_speedup_median", "sampling_speedup_median",
            "env_frames_per_s", "updates_per_s")
    state = ", ".join(f"{k}={result[k]}" for k in keys if k in result) or "ok (see JSON)"
  return f"{name:<32} {seconds:6.0f}s  {state}"


def main(_):
  if not FLAGS.out_dir:
    raise app.UsageError("Give --out_dir=DIR, the folder for gpu_check.jsonl and the logs.")
  checks = expand_checks(FLAGS.checks)
  os.makedirs(os.path.join(FLAGS.out_dir, "logs"), exist_ok=True)
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
  # A fresh cache: a program two checks share (the official comparisons time the same updates
  # as train_speed) compiles once; every first compile is still timed.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gpu_check_jit_"))
  path = os.path.join(FLAGS.out_dir, "gpu_check.jsonl")
  start, lines = time.time(), []
  for name, own_limit_s in checks:
    left = FLAGS.budget_s - (time.time() - start)
    if left < FLAGS.min_left_s:
      result, seconds = {"skipped": f"{left:.0f} s of the budget left"}, 0.0
    else:
      t0 = time.time()
      log_path = os.path.join(FLAGS.out_dir, "logs", name.replace(":", "_") + ".log")
      result = run_check(name, min(own_limit_s or FLAGS.check_s, left), log_path)
      seconds = time.time() - t0
    with open(path, "a") as f:
      f.write(json.dumps({"check": name, "seconds": round(seconds, 1), **result}) + "\n")
    lines.append(summary_line(name, result, seconds))
    print(lines[-1], flush=True)
  print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
  app.run(main)
