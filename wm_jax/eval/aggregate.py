"""Aggregate scores over games with 95% stratified-bootstrap CIs (Agarwal et al. 2021, rliable).

Every function takes normalised scores as a matrix [runs, games] (one row per seed, one column
per game). Mean and median are over games of the per-game mean over runs; IQM is the mean of
the middle 50% of all runs x games entries; the optimality gap is the mean shortfall below 1
(gamma = 1); #superhuman counts games whose per-game mean is at least human level (HNS >= 1,
as IRIS counts Pong at exactly HNS 1.000; `SUPERHUMAN_ATOL` absorbs float rounding). CIs
resample runs within each game (rliable's StratifiedBootstrap, percentile method).

`paired_gain_interval` is the one exception: a model's per-step gain over a baseline on the
same open-loop windows (wm_jax/offline.py), with a CI that resamples whole held-out episodes.
"""

from __future__ import annotations

import warnings

import numpy as np
from arch.bootstrap import IIDBootstrap
from rliable import library as rly
from rliable import metrics

METRICS = ("mean", "median", "iqm", "optimality_gap", "superhuman")
METRIC_NAMES = {"mean": "Mean", "median": "Median", "iqm": "IQM",
                "optimality_gap": "Optimality gap", "superhuman": "#Superhuman"}
SUPERHUMAN_ATOL = 1e-9


def superhuman_count(scores: np.ndarray) -> float:
  """Number of games whose mean over runs is >= 1 (human level); scores [runs, games]."""
  return float(np.sum(np.mean(scores, axis=0) >= 1.0 - SUPERHUMAN_ATOL))


def aggregate_vector(scores: np.ndarray) -> np.ndarray:
  """[mean, median, IQM, optimality gap, #superhuman] of scores [runs, games]."""
  return np.array([metrics.aggregate_mean(scores), metrics.aggregate_median(scores),
                   metrics.aggregate_iqm(scores), metrics.aggregate_optimality_gap(scores, 1.0),
                   superhuman_count(scores)])


def interval_estimates(score_dict: dict[str, np.ndarray], reps: int = 2000,
                       seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
  """{method: {metric: (point, ci_low, ci_high)}} for score matrices [runs, games].

  A method with a single run gets a degenerate CI (low = high = point).
  """
  points, intervals = _bootstrap(score_dict, aggregate_vector, reps, seed)
  return {name: {m: (float(points[name][i]), float(intervals[name][0, i]),
                     float(intervals[name][1, i])) for i, m in enumerate(METRICS)}
          for name in score_dict}


def performance_profiles(score_dict: dict[str, np.ndarray], taus: np.ndarray, reps: int = 500,
                         seed: int = 0):
  """Run-score distributions (rliable's performance profiles): fraction of runs x games with
  score > tau, as ({method: [len(taus)]}, {method: [2, len(taus)] 95% CIs})."""
  return _bootstrap(score_dict, lambda scores: rly.score_distributions(scores, taus), reps, seed)


def _bootstrap(score_dict, func, reps, seed):
  """rliable's stratified bootstrap, made reproducible: rliable 1.2 draws resamples from
  NumPy's global RNG (its `random_state` argument does not reach them), so the global state is
  seeded here and restored afterwards."""
  saved = np.random.get_state()
  np.random.seed(seed)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", FutureWarning)   # arch: RandomState is deprecated
      return rly.get_interval_estimates(score_dict, func, reps=reps)
  finally:
    np.random.set_state(saved)


def paired_gain_interval(model: np.ndarray, baseline: np.ndarray, groups: np.ndarray,
                         reps: int = 2000, seed: int = 0) -> dict[str, list[float]]:
  """Mean per-step gain of a model over a baseline scored on the same items, with its 95%
  percentile-bootstrap CI that resamples whole groups (a cluster bootstrap: the overlapping
  open-loop windows of one held-out episode are not independent, so episodes are resampled).

  model, baseline: [W, N] scores of W items at N steps; groups: [W] group of each item ->
  {'mean', 'low', 'high'}: [N] lists. A single group gives a degenerate CI (low = high).
  """
  gain = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
  ids, group_of = np.unique(groups, return_inverse=True)
  sums = np.stack([gain[group_of == g].sum(0) for g in range(len(ids))])   # [G, N]
  counts = np.bincount(group_of).astype(np.float64)                          # [G]
  pooled_mean = lambda s, c: s.sum(0) / c.sum()
  if len(ids) == 1:
    low = high = pooled_mean(sums, counts)
  else:
    low, high = IIDBootstrap(sums, counts, seed=seed).conf_int(
        pooled_mean, reps=reps, method="percentile")
  return {"mean": pooled_mean(sums, counts).tolist(), "low": np.asarray(low).tolist(),
          "high": np.asarray(high).tolist()}
