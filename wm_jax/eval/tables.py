"""Renderings of report tables: Markdown (README / paper style), LaTeX (booktabs) and CSV.

A table is (headers [C], rows [R][C]) of strings; `format_*` helpers build the cells.
"""

from __future__ import annotations

import csv
import io

import numpy as np

LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "±": r"$\pm$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "†": r"$^\dagger$"}


def format_number(x: float, digits: int = 1) -> str:
  """A number with `digits` decimals (1 for raw returns as in the papers' tables, 3 for
  normalised scores); '–' for a missing one."""
  if x is None or not np.isfinite(x):
    return "–"
  return f"{x:.{digits}f}"


def format_mean_std(values, digits: int = 1) -> str:
  """'mean ± std' over runs (std with ddof=0; just the mean for a single run)."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return "–"
  mean = format_number(values.mean(), digits)
  return mean if values.size == 1 else f"{mean} ± {format_number(values.std(), digits)}"


def format_interval(point: float, low: float, high: float, digits: int = 3) -> str:
  """'point [low, high]' (a CI), or just the point when the CI is degenerate."""
  if np.isclose(low, high) and np.isclose(low, point):
    return format_number(point, digits)
  return (f"{format_number(point, digits)} [{format_number(low, digits)}, "
          f"{format_number(high, digits)}]")


def _is_numeric(cell: str) -> bool:
  """Whether a cell holds only numbers, intervals and footnote marks (right-aligned)."""
  return all(ch in "0123456789.-–±[], †" for ch in str(cell))


def markdown(headers: list[str], rows: list[list[str]]) -> str:
  """A GitHub-flavoured Markdown table: numeric columns right-aligned, text left-aligned."""
  align = ["--:" if i and all(_is_numeric(row[i]) for row in rows) else ":--"
           for i in range(len(headers))]
  lines = [headers, align] + rows
  return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |"
                   for line in lines) + "\n"


def _latex_escape(text: str) -> str:
  return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def latex(headers: list[str], rows: list[list[str]], caption: str) -> str:
  """A booktabs `table` environment with the caption given (needs \\usepackage{booktabs})."""
  spec = "l" + "r" * (len(headers) - 1)
  body = "\n".join(" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows)
  return (f"\\begin{{table}}[t]\n\\centering\n\\caption{{{_latex_escape(caption)}}}\n"
          f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n"
          f"{' & '.join(_latex_escape(h) for h in headers)} \\\\\n\\midrule\n{body}\n"
          f"\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n")


def csv_text(headers: list[str], rows: list[list]) -> str:
  """CSV text (RFC 4180 quoting) of raw values, for spreadsheets and pandas."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(headers)
  writer.writerows(rows)
  return out.getvalue()
