"""Published Atari-100k results, loaded from `data/` (see data/README.md for provenance).

`atari100k_published.csv`: one row per (method, game, run) with the final score and its
source; methods with released per-seed data (SimPLe, TWM, IRIS, STORM, DIAMOND, BBF) keep every
seed (BBF: 52 to 60 runs per game), EfficientZero has one per-game mean (its paper's table).
`atari100k_published_aggregates.csv` holds the aggregates the papers state, with their sources
and whether the per-game data reproduces them.
"""

from __future__ import annotations

import collections
import csv
import difflib
import functools
import os

import numpy as np

from wm_jax.errors import UnknownNameError
from wm_jax.eval.scores import DATA_DIR

PUBLISHED_CSV = os.path.join(DATA_DIR, "atari100k_published.csv")
AGGREGATES_CSV = os.path.join(DATA_DIR, "atari100k_published_aggregates.csv")
# Methods the harness knows but ships no per-game data for yet (data/README.md says why).
NOT_SHIPPED = ("DreamerV3",)


@functools.lru_cache(maxsize=None)
def _rows() -> tuple[dict, ...]:
  with open(PUBLISHED_CSV) as f:
    return tuple(csv.DictReader(f))


def methods() -> tuple[str, ...]:
  """Methods with per-game data, in file order."""
  return tuple(dict.fromkeys(row["method"] for row in _rows()))


def canonical_method(name: str) -> str | None:
  """The file's spelling of a method name in any case, None for a method in NOT_SHIPPED; one
  sentence (UnknownNameError) for an unknown one."""
  by_lower = {m.lower(): m for m in methods()}
  if name.lower() in by_lower:
    return by_lower[name.lower()]
  if name.lower() in {m.lower() for m in NOT_SHIPPED}:
    return None
  close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
  hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
  raise UnknownNameError(
      f"No published per-game data for {name!r}{hint}: --compare takes any of "
      f"{', '.join(methods())} (see wm_jax/eval/data/README.md for what is shipped).")


def _shipped(method: str) -> str:
  """canonical_method, refusing methods without data with one sentence."""
  name = canonical_method(method)
  if name is None:
    raise UnknownNameError(f"No per-game data of {method} is shipped yet; see "
                           f"wm_jax/eval/data/README.md for why and how to add it.")
  return name


def scores(method: str) -> dict[str, np.ndarray]:
  """{game: raw final scores [runs]} of one published method."""
  method = _shipped(method)
  out = collections.defaultdict(list)
  for row in _rows():
    if row["method"] == method:
      out[row["game"]].append(float(row["score"]))
  return {game: np.asarray(v) for game, v in out.items()}


def sources(method: str) -> tuple[str, ...]:
  """The distinct sources of one method's per-game numbers."""
  method = _shipped(method)
  return tuple(dict.fromkeys(r["source"] for r in _rows() if r["method"] == method))


@functools.lru_cache(maxsize=None)
def paper_aggregates() -> tuple[dict, ...]:
  """Rows {method, metric, value (float), source, note} of aggregates stated in papers."""
  with open(AGGREGATES_CSV) as f:
    return tuple({**row, "value": float(row["value"])} for row in csv.DictReader(f))
