"""Run-directory logs: metrics.jsonl, scores.jsonl and TensorBoard events.

Every record carries both clocks: `agent_step` (env steps summed over envs) and `env_frame`
(agent steps x frames per step, e.g. x4 on Atari), so plots can say which axis they use.
scores.jsonl holds one line per finished episode:
  {"kind": "train" | "eval", "agent_step", "env_frame", "return", "length", "suite", "task",
   "seed", "time", ["eval_round"]}
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from tensorboardX import SummaryWriter


def _jsonable(value):
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


def append_jsonl(path: str, record: dict) -> None:
  """Appends one JSON line; a single write per line so a kill leaves at most one torn line."""
  with open(path, "a") as f:
    f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")


def mean_metrics(updates: list[dict]) -> dict:
  """Per-update metrics (dicts of scalars) -> each metric's mean over the updates that computed
  it: a component that trains on some updates only (a scheduled agent's phases) is averaged
  over those, not diluted by the others."""
  names = dict.fromkeys(name for metrics in updates for name in metrics)
  return {name: float(np.mean([m[name] for m in updates if name in m])) for name in names}


def trim_jsonl(path: str, max_step: int, clock: str = "agent_step") -> int:
  """Keeps the lines with `clock` <= max_step (a resumed run redoes the rest).

  The removed lines and any torn line go to `<path>.discarded`, so nothing is lost.
  Returns the number of lines removed.
  """
  if not os.path.exists(path):
    return 0
  keep, drop = [], []
  with open(path) as f:
    for line in f:
      try:
        ok = json.loads(line)[clock] <= max_step
      except (ValueError, KeyError):
        ok = False
      (keep if ok else drop).append(line if line.endswith("\n") else line + "\n")
  if drop:
    with open(path + ".discarded", "a") as f:
      f.writelines(drop)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
  return len(drop)


class RunLogger:
  """Writes metrics and episode scores of one run to its workdir."""

  def __init__(self, workdir: str, frames_per_step: int, base: dict):
    self.frames_per_step = frames_per_step
    self.base = base  # suite, task, seed: repeated in every score line
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.scores_path = os.path.join(workdir, "scores.jsonl")
    self.tb = SummaryWriter(os.path.join(workdir, "tb"))

  def _clocks(self, agent_step: int) -> dict:
    return {"agent_step": int(agent_step), "env_frame": int(agent_step) * self.frames_per_step}

  def metrics(self, agent_step: int, values: dict) -> None:
    """One metrics line plus TensorBoard scalars (x-axis: agent steps)."""
    append_jsonl(self.metrics_path, {**self._clocks(agent_step), **values})
    for name, value in values.items():
      self.tb.add_scalar(name, _jsonable(value), agent_step)
    self.tb.add_scalar("env_frame", agent_step * self.frames_per_step, agent_step)
    self.tb.flush()

  def score(self, kind: str, agent_step: int, ret: float, length: int, **extra) -> None:
    """One finished episode (kind 'train' or 'eval')."""
    append_jsonl(self.scores_path, {
        "kind": kind, **self._clocks(agent_step), "return": float(ret), "length": int(length),
        **self.base, "time": time.time(), **extra})
    self.tb.add_scalar(f"{kind}/return", float(ret), agent_step)

  def close(self) -> None:
    self.tb.close()
