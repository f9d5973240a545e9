"""The cross-family world-model comparison of benchmarks.wm_quality: its rows (a method config
and overrides), the CPU budget, and the tables (Markdown, CSV, LaTeX), curves and frame strip
of one dataset. The training and the metrics are wm_jax/offline.py's."""

from __future__ import annotations

import ast
import dataclasses
import os
import re

import numpy as np

from wm_jax import offline
from wm_jax.agents import WORLD_MODEL_BUILDERS
from wm_jax.dataset import Dataset, DatasetError
from wm_jax.errors import RunConfigError
from wm_jax.eval import plots, tables

DEFAULT_VARIANT = "atari100k"
DEFAULT_VARIANTS = {"world_models": "carracing"}   # the paper's sizes (it has no Atari config)


def default_variant(method: str) -> str:
  """The config variant a --methods entry without ':variant' uses."""
  return DEFAULT_VARIANTS.get(method, DEFAULT_VARIANT)

# Fields that change sampling only: an ablation over them evaluates the same trained model.
SAMPLING_FIELDS = ("agent.denoiser.sampler.num_steps", "agent.denoiser.sampler.order",
                   "agent.denoiser.sampler.s_churn", "agent.denoiser.sampler.init_sigma",
                   "agent.denoiser.cfg_weight", "agent.rnn.temperature")

# --budget=cpu: each family at a size whose update takes 1.1-1.8 s on 2 CPU cores (measured,
# jaxlib 0.10.2: DreamerV3 1.5 s, STORM 1.2, IRIS 1.7, DIAMOND 1.1, World Models at the paper's
# sizes 1.8), batch 16 sequences (of 32 steps for the RSSM, STORM and World Models, which covers
# the default context 8 + horizon 15 that STORM's learned positions must have seen; IRIS's
# 20-step context; 8 for DIAMOND, which denoises each sequence's last frame), and lr 3e-4 for
# every model (the papers: 1e-4; World Models' M: 1e-3, kept) for the few hundred updates a CPU
# budget affords. IRIS: squared-error reconstruction as its debug config (without the
# perceptual term, L1 settles on the background; experiments/configs/iris.py) and the world
# model trained from the first update (the paper starts it after the tokenizer's warm-up).
# Named deviations from each config's defaults, printed in the report.
CPU_BUDGET = {
    "common": ("run.batch_size=16", "run.batch_length=32"),
    "dreamerv3": ("agent.size='XS'", "agent.model_opt.lr=3e-4"),
    "dreamerv2": ("agent.model_opt.lr=3e-4",),
    "dreamerv1": ("agent.model_opt.lr=3e-4",),
    "planet": ("agent.model_opt.lr=3e-4",),
    "storm": ("agent.transformer.width=256", "agent.transformer.heads=4",
              "agent.encoder.cnn_depth=16", "agent.decoder.cnn_depth=16",
              "agent.model_opt.lr=3e-4"),
    "iris": ("run.batch_length=20", "agent.tokenizer.vocab=128", "agent.tokenizer.embed_dim=64",
             "agent.tokenizer.z_channels=64", "agent.tokenizer.ch=32",
             "agent.tokenizer.num_res_blocks=1", "agent.tokenizer.attn_resolutions=()",
             "agent.tokenizer.reconstruction='mse'", "agent.world_model.width=128",
             "agent.world_model.depth=3", "agent.world_model.heads=4",
             "agent.schedule.world_model_start=0", "agent.tokenizer.opt.lr=3e-4",
             "agent.world_model.opt.lr=3e-4"),
    "diamond": ("run.batch_length=8", "agent.denoiser.channels=(32, 32, 32, 32)",
                "agent.denoiser.cond_channels=128", "agent.reward_end.lstm=128",
                "agent.reward_end.channels=(16, 16, 16, 16)", "agent.denoiser.opt.lr=3e-4",
                "agent.reward_end.opt.lr=3e-4"),
    "world_models": ("agent.vae.lr=3e-4",),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One world model of the table: a method config and the overrides that make it."""
  method: str
  variant: str
  fixed: tuple[str, ...] = ()               # --set: every row of the method (not in the label)
  fixed_sampling: tuple[str, ...] = ()      # --set of a sampling field (not in the label)
  train_overrides: tuple[str, ...] = ()     # an ablation value that changes the trained model
  sample_overrides: tuple[str, ...] = ()    # an ablation value that changes sampling only

  @property
  def label(self) -> str:
    """'method[:variant]' and its ablation value, e.g. 'diamond denoiser.sampler.num_steps=1'."""
    name = (self.method if self.variant == default_variant(self.method)
            else f"{self.method}:{self.variant}")
    shown = [o.split("agent.", 1)[-1] for o in self.train_overrides + self.sample_overrides]
    return " ".join([name] + shown)

  @property
  def overrides(self) -> tuple[str, ...]:
    """The row's own overrides (after the budget's), in the order they apply."""
    return self.fixed + self.train_overrides + self.sampling

  @property
  def sampling(self) -> tuple[str, ...]:
    """Its overrides that change sampling only (--set, then the ablation value)."""
    return self.fixed_sampling + self.sample_overrides

  @property
  def train_name(self) -> str:
    """The folder of its training run: rows that differ in sampling only share it."""
    parts = [self.method, self.variant] + list(self.fixed + self.train_overrides)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "__".join(parts)).strip("_")


def parse_override(text: str) -> tuple[str, object]:
  """'a.b.c=value' -> ('a.b.c', value as a Python literal, or the text itself)."""
  field, sep, value = text.partition("=")
  if not sep or not field:
    raise RunConfigError(f"Override {text!r} is not field=value (e.g. agent.size='XS').")
  try:
    return field, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return field, value


def apply_override(config, text: str) -> None:
  """Sets one `field=value` override on an ml_collections config, in place."""
  field, value = parse_override(text)
  *parents, leaf = field.split(".")
  node = config
  for name in parents:
    if name not in node:
      raise RunConfigError(f"Override {text!r}: the {config.method} config has no field "
                           f"{field}.")
    node = node[name]
  if leaf not in node:
    raise RunConfigError(f"Override {text!r}: the {config.method} config has no field {field}.")
  node[leaf] = value


def method_overrides(specs: list[str], methods: set[str], flag: str) -> dict[str, list[str]]:
  """['method:field=value', ...] -> {method: [field=value, ...]}; one sentence on a bad one."""
  out: dict[str, list[str]] = {}
  for spec in specs:
    method, sep, rest = spec.partition(":")
    if not sep or method not in methods:
      raise RunConfigError(f"--{flag}={spec} must start with one of the methods "
                           f"({', '.join(sorted(methods))}) and a colon, e.g. "
                           f"diamond:agent.denoiser.sampler.num_steps=1,3,10.")
    out.setdefault(method, []).append(rest)
  return out


def make_rows(methods: list[str], sets: list[str], ablations: list[str]) -> list[Row]:
  """The table's rows: each method[:variant] with its --set overrides, then one row per value
  of each of its --ablate fields. Rows that differ in SAMPLING_FIELDS only (by --set or
  --ablate) share one training run."""
  rows = []
  parsed = [m.partition(":")[::2] for m in methods]
  for method, _ in parsed:
    if method not in WORLD_MODEL_BUILDERS:
      raise RunConfigError(f"--methods: {method!r} has no offline world model; choose from "
                           f"{', '.join(WORLD_MODEL_BUILDERS)}.")
  names = {method for method, _ in parsed}
  fixed = method_overrides(sets, names, "set")
  ablate = method_overrides(ablations, names, "ablate")
  for method, variant in parsed:
    method_sets = fixed.get(method, ())
    base = Row(method, variant or default_variant(method),
               tuple(o for o in method_sets if o.partition("=")[0] not in SAMPLING_FIELDS),
               tuple(o for o in method_sets if o.partition("=")[0] in SAMPLING_FIELDS))
    rows.append(base)
    for spec in ablate.get(method, ()):
      field, _, values = spec.partition("=")
      for value in _split_values(values):
        override = (f"{field}={value}",)
        if field in SAMPLING_FIELDS:
          rows.append(dataclasses.replace(base, sample_overrides=override))
        else:
          rows.append(dataclasses.replace(base, train_overrides=override))
  return list(dict.fromkeys(rows))


def _split_values(text: str) -> list[str]:
  """'1,3,(8, 8),x' -> ['1', '3', '(8, 8)', 'x']: commas inside brackets do not split."""
  values, depth, current = [], 0, ""
  for char in text:
    depth += char in "([{"
    depth -= char in ")]}"
    if char == "," and depth == 0:
      values.append(current)
      current = ""
    else:
      current += char
  return [v.strip() for v in values + [current] if v.strip()]


def budget_overrides(method: str, budget: str) -> tuple[str, ...]:
  """The budget's overrides of a method: CPU_BUDGET's common ones, replaced field by field by
  the method's own."""
  if budget == "paper":
    return ()
  by_field = {text.partition("=")[0]: text
              for text in CPU_BUDGET["common"] + CPU_BUDGET.get(method, ())}
  return tuple(by_field.values())


FRAME_SIZE = 64   # the compared world models read FRAME_SIZE x FRAME_SIZE RGB frames


def check_dataset_frames(dataset: Dataset) -> None:
  """One sentence unless the dataset holds 64x64 RGB frames, which every family's encoder reads."""
  entries = dataset.spec["entries"]
  shape = tuple(entries.get("image", {}).get("shape", ()))
  if shape != (FRAME_SIZE, FRAME_SIZE, 3):
    raise DatasetError(f"Dataset {dataset.directory} holds frames of shape {shape or 'none'}, "
                       f"but the compared world models read {FRAME_SIZE}x{FRAME_SIZE}x3 frames: "
                       f"collect it with --config.env.protocol.image_size={FRAME_SIZE} from a "
                       f"pixel env.")


FRAMES = ("frames", "real", "last_context")   # arrays kept beside a row's cached result


def table_rows(results: list[dict]) -> tuple[list[str], list[list]]:
  """Headers and raw rows (floats, None where a metric does not apply) of one dataset's table:
  every model (`offline.evaluate` results plus 'label', 'updates', 'train_seconds',
  'update_bytes'), then the copy-last-frame and mean-frame baselines."""
  r0 = results[0]
  steps = offline.report_steps(r0["horizon"])
  metrics = offline.frame_metric_names(r0)
  distribution = offline.distribution_metric_names(r0)
  headers = (["model", "params", "updates", "train min"]
             + [f"{m.upper()}@{k}" for m in metrics for k in steps]
             + [offline.DISTRIBUTION_HEADERS[m] for m in distribution]
             + ["reward sign acc.", "reward recall", "reward MSE", "end acc.", "action sens.",
                "frames/s b=1", f"frames/s b={r0['batch']}", "update MiB", "rollout MiB"])
  rows = []
  for r in results:
    m = r["model"]
    rows.append([r["label"], r["params"]["total"], r["updates"], r["train_seconds"] / 60]
                + [m[metric][k - 1] for metric in metrics for k in steps]
                + [m[d] for d in distribution]
                + [float(np.mean(r["reward_accuracy"])), r.get("reward_recall")]
                + [float(np.mean(r[k])) for k in ("reward_mse", "end_accuracy")]
                + [255 * float(np.mean(r["action_sensitivity"])), r["hz_batch1"], r["hz_batch"],
                   _mib(r["update_bytes"]), _mib(r["rollout_bytes"])])
  for label, key in BASELINES:
    rows.append([label, None, None, None]
                + [r0[key][metric][k - 1] for metric in metrics for k in steps]
                + [r0[key][d] for d in distribution] + [None] * 9)
  return headers, rows


BASELINES = (("copy last frame", "copy_last"), ("mean frame", "mean_frame"))
REWARD_NOTE = ("Reward sign accuracy compares -1/0/+1 classes (|r| < 0.5 is 0); reward recall is "
               "that accuracy on the steps whose real reward is not 0; reward MSE is "
               "against the dataset's raw reward, of which IRIS and DIAMOND predict the sign "
               "only (their papers train on clipped rewards).")


def _mib(size: int):
  return None if size < 0 else size / 2**20


def formatted(headers: list[str], rows: list[list]) -> list[list[str]]:
  """Raw table rows -> strings: counts with separators, dB and action sensitivity with 2
  decimals, rates, minutes and MiB with 1, reward MSE with 4, the rest with 3; '–' for None."""
  def fmt(header, value):
    if value is None:
      return "–"
    if isinstance(value, str):
      return value
    if header in ("params", "updates"):
      return f"{int(value):,}"
    if header.startswith("PSNR") or header == "action sens.":
      return f"{value:.2f}"
    if header.startswith("frames/s") or header.endswith("MiB") or header == "train min":
      return f"{value:.1f}"
    return f"{value:.4f}" if header == "reward MSE" else f"{value:.3f}"
  return [[fmt(h, v) for h, v in zip(headers, row)] for row in rows]


