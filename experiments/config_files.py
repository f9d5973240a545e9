"""The method config files in experiments/configs/, and the flag parsing of the entry points
that take --config (experiments.train, collect, train_offline): config errors as one sentence."""

from __future__ import annotations

import os
import sys

from absl import flags

from wm_jax.errors import UnknownNameError, UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def method_configs() -> list[str]:
  """File names of the method configs (the modules that define get_config), sorted."""
  names = []
  for name in sorted(os.listdir(CONFIG_DIR)):
    if name.endswith(".py"):
      with open(os.path.join(CONFIG_DIR, name)) as f:
        if "\ndef get_config(" in f.read():
          names.append(name)
  return names


def check_config_file(spec: str) -> None:
  """Raises UnknownNameError listing the method configs unless `path.py[:variant]` names a
  file."""
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    raise UnknownNameError(
        f"--config={spec}: {path} does not exist; the method configs are "
        f"{', '.join(method_configs())} in experiments/configs/ (use "
        f"--config=experiments/configs/<method>.py:<variant>).")


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
