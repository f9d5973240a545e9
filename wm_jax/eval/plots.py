"""Report figures (matplotlib, no display needed): per-game learning curves over env frames,
aggregate metrics with 95% CIs beside published methods, and performance profiles
(Agarwal et al. 2021, Fig. 5 style). Each function returns a `matplotlib.figure.Figure`.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from wm_jax.eval.aggregate import METRIC_NAMES

PLOTTED_METRICS = ("iqm", "mean", "median", "optimality_gap")


# Names of the reference levels in legends: not "random", which a random agent's runs are called.
RANDOM_REFERENCE = "random-play reference (HNS 0)"
HUMAN_REFERENCE = "human reference (HNS 1)"
REFERENCE_STYLE = {RANDOM_REFERENCE: ("black", ":"), HUMAN_REFERENCE: ("dimgray", "-.")}


def _colors(labels):
  cycle = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
  return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def learning_curves(curves: dict[str, dict[str, list]], hlines: dict[str, dict[str, float]],
                    xlabel: str = "env frames", ylabel: str = "return",
                    title: str | None = None) -> Figure:
  """One panel per game, its axes labelled `xlabel` and `ylabel`: each label's runs as
  (x [P], return [P]) pairs, their mean drawn bold and single runs thin; `hlines[game][name]`
  draws reference levels (RANDOM_REFERENCE, HUMAN_REFERENCE, published final scores) as dashed
  lines. Also any other curves per panel (open-loop PSNR per step, with `title`)."""
  games = sorted(set(curves) | set(hlines))
  cols = min(5, max(1, len(games)))
  rows = max(1, math.ceil(len(games) / cols))
  fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.6), layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  labels = sorted({label for per_game in curves.values() for label in per_game})
  ref_names = sorted({name for per_game in hlines.values() for name in per_game}
                     - set(REFERENCE_STYLE))
  colors = _colors(labels + ref_names)
  styles = {**{n: (colors[n], "--") for n in ref_names}, **REFERENCE_STYLE}
  for ax, game in zip(axes, games):
    for label, runs in curves.get(game, {}).items():
      for x, y in runs:
        if len(runs) > 1:
          ax.plot(x, y, color=colors[label], alpha=0.25, lw=0.8)
      grid = np.unique(np.concatenate([x for x, _ in runs])) if runs else np.zeros(0)
      if grid.size:
        mean = np.mean([np.interp(grid, x, y) for x, y in runs if len(x)], axis=0)
        ax.plot(grid, mean, color=colors[label], lw=1.8, marker="." if grid.size < 4 else None,
                label=label)
    for name, value in hlines.get(game, {}).items():
      ax.axhline(value, color=styles[name][0], ls=styles[name][1], lw=1.0, label=name)
    ax.set_title(game, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.tick_params(labelsize=7)
    ax.xaxis.get_offset_text().set_fontsize(7)
  for ax in axes[len(games):]:
    ax.set_visible(False)
  handles = {}
  for ax in axes[:len(games)]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(l, h)
  fig.legend(handles.values(), handles.keys(), loc="outside lower center",
             ncols=min(6, max(1, len(handles))), fontsize=8)
  fig.suptitle(title or f"Learning curves ({ylabel} against {xlabel}; dashed: reference levels)",
               fontsize=10)
  return fig


def frame_strip(rows: dict[str, np.ndarray], column_labels: list[str], title: str) -> Figure:
  """A grid of frames: one row per label, rows[label] float [K, h, w, 3] in [0, 1], one column
  per entry of `column_labels` (real vs generated frames at the same steps)."""
  cols = len(column_labels)
  fig = Figure(figsize=(1.3 * cols + 0.8, 1.35 * len(rows) + 0.5), layout="constrained")
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for r, (label, frames) in enumerate(rows.items()):
    for c in range(cols):
      ax = axes[r, c]
      ax.imshow(np.clip(frames[c], 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(column_labels[c], fontsize=8)
      if c == 0:
        ax.set_ylabel(textwrap.fill(label, 14), fontsize=8)   # rotated: wrap to the row height
  fig.suptitle(title, fontsize=9)
  return fig


def aggregate_intervals(estimates: dict[str, dict[str, tuple]], xlabel: str) -> Figure:
  """Point estimates with 95% CI bars, one panel per metric (IQM, mean, median, optimality
  gap), one row per method (rliable's plot_interval_estimates layout)."""
  labels = list(estimates)
  colors = _colors(labels)
  fig = Figure(figsize=(3.0 * len(PLOTTED_METRICS), 0.45 * len(labels) + 1.2),
               layout="constrained")
  axes = fig.subplots(1, len(PLOTTED_METRICS), sharey=True)
  for ax, metric in zip(axes, PLOTTED_METRICS):
    for row, label in enumerate(labels):
      point, low, high = estimates[label][metric]
      ax.plot([low, high], [row, row], lw=12, solid_capstyle="butt", color=colors[label],
              alpha=0.75)
      ax.plot(point, row, marker="|", markersize=14, mew=2, color="black")
    ax.set_title(METRIC_NAMES[metric], fontsize=10)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.08)
    ax.tick_params(axis="x", labelsize=8)
  axes[0].set_ylim(len(labels) - 0.4, -0.6)   # first method on top
  fig.supxlabel(xlabel, fontsize=9)
  return fig


def performance_profiles(taus: np.ndarray, profiles: dict[str, np.ndarray],
                         cis: dict[str, np.ndarray], xlabel: str) -> Figure:
  """Fraction of runs x games with normalised score > tau, with 95% CI bands."""
  colors = _colors(list(profiles))
  fig = Figure(figsize=(6.0, 4.0), layout="constrained")
  ax = fig.subplots()
  for label, profile in profiles.items():
    ax.plot(taus, profile, color=colors[label], lw=1.8, label=label)
    ax.fill_between(taus, cis[label][0], cis[label][1], color=colors[label], alpha=0.2)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(r"fraction of runs with score $> \tau$")
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig
