"""Published Atari-100k results, loaded from `data/` (see data/README.md for provenance).

`atari100k_published.csv`: one row per (method, game, run) with the final score and its
source; methods with released per-seed data (SimPLe, TWM, IRIS, STORM, DIAMOND, BBF) keep every
seed (BBF: 52 to 60 runs per game), EfficientZero, DreamerV3 (2023) and DreamerV3-2024 have one
per-game mean (their papers' tables). A row with an empty score is a game whose published value
could not be read (its source says why): it counts as missing, not as a score.
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
# A method's sources are listed one by one up to this many distinct ones, else summarised.
MAX_LISTED_SOURCES = 3


@functools.lru_cache(maxsize=None)
def _rows() -> tuple[dict, ...]:
  with open(PUBLISHED_CSV) as f:
    return tuple(csv.DictReader(f))


def methods() -> tuple[str, ...]:
  """Methods with per-game data, in file order."""
  return tuple(dict.fromkeys(row["method"] for row in _rows()))


def canonical_method(name: str) -> str:
  """The file's spelling of a method name given in any case; one sentence (UnknownNameError,
  with the closest name) for a method without data."""
  by_lower = {m.lower(): m for m in methods()}
  if name.lower() in by_lower:
    return by_lower[name.lower()]
  close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
  hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
  raise UnknownNameError(
      f"No published per-game data for {name!r}{hint}: --compare takes any of "
      f"{', '.join(methods())} (see wm_jax/eval/data/README.md for what is shipped).")


def _method_rows(method: str) -> list[dict]:
  """The rows of one method (any spelling)."""
  method = canonical_method(method)
  return [row for row in _rows() if row["method"] == method]


def scores(method: str) -> dict[str, np.ndarray]:
  """{game: raw final scores [runs]} of one published method; games without a value are
  absent (see missing_games)."""
  out = collections.defaultdict(list)
  for row in _method_rows(method):
    if row["score"]:
      out[row["game"]].append(float(row["score"]))
  return {game: np.asarray(v) for game, v in out.items()}


def missing_games(method: str) -> tuple[str, ...]:
  """Games listed for a method whose value could not be read (rows with an empty score)."""
  return tuple(row["game"] for row in _method_rows(method) if not row["score"])


def sources(method: str) -> tuple[str, ...]:
  """The distinct sources of one method's rows."""
  return tuple(dict.fromkeys(row["source"] for row in _method_rows(method)))


def summarize_sources(texts: list[str]) -> str:
  """One line for the sources of many rows: up to MAX_LISTED_SOURCES distinct ones as
  'count × source', most frequent first; more as their count and the words they all begin and
  end with around '…' (e.g. BBF's per-seed sources differ only in the seed)."""
  counts = collections.Counter(texts)
  if len(counts) <= MAX_LISTED_SOURCES:
    return "; ".join(f"{n} × {text}" for text, n in counts.most_common())
  head = os.path.commonprefix(list(counts)).rpartition(" ")[0]
  tail = os.path.commonprefix([text[::-1] for text in counts])[::-1].partition(" ")[2]
  return f"{len(texts)} rows from {len(counts)} distinct sources: {head} … {tail}"


def source_summary(method: str) -> str:
  """summarize_sources of one method's rows."""
  return summarize_sources([row["source"] for row in _method_rows(method)])


@functools.lru_cache(maxsize=None)
def paper_aggregates() -> tuple[dict, ...]:
  """Rows {method, metric, value (float), source, note} of aggregates stated in papers."""
  with open(AGGREGATES_CSV) as f:
    return tuple({**row, "value": float(row["value"])} for row in csv.DictReader(f))
