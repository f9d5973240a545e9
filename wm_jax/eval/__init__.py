"""Evaluation: reference score tables, normalisation, aggregates with CIs, run-directory
reading, published results, and the tables and plots of a benchmark report.

  scores.py     random/human Atari-100k table (HNS) and the DMC convention (score / 1000)
  published.py  per-game Atari-100k results of published methods, each number with its source
  aggregate.py  mean / median / IQM / optimality gap / #superhuman with stratified-bootstrap CIs
  runs.py       reading run directories (scores.jsonl, protocol card) into per-run final scores
  tables.py     Markdown, CSV and LaTeX renderings of the per-game and aggregate tables
  plots.py      learning curves, aggregate intervals and performance profiles (matplotlib)

`python -m benchmarks.report` puts these together; data files live in `data/` (see its README).
"""
