"""Aggregates and CIs against rliable on fixed inputs; published data reproduces the papers."""

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from wm_jax.eval import aggregate, published, scores


def _hns(method):
  raw = published.scores(method)
  return np.stack([scores.human_normalized(g, raw[g]) for g in scores.atari100k_games()], axis=1)


def test_point_estimates_hand_computed():
  x = np.array([[0.0, 1.0, 2.0, 10.0],
                [1.0, 1.0, 0.0, 6.0]])          # [runs=2, games=4]
  mean, median, iqm, gap, superhuman = aggregate.aggregate_vector(x)
  assert mean == pytest.approx((0.5 + 1.0 + 1.0 + 8.0) / 4)
  assert median == pytest.approx(1.0)
  assert iqm == pytest.approx(np.mean([1.0, 1.0, 1.0, 2.0]))   # middle 4 of 8 sorted values
  assert gap == pytest.approx((1.0 + 0.0 + 0.0 + 0.0 + 0.0 + 0.0 + 1.0 + 0.0) / 8)
  assert superhuman == 3.0                     # per-game means 0.5, 1.0, 1.0, 8.0: >= 1


def test_intervals_match_rliable_on_fixed_inputs():
  rng = np.random.RandomState(3)
  score_dict = {"a": rng.gamma(1.0, 1.0, size=(5, 26)), "b": rng.gamma(2.0, 0.5, size=(3, 26))}
  ours = aggregate.interval_estimates(score_dict, reps=300, seed=7)
  # rliable with the same aggregate function and seed: identical numbers.
  np.random.seed(7)   # rliable 1.2 resamples with NumPy's global RNG
  points, cis = rly.get_interval_estimates(score_dict, aggregate.aggregate_vector, reps=300)
  funcs = {"mean": metrics.aggregate_mean, "median": metrics.aggregate_median,
           "iqm": metrics.aggregate_iqm,
           "optimality_gap": lambda s: metrics.aggregate_optimality_gap(s, 1.0)}
  for method in score_dict:
    for i, name in enumerate(aggregate.METRICS):
      assert ours[method][name] == pytest.approx(
          (points[method][i], cis[method][0, i], cis[method][1, i]))
    for name, func in funcs.items():   # the components are rliable's own metrics
      assert ours[method][name][0] == pytest.approx(func(score_dict[method]))
      # Another resampling stream: its CI agrees up to Monte-Carlo noise.
      _, single = rly.get_interval_estimates({method: score_dict[method]},
                                             lambda s, f=func: np.array([f(s)]), reps=300)
      assert ours[method][name][1:] == pytest.approx(tuple(single[method][:, 0]), abs=0.08)


def test_single_run_gives_degenerate_interval():
  est = aggregate.interval_estimates({"one": np.array([[0.2, 0.4, 3.0]])}, reps=50)
  assert est["one"]["mean"][0] == est["one"]["mean"][1] == est["one"]["mean"][2]


@pytest.mark.parametrize("method, mean, median, superhuman", [
    ("IRIS", 1.046, None, 10),            # abstract: mean 1.046, 10 of 26 games superhuman
    ("DIAMOND", 1.46, None, None),        # abstract: mean 1.46
    ("EfficientZero", 1.943, 1.090, None),  # NeurIPS abstract: 194.3% mean, 109.0% median
])
def test_published_per_game_data_reproduces_the_paper(method, mean, median, superhuman):
  got = aggregate.aggregate_vector(_hns(method))
  digits = len(str(mean).split(".")[1])
  assert round(got[0], digits) == mean
  if median is not None:
    assert round(got[1], 3) == median
  if superhuman is not None:
    assert got[4] == superhuman


def test_paper_aggregates_file_names_known_methods_and_sources():
  rows = published.paper_aggregates()
  assert rows and all(r["source"] for r in rows)
  assert {r["method"] for r in rows} <= set(published.methods())
  assert {r["metric"] for r in rows} <= set(aggregate.METRICS)


def test_every_published_method_lists_all_26_games_with_a_source():
  for method in published.methods():
    games = set(published.scores(method)) | set(published.missing_games(method))
    assert games == set(scores.atari100k_games()), method
    assert all(published.sources(method)), method
  # The only games without a value: the two the DreamerV3 2024 table could not be read for.
  assert {m: published.missing_games(m) for m in published.methods()
          if published.missing_games(m)} == {"DreamerV3-2024": ("BattleZone", "KungFuMaster")}


def test_performance_profile_shapes():
  taus = np.linspace(0, 2, 5)
  profiles, cis = aggregate.performance_profiles({"a": np.array([[0.5, 1.5], [1.0, 3.0]])},
                                                 taus, reps=20)
  assert profiles["a"].shape == (5,) and cis["a"].shape == (2, 5)
  assert profiles["a"][0] == 1.0 and profiles["a"][-1] == 0.25


def test_bootstrap_is_seeded_and_leaves_the_global_rng_alone():
  data = {"a": np.random.RandomState(0).rand(4, 6)}
  np.random.seed(123)
  expected_next = np.random.random()
  np.random.seed(123)
  first = aggregate.interval_estimates(data, reps=100, seed=1)
  assert np.random.random() == expected_next
  assert aggregate.interval_estimates(data, reps=100, seed=1) == first


def test_paired_gain_is_the_pooled_mean_difference_with_a_cluster_bootstrap_ci():
  rng = np.random.default_rng(0)
  groups = np.repeat(np.arange(8), [5, 9, 3, 12, 7, 4, 10, 6])        # 56 windows, 8 episodes
  per_group = rng.normal(0.5, 1.0, size=(8, 3))                       # [groups, steps]
  baseline = rng.normal(20.0, 1.0, size=(56, 3))
  model = baseline + per_group[groups]       # every window of a group has the same gain
  gain = aggregate.paired_gain_interval(model, baseline, groups, reps=500)
  np.testing.assert_allclose(gain["mean"], (model - baseline).mean(0), rtol=1e-9)
  assert all(lo < m < hi for lo, m, hi in zip(gain["low"], gain["mean"], gain["high"]))
  # The same gains as if every window were its own episode: the CI is far too narrow then,
  # since a group of copies carries one sample's information.
  naive = aggregate.paired_gain_interval(model, baseline, np.arange(56), reps=500)
  width = lambda g: np.subtract(g["high"], g["low"])
  assert np.all(width(gain) > 1.5 * width(naive))
  # Reproducible for a seed.
  assert aggregate.paired_gain_interval(model, baseline, groups, reps=500) == gain


def test_paired_gain_of_one_episode_or_a_constant_gain_is_degenerate():
  baseline = np.arange(12.0).reshape(4, 3)
  one_episode = aggregate.paired_gain_interval(baseline + [[1.0], [2.0], [3.0], [6.0]],
                                               baseline, np.zeros(4))
  assert one_episode["low"] == one_episode["mean"] == one_episode["high"] == [3.0] * 3
  constant = aggregate.paired_gain_interval(baseline - 0.25, baseline, np.arange(4), reps=200)
  np.testing.assert_allclose([constant[b] for b in ("low", "mean", "high")], -0.25)
