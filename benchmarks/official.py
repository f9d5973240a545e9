"""Running an original implementation's code in its own venv, for side-by-side speed benchmarks."""

from __future__ import annotations

import json
import os
import subprocess

from absl import app

from wm_jax import xla_cpu


def official_env() -> dict:
  """This environment without the XLA:CPU flags wm_jax added for its own jaxlib: an official
  JAX code runs another jaxlib, which may reject them, and is timed with its own settings."""
  from jaxlib import version
  env, added = dict(os.environ), xla_cpu.flags_for(version.__version__)
  if added and "XLA_FLAGS" in env:
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(added, "").strip()
  return env


def run_official(python: str, script: str, args: list, name: str) -> dict:
  """Runs `script` (Python source) with `python` and `args`; returns the JSON object it prints last, or stops with one sentence naming `name` and its last error line."""
  out = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True,
                       env=official_env())
  if out.returncode:
    raise app.UsageError(f"The official {name} run failed (check --official_python and the "
                         f"source flags): {out.stderr.strip().splitlines()[-1]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
