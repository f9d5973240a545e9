"""Train one run: `python -m experiments.train --config=experiments/configs/<method>.py:<variant>
--workdir=DIR [--config.some.field=value ...]`. Rerunning the same command resumes the run."""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.config_files import check_config_file
from wm_jax import parallel
from wm_jax.errors import UserError
from wm_jax.train import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file and variant: experiments/configs/<method>.py:<variant>.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created, or resumed if it exists).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.mark_flags_as_required(["config", "workdir"])


def config_arg(argv) -> str | None:
  """The --config value in argv, read by absl's own parser with every other flag left alone."""
  only_config = flags.FlagValues()
  flags.DEFINE_string("config", None, "", flag_values=only_config)
  only_config(argv, known_only=True)
  return only_config.config


def parse_flags(argv):
  """absl flag parsing that shows config errors as one sentence, not a traceback."""
  try:
    if spec := config_arg(argv):   # ml_collections reports a missing file as a traceback
      check_config_file(spec)
    return flags.FLAGS(argv)
  except UserError as e:
    sys.exit(f"error: {e}")
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:   # raised inside the config file
      sys.exit(f"error: {lines[-1].split(': ', 1)[-1]}")
    sys.exit(f"error: {lines[0]}")
  except AttributeError as e:   # ml_collections: --config.<path> names no field
    inner = e.args[0].args[0] if isinstance(e.args[0], KeyError) else str(e.args[0])
    name, _, hint = inner.partition("\n")
    sys.exit(f"error: the config has no field {name}; {hint or 'check the spelling'} "
             f"(--helpfull lists the fields).")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:   # orbax logs every save at INFO; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  parallel.maybe_initialize_distributed()
  try:
    counters = train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"finished at agent step {counters['agent_step']:,} ({counters['updates']:,} updates)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
