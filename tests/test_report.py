"""The report end to end on fixture run directories: tables, plots, bad input, protocols."""

import csv
import os
import shutil
import subprocess
import sys

import pytest

from benchmarks import report
from test_eval_runs import write_run
from wm_jax.errors import UserError
from wm_jax.eval import aggregate, plots, scores

REPS = 200


def _random_sweep(root, games=None, seeds=2):
  """Runs scoring exactly the random reference score (+/- 0.5 per seed)."""
  for game in games or scores.atari100k_games():
    random_score = scores.atari_reference()[game][0]
    for seed in range(seeds):
      ret = random_score + (0.5 if seed else -0.5)
      write_run(root, game=game, seed=seed, eval_returns=(ret, ret))


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_random_sweep_report_with_published_methods(tmp_path):
  _random_sweep(tmp_path / "runs")
  out = tmp_path / "report"
  warnings = []
  md = report.run_report(str(tmp_path / "runs"), str(out), ["IRIS", "diamond", "DreamerV3"],
                         warnings, reps=REPS)
  assert warnings == []
  for name in ("report.md", "per_game.csv", "per_game.tex", "aggregates.csv", "aggregates.tex",
               "runs.csv", "curves.png", "aggregates.png", "profiles.png"):
    assert (out / name).stat().st_size > 0, name
  per_game = [r for r in _read_csv(out / "per_game.csv") if r["origin"] == "this project"]
  assert len(per_game) == 26
  assert all(abs(float(r["norm_mean"])) < 0.01 and r["runs"] == "2" for r in per_game)
  agg = {(r["method"], r["metric"]): r for r in _read_csv(out / "aggregates.csv")}
  assert abs(float(agg["random", "mean"]["value"])) < 0.01
  assert float(agg["random", "superhuman"]["value"]) == 0
  assert float(agg["IRIS (published)", "mean"]["value"]) == pytest.approx(1.046, abs=5e-4)
  assert float(agg["DIAMOND (published)", "mean"]["value"]) == pytest.approx(1.459, abs=5e-4)
  assert float(agg["DreamerV3 (published)", "mean"]["value"]) == pytest.approx(1.124, abs=5e-4)
  assert "| Pong | -20.7 | 14.6 |" in md and "IRIS" in md and "DIAMOND" in md
  assert "final evaluation" in md and "HNS >= 1" in md
  assert "Aggregates stated in the papers" in md


def test_bad_inputs_give_one_warning_each_and_the_rest_is_reported(tmp_path):
  root = tmp_path / "runs"
  _random_sweep(root, games=["Pong", "Breakout"], seeds=1)
  (root / "random" / "Alien" / "seed0").mkdir(parents=True)          # no scores at all
  (root / "random" / "Alien" / "seed0" / "train.log").write_text("killed\n")
  write_run(root, game="Foo")                                         # outside the table
  torn = write_run(root, game="Boxing")                               # killed mid-line
  with open(os.path.join(torn, "scores.jsonl"), "a") as f:
    f.write('{"kind": "ev')
  warnings = []
  md = report.run_report(str(root), str(tmp_path / "out"), [], warnings, reps=REPS)
  assert len(warnings) == 3, warnings
  assert any("Alien/seed0 has no scores.jsonl" in w for w in warnings)
  assert any("Foo" in w and "raw score only" in w for w in warnings)
  assert any("Boxing/seed0/scores.jsonl: the last line is cut off" in w for w in warnings)
  rows = {r["game"]: r for r in _read_csv(tmp_path / "out" / "runs.csv")}
  assert set(rows) == {"Pong", "Breakout", "Boxing", "Foo"} and rows["Foo"]["normalized"] == ""
  assert "| Foo |" in md and "## Warnings" in md


def test_mixed_protocols_refused_then_forced(tmp_path):
  root = tmp_path / "runs"
  _random_sweep(root, games=["Pong"], seeds=1)
  write_run(root / "sticky", game="Pong", card={"sticky_prob": 0.25})
  with pytest.raises(UserError, match="sticky_prob"):
    report.run_report(str(root), str(tmp_path / "out"), [], [], reps=REPS)
  md = report.run_report(str(root), str(tmp_path / "out"), [], [], reps=REPS, force_mixed=True)
  assert "Mixed protocols (--force_mixed_protocols)" in md


def test_train_scoring_mode_is_recorded(tmp_path):
  _random_sweep(tmp_path / "runs", games=["Pong"], seeds=1)
  md = report.run_report(str(tmp_path / "runs"), str(tmp_path / "out"), [], [], mode="train",
                         reps=REPS)
  assert "last 10,000 agent steps (the DreamerV3 convention)" in md