def latex(headers: list[str], rows: list[list[str]]) -> str:
  """A booktabs LaTeX tabular of formatted rows."""
  esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("–", "--")
  lines = [r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", r"\toprule",
           " & ".join(esc(h) for h in headers) + r" \\", r"\midrule"]
  lines += [" & ".join(esc(c) for c in row) + r" \\" for row in rows]
  return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def write_report(out_dir: str, dataset: Dataset, results: list[dict], budget: str,
                 hardware: str,
                 perceptual: offline.PerceptualMetrics = offline.PerceptualMetrics()) -> str:
  """table.md, table.csv, table.tex, per_step.csv, psnr.png and strip.png of one dataset in
  `out_dir` (`budget`: a sentence on the training budget; `perceptual`: the networks of the
  results, named under the table); returns the Markdown table."""
  headers, raw = table_rows(results)
  rows = formatted(headers, raw)
  r0 = results[0]
  metrics = offline.frame_metric_names(r0)
  horizon, name = r0["horizon"], os.path.basename(os.path.normpath(dataset.directory))
  note = (f"\nDataset {dataset.directory}: {dataset.num_episodes} episodes, "
          f"{r0['windows']} held-out windows of {r0['context']} real frames, then {horizon} "
          f"generated open loop under the real actions. Budget: {budget}, on {hardware}. "
          f"Memory: XLA's compiled memory analysis of one update and of one rollout at batch "
          f"{r0['batch']}. {offline.SENSITIVITY_NOTE} {REWARD_NOTE} "
          f"{offline.metric_gap(perceptual)}\n\n"
          f"Overrides per model:\n"
          + "".join(f"- {r['label']}: {', '.join(r['overrides']) or 'none'}\n" for r in results))
  md = tables.markdown(headers, rows) + note
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(md)
  with open(os.path.join(out_dir, "table.csv"), "w") as f:
    f.write(tables.csv_text(headers, raw))
  with open(os.path.join(out_dir, "table.tex"), "w") as f:
    f.write(latex(headers, rows))
  per_step = [[r["label"], k + 1] + [r["model"][m][k] for m in metrics]
              + [r[m][k] for m in offline.PER_STEP_MODEL_METRICS]
              for r in results for k in range(horizon)]
  per_step += [[label, k + 1] + [r0[key][m][k] for m in metrics]
               + [None] * len(offline.PER_STEP_MODEL_METRICS)
               for label, key in BASELINES for k in range(horizon)]
  with open(os.path.join(out_dir, "per_step.csv"), "w") as f:
    f.write(tables.csv_text(["model", "step"] + list(metrics)
                            + list(offline.PER_STEP_MODEL_METRICS), per_step))
  x = np.arange(1, horizon + 1)
  curves = {}
  for metric in metrics:
    curves[metric.upper()] = {r["label"]: [(x, np.asarray(r["model"][metric]))] for r in results}
    for label, key in BASELINES:
      curves[metric.upper()][label] = [(x, np.asarray(r0[key][metric]))]
  plots.learning_curves(curves, {}, xlabel="open-loop step", ylabel="PSNR (dB) / SSIM / LPIPS",
                        title=f"Open-loop fidelity on held-out episodes, {name}").savefig(
                            os.path.join(out_dir, "psnr.png"), dpi=120)
  shown = [k for k in (1, 2, 3, 5, 8, 10, 15, 20, 30, 50) if k <= horizon]
  first = r0["last_context"]
  strip = {"real": np.stack([first] + [r0["real"][k - 1] for k in shown])}
  for r in results:
    strip[r["label"]] = np.stack([first] + [r["frames"][k - 1] for k in shown])
  plots.frame_strip(strip, ["context"] + [f"t+{k}" for k in shown],
                    f"Real vs generated frames (open loop), {name}").savefig(
                        os.path.join(out_dir, "strip.png"), dpi=100)
  return md
