"""Running an original implementation's code in its own venv, for side-by-side speed benchmarks."""

from __future__ import annotations

import json
import subprocess

from absl import app


def run_official(python: str, script: str, args: list, name: str) -> dict:
  """Runs `script` (Python source) with `python` and `args`; returns the JSON object it prints last, or stops with one sentence naming `name` and its last error line."""
  out = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True)
  if out.returncode:
    raise app.UsageError(f"The official {name} run failed (check --official_python and "
                         f"--official_src): {out.stderr.strip().splitlines()[-1]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