def test_published_only_report_reproduces_paper_mean_and_median(tmp_path):
  md = report.run_report(None, str(tmp_path / "out"), ["EfficientZero"], [], reps=REPS)
  agg = {(r["method"], r["metric"]): float(r["value"])
         for r in _read_csv(tmp_path / "out" / "aggregates.csv")}
  assert round(agg["EfficientZero (published)", "mean"], 3) == 1.943
  assert round(agg["EfficientZero (published)", "median"], 3) == 1.090
  assert "- Runs: none (--runs left out): published methods only" in md
  # One value per game: the IQM is over the 26 game means, marked in the table and explained.
  assert "| EfficientZero (published) | 1 x 26 | 1.943 | 1.090 | 1.047 † |" in md
  assert f"\n{report.SINGLE_VALUE_NOTE}\n" in md
  with pytest.raises(UserError, match="Nothing to report: pass --runs=DIR"):
    report.run_report(None, str(tmp_path / "out"), [], [], reps=REPS)


def test_runs_without_a_scored_run_fail_with_or_without_compare(tmp_path):
  (tmp_path / "empty").mkdir()
  for compare in ([], ["IRIS"]):
    with pytest.raises(UserError, match=r"/empty holds no run directory \(no config.json"):
      report.run_report(str(tmp_path / "empty"), str(tmp_path / "out"), compare, [], reps=REPS)
  write_run(tmp_path / "unfinished", done=False)
  warnings = []
  with pytest.raises(UserError, match="No run under .*/unfinished could be scored"):
    report.run_report(str(tmp_path / "unfinished"), str(tmp_path / "out"), ["IRIS"], warnings,
                      reps=REPS)
  assert len(warnings) == 1 and "has not finished" in warnings[0]
  assert not (tmp_path / "out").exists()


def test_a_copied_run_is_scored_once_with_a_warning_naming_both(tmp_path):
  first = write_run(tmp_path / "runs" / "a", game="Pong", eval_returns=(-10.0, -10.0))
  copy = str(tmp_path / "runs" / "b" / "random" / "Pong" / "seed0")
  shutil.copytree(first, copy)
  write_run(tmp_path / "runs" / "a", game="Pong", seed=1)          # another seed: kept
  warnings = []
  report.run_report(str(tmp_path / "runs"), str(tmp_path / "out"), [], warnings, reps=REPS)
  assert warnings == [f"{copy} repeats {first} (both random on Pong with seed 0); only the "
                      f"first is scored. Delete the copy, or give a different run its own seed."]
  assert sorted((r["path"], r["seed"]) for r in _read_csv(tmp_path / "out" / "runs.csv")) == [
      (first, "0"), (first.replace("seed0", "seed1"), "1")]
  (pong,) = _read_csv(tmp_path / "out" / "per_game.csv")
  assert pong["runs"] == "2"


def test_figures_label_axes_and_reference_lines_and_profiles_use_reps(tmp_path, monkeypatch):
  _random_sweep(tmp_path / "runs", games=["Pong", "Boxing"])
  runs, _ = report.load_runs(str(tmp_path / "runs"), include_unfinished=False)
  entries, _ = report.score_runs(runs, "eval", 10_000)
  profile_reps = []
  real_profiles = aggregate.performance_profiles

  def spy(*args, **kwargs):
    profile_reps.append(kwargs["reps"])
    return real_profiles(*args, **kwargs)

  monkeypatch.setattr(aggregate, "performance_profiles", spy)
  _, files = report.build_report(runs, entries, [], ["IRIS"], "eval", 10_000, 37, 0, None,
                                 str(tmp_path / "runs"))
  assert profile_reps == [37]                            # --reps reaches the profile bands
  curves = files["curves.png"]
  panels = [ax for ax in curves.axes if ax.get_visible()]
  assert [ax.get_title() for ax in panels] == ["Boxing", "Pong"]
  assert all(ax.get_xlabel() == "env frames" and ax.get_ylabel() == "raw return"
             for ax in panels)
  legend = [t.get_text() for t in curves.legends[0].get_texts()]
  assert sorted(legend) == sorted(["random (eval)", "random (train)", "IRIS",
                                   plots.RANDOM_REFERENCE, plots.HUMAN_REFERENCE])
  assert plots.RANDOM_REFERENCE == "random-play reference (HNS 0)"


def test_cli_prints_one_sentence_for_user_errors(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.report", f"--runs={tmp_path}/missing",
       f"--out={tmp_path}/out"], capture_output=True, text=True, cwd=os.getcwd(), timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --runs={tmp_path}/missing is not a directory; point it at a sweep's --workdir.")
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.report", f"--runs={tmp_path}", f"--out={tmp_path}/o",
       "--compare=IRISS"], capture_output=True, text=True, cwd=os.getcwd(), timeout=120)
  assert "did you mean 'IRIS'" in result.stderr and "Traceback" not in result.stderr
  (tmp_path / "empty").mkdir()
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.report", f"--runs={tmp_path}/empty",
       f"--out={tmp_path}/o", "--compare=IRIS"], capture_output=True, text=True,
      cwd=os.getcwd(), timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: --runs={tmp_path}/empty holds no run directory")
