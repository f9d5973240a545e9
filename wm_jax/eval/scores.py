"""Reference scores and score normalisation.

Atari: human-normalised score HNS = (score - random) / (human - random) per game, with the
random and human ("professional tester, 30-minute episodes") scores of Mnih et al. 2015 as
tabulated by DQN Zoo and used by rliable, IRIS, DIAMOND and the other Atari-100k papers
(`data/atari100k_reference.csv`, one source per row).
DMC: score / 1000, the maximum episode return of every DMC task (DreamerV3, rliable).
Other suites have no normalisation (reports show their raw returns only).
"""

from __future__ import annotations

import csv
import difflib
import functools
import os

import numpy as np

from wm_jax.errors import UnknownNameError

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
REFERENCE_CSV = os.path.join(DATA_DIR, "atari100k_reference.csv")
DMC_MAX_RETURN = 1000.0
DMC_SUITES = ("dmc", "dmc_vision")
ATARI_SUITE = "atari"


@functools.lru_cache(maxsize=None)
def atari_reference() -> dict[str, tuple[float, float]]:
  """{game: (random, human)} for the 26 Atari-100k games, in the table's order."""
  with open(REFERENCE_CSV) as f:
    return {row["game"]: (float(row["random"]), float(row["human"])) for row in csv.DictReader(f)}


def atari100k_games() -> tuple[str, ...]:
  """The 26 Atari-100k games (Kaiser et al. 2020), envpool spelling ('MsPacman', 'UpNDown')."""
  return tuple(atari_reference())


def canonical_game(name: str) -> str:
  """The table's spelling of an Atari game name given in any case ('pong' -> 'Pong').

  Raises UnknownNameError (one sentence, with the closest name) for a game outside the table.
  """
  by_lower = {g.lower(): g for g in atari_reference()}
  key = name.replace("_", "").replace("-v5", "").lower()
  if key in by_lower:
    return by_lower[key]
  close = difflib.get_close_matches(key, list(by_lower), n=1)
  hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
  raise UnknownNameError(
      f"Game {name!r} is not one of the 26 Atari-100k games{hint}; the names are listed in "
      f"{REFERENCE_CSV}.")


def human_normalized(game: str, score):
  """HNS = (score - random) / (human - random) for one game; `score` any shape."""
  random, human = atari_reference()[canonical_game(game)]
  return (np.asarray(score, dtype=np.float64) - random) / (human - random)


def normalizer(suite: str):
  """(name, fn(task, score)) of a suite's normalisation, or None when it has none."""
  if suite == ATARI_SUITE:
    return "HNS", human_normalized
  if suite in DMC_SUITES:
    return "score/1000", lambda task, score: np.asarray(score, np.float64) / DMC_MAX_RETURN
  return None
