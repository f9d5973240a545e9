"""Reading run directories (written by wm_jax/train.py) into per-run final scores.

A run directory holds config.json, protocol.json (the protocol card), scores.jsonl (one line
per finished episode: kind 'train' | 'eval', agent_step, env_frame, return, length, suite,
task, seed, [eval_round]) and done.json once finished. Problems a user can meet (no scores, a
half-written line from a killed run, an unfinished run) become one-sentence warnings naming
the file and the fix; the run is then skipped or read as far as it is valid.

Two scoring modes (the report states which it used):
  'eval'   mean return of the final evaluation round (IRIS, DIAMOND: 100 episodes at the end)
  'train'  mean return of training episodes that ended in the last `window` agent steps
           (the DreamerV3 convention, window = 10k agent steps)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np

from wm_jax.errors import UserError

RUN_FILES = ("config.json", "protocol.json", "scores.jsonl", "done.json", "train.log")
SCORE_KEYS = ("kind", "agent_step", "env_frame", "return")
# Card fields that may differ between runs aggregated together (a report compares methods
# over tasks and seeds on one protocol).
CARD_FIELDS_IGNORED = ("task", "seed", "method")
SCORING_MODES = ("eval", "train")


class ProtocolMismatchError(UserError):
  """Runs of a report were produced under different protocols."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run directory: its protocol card, config, finished episodes and completion."""
  path: str
  card: dict
  config: dict
  records: tuple
  done: bool

  @property
  def method(self) -> str:
    return str(self.card.get("method", self.config.get("method", "?")))

  @property
  def suite(self) -> str:
    return str(self.card.get("suite", self.records[0]["suite"] if self.records else "?"))

  @property
  def task(self) -> str:
    return str(self.card.get("task", self.records[0]["task"] if self.records else "?"))

  @property
  def seed(self) -> int:
    return int(self.config.get("seed", self.records[0].get("seed", 0) if self.records else 0))

  def protocol(self) -> dict:
    """The fields that must match for runs to be aggregated: the card without task, seed and
    method, plus the agent-step budget (config run.steps)."""
    key = {k: v for k, v in self.card.items() if k not in CARD_FIELDS_IGNORED}
    key["run.steps"] = self.config.get("run", {}).get("steps")
    return key


