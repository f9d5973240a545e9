"""Benchmark report: per-game and aggregate score tables with CIs, beside published methods.

  python -m benchmarks.report --runs=DIR [--compare=IRIS,DIAMOND,...] --out=DIR
      [--scoring=eval|train] [--train_window=10000] [--reps=2000]
      [--include_unfinished] [--force_mixed_protocols]
  python -m benchmarks.report --compare=IRIS,DreamerV3,... --out=DIR   (published methods only)

Reads every run directory under --runs (as written by `experiments.train` / `experiments.sweep`),
scores each run (final evaluation episodes by default, or training episodes of the last 10k
agent steps: the DreamerV3 convention), normalises (Atari: human-normalised score with the
random/human table of wm_jax/eval/data; DMC: score / 1000) and writes to --out:

  report.md                        the Markdown report (also printed): per-game table, aggregates
  per_game.csv / per_game.tex      mean and std over seeds of raw and normalised scores
  aggregates.csv / aggregates.tex  mean, median, IQM, optimality gap, #superhuman with 95% CIs
  runs.csv                         one row per scored run (path, game, seed, score, episodes)
  curves.png                       per-game learning curves, x-axis in env frames
  aggregates.png                   aggregate metrics with CI bars, beside published methods
  profiles.png                     performance profiles (Agarwal et al. 2021)

Runs whose protocol cards differ are refused unless --force_mixed_protocols (then the report
says so). Bad run directories (no scores, a torn last line, an unfinished run, a game outside
the table) produce one warning each, naming the file and the fix; the rest is still reported.
Two copies of one run (same method, game and seed) are scored once, with a warning. A --runs
without any scored run is refused, with or without --compare.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys

import numpy as np
from absl import app, flags, logging

from wm_jax.errors import UnknownNameError, UserError
from wm_jax.eval import aggregate, plots, published, runs as runs_lib, scores, tables

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags (called by the entry point only, so importing this
  module for its functions registers no flags)."""
  flags.DEFINE_string("runs", None, "Directory holding run directories (searched "
                      "recursively), e.g. the --workdir of a sweep; leave it out to report "
                      "the --compare methods only.")
  flags.DEFINE_string("out", None, "Output directory for the report files.")
  flags.DEFINE_list("compare", [], "Published methods to put beside the runs (Atari "
                    "only): " + ", ".join(published.methods()) + ".")
  flags.DEFINE_enum("scoring", "eval", runs_lib.SCORING_MODES,
                    "eval: mean return of the final evaluation round (IRIS, DIAMOND); "
                    "train: training episodes of the last --train_window agent steps "
                    "(DreamerV3).")
  flags.DEFINE_integer("train_window", 10_000, "Agent steps of the train scoring mode.")
  flags.DEFINE_integer("reps", 2000, "Bootstrap replications for the 95% CIs.")
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
  flags.DEFINE_bool("include_unfinished", False, "Score runs without done.json "
                    "from the episodes they have.")
  flags.DEFINE_bool("force_mixed_protocols", False, "Aggregate runs whose "
                    "protocol cards differ (the report states it).")
  flags.DEFINE_bool("quiet", False, "Do not print the Markdown tables.")


PUBLISHED_SUFFIX = " (published)"
PUBLISHED_ONLY_HINT = "(for published methods only, leave --runs out and pass --compare)"
SINGLE_VALUE_MARK = "†"
SINGLE_VALUE_NOTE = (f"{SINGLE_VALUE_MARK} One value per game (a paper's per-game means, or a "
                     f"single seed): the IQM is over these game values, not over runs x games, "
                     f"and there is no CI, since the bootstrap resamples runs within each game; "
                     f"the only spread is across games.")
PROTOCOL_SHOWN = ("suite", "variant", "frames_per_step", "image_size", "frame_skip",
                  "sticky_prob", "noop_max", "life_loss_terminal", "max_episode_frames",
                  "action_repeat")


