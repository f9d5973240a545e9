"""Running `experiments.train` (or any benchmark) as a subprocess under a time limit, and the
steady-state rates of a run directory: shared by benchmarks.gpu_check and seed_scaling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time


def run_command(cmd: list, limit_s: float, log_path: str, sigint_after_s: float | None = None,
                clock_starts=None):
  """(returncode or 'timeout', stdout) of `cmd`, stderr to `log_path`, killed after `limit_s`.

  With `sigint_after_s`, SIGINT is sent that many seconds after `clock_starts()` (a predicate
  polled every second; None: at once) first holds, and the run gets the rest of `limit_s` to
  save and exit.
  """
  t0 = time.monotonic()
  clock = None if clock_starts else t0
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    try:
      while sigint_after_s is not None:
        try:
          return proc.wait(timeout=1), proc.stdout.read()
        except subprocess.TimeoutExpired:
          now = time.monotonic()
          if clock is None and clock_starts():
            clock = now
          if clock is not None and now - clock >= sigint_after_s:
            proc.send_signal(signal.SIGINT)
            break
          if now - t0 >= limit_s:
            raise
      out, _ = proc.communicate(timeout=max(limit_s - (time.monotonic() - t0), 1))
      return proc.returncode, out
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      return "timeout", ""


def log_tail(log_path: str) -> str:
  """The last line of a run's stderr (after any progress-bar carriage returns)."""
  with open(log_path) as f:
    lines = f.read().replace("\r", "\n").strip().splitlines()
  return lines[-1] if lines else ""


def metrics_path(workdir: str) -> str:
  """metrics.jsonl of a run directory, or of its first seed's (a run of run.num_seeds > 1)."""
  seed_dirs = sorted(name for name in os.listdir(workdir) if name.startswith("seed_"))
  return os.path.join(workdir, seed_dirs[0] if seed_dirs else "", "metrics.jsonl")


def updates_began(workdir: str) -> bool:
  """Whether a run's metrics.jsonl holds a log interval with updates (the first has compiled)."""
  try:
    with open(metrics_path(workdir)) as f:
      return any(json.loads(line).get("updates", 0) > 0 for line in f if line.strip())
  except (OSError, ValueError):
    return False


def steady_figures(workdir: str) -> dict:
  """Agent steps/s, env frames/s and updates/s of a run's log intervals after the one in
  which updates began (that one holds the update's compile). With stacked seeds every figure
  is per seed: S seeds together make S times the env frames."""
  with open(metrics_path(workdir)) as f:
    rows = [json.loads(line) for line in f]
  training = [r for r in rows if r.get("updates", 0) > 0]
  steady = training[1:]
  if not steady:
    return {"intervals": len(rows), "note": "no log interval after the first update's compile"}
  seconds = sum((b["agent_step"] - a["agent_step"]) / b["steps_per_second"]
                for a, b in zip(training, steady))
  steps = steady[-1]["agent_step"] - training[0]["agent_step"]
  frames_per_step = steady[-1]["env_frame"] / steady[-1]["agent_step"]
  return {"steady_seconds": round(seconds, 1), "agent_steps": steps,
          "agent_steps_per_s": round(steps / seconds, 1),
          "env_frames_per_s": round(steps * frames_per_step / seconds, 1),
          "updates_per_s": round((steady[-1]["updates"] - training[0]["updates"]) / seconds, 2),
          "updates_total": steady[-1]["updates"], "agent_step_reached": steady[-1]["agent_step"]}
