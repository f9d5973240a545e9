"""The method config files in experiments/configs/, for the one sentence that experiments.train
and experiments.sweep print when --config names a file that does not exist."""

from __future__ import annotations

import os

from wm_jax.errors import UnknownNameError

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