@dataclasses.dataclass(frozen=True)
class Entry:
  """The final score of one run."""
  label: str
  suite: str
  game: str
  seed: int
  raw: float
  norm: float | None
  episodes: int
  path: str


def load_runs(root: str, include_unfinished: bool) -> tuple[list, list[str]]:
  """All readable runs under `root` and the warnings about the others."""
  if not os.path.isdir(root):
    raise UserError(f"--runs={root} is not a directory; point it at a sweep's --workdir.")
  paths = runs_lib.find_run_dirs(root)
  if not paths:
    raise UserError(f"--runs={root} holds no run directory (no {', '.join(runs_lib.RUN_FILES)} "
                    f"under it); point it at a sweep's --workdir {PUBLISHED_ONLY_HINT}.")
  found, warnings = [], []
  for path in paths:
    run, run_warnings = runs_lib.load_run(path, include_unfinished)
    warnings += run_warnings
    if run is not None:
      found.append(run)
  return found, warnings


def _labels(runs: list) -> dict[str, str]:
  """Method label per run path: the method, plus ':variant' when one method has several."""
  variants = collections.defaultdict(set)
  for run in runs:
    variants[run.method].add(run.card.get("variant"))
  return {run.path: run.method + (f":{run.card.get('variant')}"
                                  if len(variants[run.method]) > 1 else "") for run in runs}


def score_runs(runs: list, mode: str, window: int) -> tuple[list[Entry], list[str]]:
  """Final score and normalised score of every run; warnings for those without."""
  labels = _labels(runs)
  entries, warnings = [], []
  for run in runs:
    result = runs_lib.final_score(run, mode, window)
    if isinstance(result, str):
      warnings.append(result + " It is left out of the report.")
      continue
    raw, episodes = result
    game, norm = run.task, None
    normalizer = scores.normalizer(run.suite)
    if normalizer is not None:
      try:
        game = scores.canonical_game(run.task) if run.suite == scores.ATARI_SUITE else game
        norm = float(normalizer[1](game, raw))
      except UnknownNameError as e:
        warnings.append(f"{run.path}: {e} It has no human-normalised score, so it is listed "
                        f"with its raw score only.")
    entries.append(Entry(labels[run.path], run.suite, game, run.seed, raw, norm, episodes,
                         run.path))
  return entries, warnings


