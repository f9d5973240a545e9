"""Reading pretrained weights that users convert from PyTorch (experiments.convert_weights):
one .npz of PyTorch state-dict arrays, checked name by name and shape by shape."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from wm_jax.errors import RunConfigError


def read_converted(path: str, shapes: dict[str, tuple[int, ...]], network: str,
                   hint: str) -> dict[str, np.ndarray]:
  """The arrays of the .npz at `path`, which must hold every key of `shapes` with that shape;
  one sentence naming `network` and the fix (`hint`) if it is missing, unreadable or short."""
  if not os.path.isfile(path):
    raise RunConfigError(f"{network} weights {path} do not exist: {hint}.")
  try:
    with np.load(path) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise RunConfigError(f"{network} weights {path} cannot be read ({type(e).__name__}): "
                         f"{hint}.") from None
  for key, shape in shapes.items():
    if key not in arrays or arrays[key].shape != shape:
      found = "missing" if key not in arrays else f"of shape {arrays[key].shape}"
      raise RunConfigError(f"{network} weights {path} do not hold {key} {shape} ({found}): "
                           f"{hint}.")
  return arrays
