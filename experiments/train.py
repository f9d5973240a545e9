"""Train one run: `python -m experiments.train --config=experiments/configs/<method>.py:<variant>
--workdir=DIR [--config.some.field=value ...]`. Rerunning the same command resumes the run."""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.config_files import parse_flags
from wm_jax import jit_cache, parallel
from wm_jax.errors import UserError
from wm_jax.train import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file and variant: experiments/configs/<method>.py:<variant>.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created, or resumed if it exists).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
# Methods that learn outside the replay-and-update loop, with their own entry point.
# method -> (why the online loop does not fit it, the command that runs it)
OWN_ENTRY_POINTS = {
    "dyna_q": ("learns from each real step",
               "python -m experiments.dyna_q --config=experiments/configs/dyna_q.py:<variant> "
               "--out=DIR"),
    "world_models": ("trains in the paper's three phases from a dataset of random rollouts",
                     "python -m experiments.world_models --config=experiments/configs/"
                     "world_models.py:<variant> --dataset=DIR --out=DIR")}
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:   # orbax logs every save at INFO; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  parallel.maybe_initialize_distributed()
  jit_cache.enable()
  method = _CONFIG.value.get("method")
  if method in OWN_ENTRY_POINTS:
    why, command = OWN_ENTRY_POINTS[method]
    sys.exit(f"error: {method} {why}, not through this loop: run {command}.")
  try:
    counters = train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"finished at agent step {counters['agent_step']:,} ({counters['updates']:,} updates)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