def drop_duplicate_runs(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
  """One entry per (method label, suite, game, seed), the first by sorted path, and a warning
  naming both paths for every copy left out (e.g. a run directory copied twice)."""
  kept, warnings = {}, []
  for e in sorted(entries, key=lambda e: e.path):
    key = (e.label, e.suite, e.game, e.seed)
    if key in kept:
      warnings.append(f"{e.path} repeats {kept[key].path} (both {e.label} on {e.game} with seed "
                      f"{e.seed}); only the first is scored. Delete the copy, or give a "
                      f"different run its own seed.")
    else:
      kept[key] = e
  return list(kept.values()), warnings


def score_matrix(per_game: dict[str, list[float]], label: str, warnings: list[str],
                 fix: str = "Rerun the sweep to finish the missing seeds.") -> np.ndarray:
  """[runs, games] matrix (games in sorted order) from per-game score lists; with unequal
  run counts the first min-count runs of every game are used, and a warning says so."""
  games = sorted(per_game)
  counts = {g: len(per_game[g]) for g in games}
  k = min(counts.values())
  if max(counts.values()) != k:
    fewest = ", ".join(f"{g}: {n}" for g, n in counts.items() if n == k)
    warnings.append(f"{label}: games have {k} to {max(counts.values())} runs ({fewest}); the "
                    f"aggregates use {k} run(s) per game, the per-game table uses all. {fix}")
  return np.stack([np.asarray(per_game[g][:k]) for g in games], axis=1)


def published_normalized(method: str, games: list[str]) -> dict[str, np.ndarray]:
  """{game: HNS [runs]} of a published method on the given games."""
  raw = published.scores(method)
  return {g: scores.human_normalized(g, raw[g]) for g in games if g in raw}


def _ours(entries: list[Entry]) -> dict[str, dict[str, list[Entry]]]:
  """{label: {game: [entries sorted by seed]}}."""
  out = collections.defaultdict(lambda: collections.defaultdict(list))
  for e in sorted(entries, key=lambda e: (e.label, e.game, e.seed)):
    out[e.label][e.game].append(e)
  return out


def _scoring_sentence(mode: str, window: int) -> str:
  if mode == "eval":
    return ("final evaluation: the mean return of every episode of each run's last evaluation "
            "round (the IRIS / DIAMOND protocol; `run.eval_episodes` episodes, 100 on "
            "Atari-100k).")
  return (f"training episodes: the mean return of the training episodes that ended in each "
          f"run's last {window:,} agent steps (the DreamerV3 convention).")


@dataclasses.dataclass
class Context:
  """What every section of one report needs."""
  entries: list[Entry]
  ours: dict            # {label: {game: [Entry]}}
  compare: list[str]    # published methods shown beside the runs
  compare_games: list[str]
  norm_name: str        # 'HNS', 'score/1000', ...
  atari: bool
  mode: str


def make_context(entries: list[Entry], compare: list[str], mode: str,
                 warnings: list[str]) -> Context:
  """Groups the entries and keeps the published methods to compare with (file spellings, as
  run_report resolves them) when the runs are Atari runs."""
  norm_names = {scores.normalizer(e.suite)[0] for e in entries if e.norm is not None}
  atari = all(e.suite == scores.ATARI_SUITE for e in entries)
  if compare and not atari:
    warnings.append("Published results exist for Atari-100k only; --compare is ignored for "
                    "these non-Atari runs.")
    compare = []
  normalized_games = sorted({e.game for e in entries if e.norm is not None})
  return Context(entries, _ours(entries), compare,
                 normalized_games or list(scores.atari100k_games()),
                 " / ".join(sorted(norm_names)) or "HNS", atari, mode)


def aggregate_matrices(ctx: Context, warnings: list[str]) -> dict[str, np.ndarray]:
  """{label: normalised scores [runs, games]}: the runs' own, then the published methods'
  on the games the runs cover."""
  matrices = {}
  for label, per_game in ctx.ours.items():
    normed = {g: [e.norm for e in es] for g, es in per_game.items() if es[0].norm is not None}
    if normed:
      matrices[label] = score_matrix(normed, label, warnings)
      if len(normed) < len(ctx.compare_games):
        warnings.append(f"{label} covers {len(normed)} of the {len(ctx.compare_games)} games of "
                        f"this report; its aggregates are over its own games.")
  for method in ctx.compare:
    matrices[method + PUBLISHED_SUFFIX] = score_matrix(
        published_normalized(method, ctx.compare_games), method, warnings,
        fix="The authors released unequal run counts per game.")
  return matrices


def _missing_sentence(method: str, games: list[str]) -> str:
  """' No value for ...: its aggregates are over its other N games.' for a published method
  lacking some of `games`, else ''."""
  missing = [g for g in games if g in published.missing_games(method)]
  if not missing:
    return ""
  return (f" No value for {', '.join(missing)}: its aggregates are over its other "
          f"{len(games) - len(missing)} games.")


def header_lines(ctx: Context, runs: list, runs_root: str | None, n_warnings: int, reps: int,
                 window: int, mixed: str | None) -> list[str]:
  """The report's preamble: what was scored, under which protocol, and how."""
  scored = (f"`{runs_root}`: {len(ctx.entries)} runs scored over "
            f"{len({e.game for e in ctx.entries})} games" if runs_root
            else "none (--runs left out): published methods only")
  md = ["# Benchmark report\n",
        f"- Runs: {scored}, {n_warnings} warning(s) (listed at the end)."]
  if runs:
    card = runs[0].card
    shown = ", ".join(f"{k}={card[k]}" for k in PROTOCOL_SHOWN if k in card)
    md.append(f"- Protocol card: {shown}; agent steps per run: "
              f"{runs[0].protocol().get('run.steps')}.")
  if mixed:
    md.append(f"- **Mixed protocols (--force_mixed_protocols):** {mixed}. The aggregates pool "
              f"them anyway; they are not comparable with published numbers.")
  md.append(f"- Scoring: {_scoring_sentence(ctx.mode, window)}")
  md.append(f"- Normalisation: {ctx.norm_name}. Atari HNS = (score - random) / (human - random) "
            f"with the random and human scores of `wm_jax/eval/data/atari100k_reference.csv` "
            f"(Mnih et al. 2015, via DQN Zoo); DMC: score / 1000.")
  md.append(f"- Aggregates: mean and median over games of the per-game mean over runs, IQM over "
            f"the runs x games matrix, optimality gap (gamma = 1), #superhuman = games whose "
            f"mean normalised score is >= 1 (at least human level). 95% stratified-bootstrap "
            f"CIs (rliable, {reps} replications, percentile method).")
  if ctx.compare:
    md.append(f"- Published methods ({', '.join(ctx.compare)}) are scored on the same "
              f"{len(ctx.compare_games)} games from their released per-game data; sources:")
    md += [f"  - {m}: {published.source_summary(m)}.{_missing_sentence(m, ctx.compare_games)}"
           for m in ctx.compare]
  return md + [""]


def per_game_table(ctx: Context) -> tuple[list[str], list[list[str]], list[list]]:
  """(headers, Markdown/LaTeX rows, CSV rows) of the per-game table: reference scores, each
  label's raw and normalised mean ± std over seeds, and published means."""
  reference = scores.atari_reference() if ctx.atari else {}
  published_raw = {m: published.scores(m) for m in ctx.compare}
  headers = ["Game"] + (["Random", "Human"] if reference else [])
  for label in ctx.ours:
    headers += [label, f"{label} ({ctx.norm_name})"]
  headers += ctx.compare
  rows, csv_rows = [], []
  for game in sorted({e.game for e in ctx.entries}) or ctx.compare_games:
    row = [game]
    if reference:
      row += [tables.format_number(v) for v in reference.get(game, (np.nan, np.nan))]
    for label, per_game in ctx.ours.items():
      es = per_game.get(game, [])
      raw, normed = [e.raw for e in es], [e.norm for e in es if e.norm is not None]
      row += [tables.format_mean_std(raw), tables.format_mean_std(normed, 3)]
      if es:
        csv_rows.append([label, "this project", es[0].suite, game, len(es), np.mean(raw),
                         np.std(raw), ctx.norm_name if normed else "",
                         np.mean(normed) if normed else "", np.std(normed) if normed else ""])
    for method in ctx.compare:
      values = published_raw[method].get(game, np.zeros(0))
      row.append(tables.format_number(values.mean()) if values.size else "–")
      if values.size:
        hns = scores.human_normalized(game, values)
        csv_rows.append([method, "published", scores.ATARI_SUITE, game, values.size,
                         values.mean(), values.std(), "HNS", hns.mean(), hns.std()])
    rows.append(row)
  return headers, rows, csv_rows


def aggregate_cell(metric: str, interval: tuple, single_valued: bool) -> str:
  """One aggregate with its CI; the IQM of a method with one value per game carries
  SINGLE_VALUE_MARK (SINGLE_VALUE_NOTE explains it)."""
  cell = tables.format_interval(*interval, digits=0 if metric == "superhuman" else 3)
  return f"{cell} {SINGLE_VALUE_MARK}" if single_valued and metric == "iqm" else cell


def aggregate_table(estimates: dict, matrices: dict) -> tuple[list[str], list, list]:
  """(headers, rows, CSV rows) of the aggregates with their CIs."""
  headers = ["Method", "Runs x games"] + [aggregate.METRIC_NAMES[m] for m in aggregate.METRICS]
  rows, csv_rows = [], []
  for label, est in estimates.items():
    runs, games = matrices[label].shape
    rows.append([label, f"{runs} x {games}"] + [aggregate_cell(m, est[m], runs == 1)
                                                for m in aggregate.METRICS])
    origin = "published" if label.endswith(PUBLISHED_SUFFIX) else "this project"
    csv_rows += [[label, origin, runs, games, m, *est[m]] for m in aggregate.METRICS]
  return headers, rows, csv_rows


def paper_aggregate_rows(compare: list[str]) -> list[list[str]]:
  """Aggregates the compared papers state, with notes and sources."""
  return [[r["method"], aggregate.METRIC_NAMES.get(r["metric"], r["metric"]),
           tables.format_number(r["value"], 0 if r["metric"] == "superhuman" else 3),
           r["note"], r["source"]]
          for r in published.paper_aggregates() if r["method"] in compare]


def build_report(runs: list, entries: list[Entry], warnings: list[str], compare: list[str],
                 mode: str, window: int, reps: int, seed: int, mixed: str | None,
                 runs_root: str) -> tuple[str, dict]:
  """The Markdown report and {filename: text or Figure} of every output file."""
  ctx = make_context(entries, compare, mode, warnings)
  matrices = aggregate_matrices(ctx, warnings)
  estimates = aggregate.interval_estimates(matrices, reps=reps, seed=seed) if matrices else {}
  md = header_lines(ctx, runs, runs_root, len(warnings), reps, window, mixed)
  files = {}

  headers, rows, csv_rows = per_game_table(ctx)
  md += [f"## Per-game scores (raw return and {ctx.norm_name}; mean ± std over seeds)\n",
         tables.markdown(headers, rows)]
  files["per_game.csv"] = tables.csv_text(
      ["method", "origin", "suite", "game", "runs", "raw_mean", "raw_std", "normalization",
       "norm_mean", "norm_std"], csv_rows)
  files["per_game.tex"] = tables.latex(headers, rows, f"Per-game scores ({mode} scoring).")

  headers, rows, csv_rows = aggregate_table(estimates, matrices)
  if rows:
    notes = [SINGLE_VALUE_NOTE] if any(m.shape[0] == 1 for m in matrices.values()) else []
    md += [f"\n## Aggregates ({ctx.norm_name}, 95% CIs)\n", tables.markdown(headers, rows)] + notes
    files["aggregates.tex"] = tables.latex(headers, rows, " ".join(
        [f"Aggregate {ctx.norm_name} with 95% CIs ({mode} scoring)."] + notes))
  files["aggregates.csv"] = tables.csv_text(
      ["method", "origin", "runs", "games", "metric", "value", "ci_low", "ci_high"], csv_rows)
  paper_rows = paper_aggregate_rows(ctx.compare)
  if paper_rows:
    md += ["\n## Aggregates stated in the papers (for reference; the table above recomputes "
           "them from released per-game data)\n",
           tables.markdown(["Method", "Metric", "Value", "Note", "Source"], paper_rows)]
  files["runs.csv"] = tables.csv_text(
      ["path", "method", "suite", "game", "seed", "raw", "normalized", "episodes"],
      [[e.path, e.label, e.suite, e.game, e.seed, e.raw, "" if e.norm is None else e.norm,
        e.episodes] for e in entries])

  if runs:
    files["curves.png"] = _curves_figure(runs, entries, ctx.compare)
  if estimates:
    files["aggregates.png"] = plots.aggregate_intervals(estimates, f"{ctx.norm_name} (95% CI)")
    flat = np.concatenate([m.ravel() for m in matrices.values()])
    taus = np.linspace(0.0, max(2.0, float(np.quantile(flat, 0.95))), 101)
    profiles, cis = aggregate.performance_profiles(matrices, taus, reps=reps, seed=seed)
    files["profiles.png"] = plots.performance_profiles(taus, profiles, cis,
                                                       rf"{ctx.norm_name} $\tau$")
  md += ["\n## Figures\n"] + [f"- `{name}`" for name in sorted(files) if name.endswith(".png")]
  if warnings:
    md += ["\n## Warnings\n"] + [f"- {w}" for w in warnings]
  return "\n".join(md) + "\n", files


def _curves_figure(runs, entries, compare):
  """Learning curves of the scored runs per game with random, human and published levels."""
  published_raw = {m: published.scores(m) for m in compare}
  scored = {e.path: e for e in entries}
  curves = collections.defaultdict(lambda: collections.defaultdict(list))
  for run in runs:
    entry = scored.get(run.path)
    if entry is None:
      continue
    for kind in ("train", "eval"):
      x, y = runs_lib.learning_curve(run, kind)
      if x.size:
        curves[entry.game][f"{entry.label} ({kind})"].append((x, y))
  hlines = collections.defaultdict(dict)
  reference = scores.atari_reference()
  for game in curves:
    if game in reference:
      hlines[game].update({plots.RANDOM_REFERENCE: reference[game][0],
                           plots.HUMAN_REFERENCE: reference[game][1]})
    for method in compare:
      if game in published_raw[method]:
        hlines[game][method] = float(published_raw[method][game].mean())
  return plots.learning_curves(curves, hlines, xlabel="env frames", ylabel="raw return")


def write_outputs(out: str, report: str, files: dict) -> None:
  """Writes report.md and every file (text or Figure) into `out`."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(report)
  for name, content in files.items():
    path = os.path.join(out, name)
    if isinstance(content, str):
      with open(path, "w") as f:
        f.write(content)
    else:
      content.savefig(path, dpi=110)


def scored_runs(runs_root: str, mode: str, window: int, include_unfinished: bool,
                force_mixed: bool, warnings: list[str]) -> tuple[list, list[Entry], str | None]:
  """(runs, their entries without duplicate copies, mixed-protocol description) of the run
  directories under `runs_root`; UserError when none can be scored."""
  runs, load_warnings = load_runs(runs_root, include_unfinished)
  warnings += load_warnings
  mixed = runs_lib.check_protocols(runs, force_mixed)
  entries, score_warnings = score_runs(runs, mode, window)
  entries, duplicate_warnings = drop_duplicate_runs(entries)
  warnings += score_warnings + duplicate_warnings
  if not entries:
    raise UserError(f"No run under {runs_root} could be scored (see the warnings above); "
                    f"finish or resume the runs with the sweep {PUBLISHED_ONLY_HINT}.")
  return runs, entries, mixed


def run_report(runs_root: str | None, out: str, compare: list[str], warnings: list[str],
               mode: str = "eval", window: int = 10_000, reps: int = 2000, seed: int = 0,
               include_unfinished: bool = False, force_mixed: bool = False) -> str:
  """Builds and writes the report of the runs under `runs_root` (None: of the `compare`
  methods only); returns its Markdown. Appends warnings to `warnings` (also when it raises
  UserError)."""
  if runs_root is None and not compare:
    raise UserError("Nothing to report: pass --runs=DIR (a sweep's --workdir), --compare=METHODS "
                    "(published methods), or both.")
  compare = list(dict.fromkeys(published.canonical_method(name) for name in compare))
  runs, entries, mixed = ([], [], None) if runs_root is None else scored_runs(
      runs_root, mode, window, include_unfinished, force_mixed, warnings)
  report, files = build_report(runs, entries, warnings, compare, mode, window, reps, seed,
                               mixed, runs_root)
  write_outputs(out, report, files)
  return report


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # rliable logs every bootstrap at INFO
  warnings = []
  try:
    report = run_report(FLAGS.runs, FLAGS.out, FLAGS.compare, warnings, FLAGS.scoring,
                        FLAGS.train_window, FLAGS.reps, FLAGS.seed, FLAGS.include_unfinished,
                        FLAGS.force_mixed_protocols)
  except UserError as e:
    sys.exit(f"error: {e}")
  finally:
    for warning in warnings:
      print(f"warning: {warning}", file=sys.stderr)
  if not FLAGS.quiet:
    print(report.split("\n## Figures")[0])
  print(f"report written to {FLAGS.out}/report.md", file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["out"])
  app.run(main)