def find_run_dirs(root: str) -> list[str]:
  """Directories under `root` (itself included) holding any run file; sorted, not descending
  into a run directory (its tb/ and checkpoints/)."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    if any(name in filenames for name in RUN_FILES):
      found.append(dirpath)
      dirnames[:] = []
    else:
      dirnames.sort()
  return sorted(found)


def read_scores(path: str) -> tuple[list[dict], list[str]]:
  """Parses scores.jsonl; returns (valid records, warnings about skipped lines)."""
  with open(path) as f:
    lines = f.read().split("\n")
  torn_tail = lines[-1] != ""          # a complete file ends with a newline
  lines = lines if torn_tail else lines[:-1]
  records, warnings = [], []
  for number, line in enumerate(lines, start=1):
    last = number == len(lines)
    try:
      record = json.loads(line)
      if not all(k in record for k in SCORE_KEYS):
        raise ValueError
    except ValueError:
      if last and torn_tail:
        warnings.append(f"{path}: the last line is cut off (the run was killed while writing "
                        f"it); that episode is skipped. Rerun the sweep (or the run's train "
                        f"command) to resume the run, which rewrites it.")
      else:
        warnings.append(f"{path}: line {number} is not a complete score record; it is skipped. "
                        f"Fix or delete that line if the file was edited by hand.")
      continue
    records.append(record)
  return records, warnings


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def load_run(path: str, include_unfinished: bool = False) -> tuple[Run | None, list[str]]:
  """Reads one run directory; returns (Run or None when it cannot be scored, warnings)."""
  log = os.path.join(path, "train.log")
  see_log = f" (its log: {log})" if os.path.exists(log) else ""
  scores_path = os.path.join(path, "scores.jsonl")
  card_path = os.path.join(path, "protocol.json")
  if not os.path.exists(scores_path):
    return None, [f"{path} has no scores.jsonl: the run never finished an episode{see_log}. "
                  f"Rerun the sweep to start or resume it, or delete the directory; it is left "
                  f"out of the report."]
  if not os.path.exists(card_path):
    return None, [f"{path} has scores.jsonl but no protocol.json, so its protocol is unknown; "
                  f"rerun it with `python -m experiments.train` (which writes the card) or "
                  f"delete the directory; it is left out of the report."]
  try:
    card = _read_json(card_path)
    config_path = os.path.join(path, "config.json")
    config = _read_json(config_path) if os.path.exists(config_path) else {}
  except ValueError as e:
    return None, [f"{path}: protocol.json or config.json is not valid JSON ({e}); restore the "
                  f"file or rerun the run in a new directory; it is left out of the report."]
  records, warnings = read_scores(scores_path)
  done = os.path.exists(os.path.join(path, "done.json"))
  if not done and not include_unfinished:
    return None, warnings + [
        f"{path} has not finished (no done.json: interrupted or still running){see_log}. "
        f"Rerun the sweep to resume it, or pass --include_unfinished to score it from what it "
        f"has; it is left out of the report."]
  return Run(path, card, config, tuple(records), done), warnings


def final_score(run: Run, mode: str, window: int = 10_000) -> tuple[float, int] | str:
  """(mean return, number of episodes) of a run under a scoring mode (see module docstring),
  or a sentence saying why the run has no such score."""
  if mode == "eval":
    evals = [r for r in run.records if r["kind"] == "eval"]
    if not evals:
      return (f"{run.path} has no evaluation episodes; score it with --scoring=train, or rerun "
              f"it with --config.run.eval_episodes > 0.")
    last = max((r.get("eval_round", -1), r["agent_step"]) for r in evals)
    returns = [r["return"] for r in evals if (r.get("eval_round", -1), r["agent_step"]) == last]
  elif mode == "train":
    train = [r for r in run.records if r["kind"] == "train"]
    if not train:
      return f"{run.path} has no finished training episode; score it with --scoring=eval."
    end = max(r["agent_step"] for r in train)
    returns = [r["return"] for r in train if r["agent_step"] > end - window]
  else:
    raise ValueError(f"scoring mode {mode!r} is not one of {SCORING_MODES}")
  return float(np.mean(returns)), len(returns)


def learning_curve(run: Run, kind: str, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
  """(env_frame [P], mean return [P]) of one run: eval rounds as they are, train episodes
  averaged in `bins` equal-width bins of env frames (empty bins dropped)."""
  rows = [r for r in run.records if r["kind"] == kind]
  if not rows:
    return np.zeros(0), np.zeros(0)
  frames = np.array([r["env_frame"] for r in rows], np.float64)
  returns = np.array([r["return"] for r in rows], np.float64)
  if kind == "eval":
    groups = collections.defaultdict(list)
    for f, ret in zip(frames, returns):
      groups[f].append(ret)
    x = np.array(sorted(groups))
    return x, np.array([np.mean(groups[f]) for f in x])
  edges = np.linspace(0.0, frames.max(), bins + 1)
  which = np.clip(np.searchsorted(edges, frames, side="right") - 1, 0, bins - 1)
  keep = [b for b in range(bins) if np.any(which == b)]
  return (np.array([edges[b + 1] for b in keep]),
          np.array([returns[which == b].mean() for b in keep]))


def check_protocols(runs: list[Run], force: bool) -> str | None:
  """Refuses runs made under different protocols (one sentence naming the differing fields
  and the fix); with `force`, returns that description for the report to state instead."""
  groups = collections.defaultdict(list)
  for run in runs:
    groups[json.dumps(run.protocol(), sort_keys=True, default=str)].append(run)
  if len(groups) <= 1:
    return None
  keys = [json.loads(k) for k in groups]
  fields = sorted({f for k in keys for f in k if len({json.dumps(x.get(f)) for x in keys}) > 1})
  parts = []
  for field in fields:
    counts = collections.Counter(json.dumps(run.protocol().get(field), default=str)
                                 for run in runs)
    parts.append(f"{field}: " + ", ".join(f"{v} in {n} run{'s' * (n > 1)}"
                                          for v, n in counts.most_common()))
  example = [group[0].path for group in groups.values()][:2]
  description = (f"the runs use {len(groups)} different protocols ({'; '.join(parts)}; e.g. "
                 f"{example[0]} vs {example[1]})")
  if force:
    return description
  raise ProtocolMismatchError(
      f"Not aggregating: {description}. Report one protocol at a time by pointing --runs at a "
      f"subdirectory, or pass --force_mixed_protocols to aggregate them anyway (the report "
      f"then says so).")
