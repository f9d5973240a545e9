"""BBF's released per-seed Atari-100k scores against the aggregates its paper states; the
one-line summary of a method's sources."""

import csv
import re

import numpy as np
import pytest

from benchmarks import report
from wm_jax.eval import aggregate, published, scores

REPS = 200


def _stated(method, metric):
  """The value a paper states, from atari100k_published_aggregates.csv."""
  (row,) = [r for r in published.paper_aggregates()
            if r["method"] == method and r["metric"] == metric]
  return row


def _per_game_means(method):
  """[1, games] per-game mean HNS over all of a method's runs: what a paper's mean and median
  over games are computed from when games have different run counts."""
  raw = published.scores(method)
  return np.array([[scores.human_normalized(g, raw[g]).mean()
                    for g in scores.atari100k_games()]])


def test_bbf_rows_are_the_released_runs():
  raw = published.scores("BBF")
  assert set(raw) == set(scores.atari100k_games())
  counts = {g: v.size for g, v in raw.items()}
  assert sum(counts.values()) == 1508                      # every 26-game row of RR8_BBF.csv
  assert min(counts.values()) == 52 and max(counts.values()) == 60
  assert counts["BankHeist"] == counts["Hero"] == 52 and counts["Boxing"] == 60
  seeds = [int(re.search(r"seed (\d+) ", s).group(1)) for s in published.sources("BBF")]
  assert len(seeds) == len(set(seeds)) == 1508             # one source per run, each its own seed
  assert all("bigger_better_faster/scores/RR8_BBF.csv" in s for s in published.sources("BBF"))
  # Spot values copied from the file (row: seed, game, GameScoreAverage).
  assert raw["Alien"][0] == 1032.5                        # seed 11623
  assert raw["UpNDown"][-1] == pytest.approx(8606.7001953125)   # seed 31481
  assert raw["Pong"].min() == pytest.approx(-13.569999694824219)  # seed 31258


def test_bbf_per_game_data_reproduces_the_stated_mean_not_the_median():
  mean, median, _, _, superhuman = aggregate.aggregate_vector(_per_game_means("BBF"))
  stated_mean, stated_median = _stated("BBF", "mean"), _stated("BBF", "median")
  assert stated_mean["value"] == 2.245 and stated_median["value"] == 0.917
  assert mean == pytest.approx(stated_mean["value"], abs=0.01)     # 2.238
  assert round(mean, 3) == 2.238
  # The released file's median is 0.880, not the stated 0.917; the aggregates file says so.
  assert round(median, 3) == 0.880
  assert abs(median - stated_median["value"]) > 0.03
  assert "not reproduced" in stated_median["note"] and "0.880" in stated_median["note"]
  assert superhuman == 12


def test_published_only_report_of_bbf(tmp_path):
  warnings = []
  md = report.run_report(None, str(tmp_path / "out"), ["bbf"], warnings, reps=REPS)
  with open(tmp_path / "out" / "aggregates.csv") as f:
    agg = {(r["method"], r["metric"]): r for r in csv.DictReader(f)}
  row = agg["BBF (published)", "mean"]
  assert row["runs"] == "52" and row["games"] == "26"      # the first 52 runs of every game
  assert float(row["value"]) == pytest.approx(_stated("BBF", "mean")["value"], abs=0.01)
  assert round(float(row["value"]), 3) == 2.236
  assert round(float(agg["BBF (published)", "median"]["value"]), 3) == 0.879
  assert len(warnings) == 1 and "BBF: games have 52 to 60 runs" in warnings[0]
  assert "RR8_BBF.csv" in md and "paperswithcode.com" in md
  # One short line for the 1508 per-seed sources (they used to fill a 345,000-character line).
  with open(tmp_path / "out" / "report.md") as f:
    lines = f.read().splitlines()
  assert max(map(len, lines)) < 1000
  (line,) = [l for l in lines if l.startswith("  - BBF: ")]
  assert line == ("  - BBF: 1508 rows from 1508 distinct sources: Schwarzer et al. 2023 (ICML) BBF; "
                  "score (column GameScoreAverage: one row per run and no per-iteration rows) of "
                  "the run with seed … in google-research/google-research "
                  "bigger_better_faster/scores/RR8_BBF.csv (commit 5e78683).")


def test_source_summary_counts_few_sources_and_elides_many():
  assert published.summarize_sources(["a b", "c", "a b"]) == "2 × a b; 1 × c"
  many = [f"paper; run {seed} in file.csv" for seed in (10, 11, 12, 20)]
  assert published.summarize_sources(many + many[:1]) == (
      "5 rows from 4 distinct sources: paper; run … in file.csv")
  assert published.source_summary("EfficientZero").startswith("26 × Ye et al. 2021")
