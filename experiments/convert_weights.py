"""Convert the PyTorch weights of the perceptual metrics into the .npz files this suite reads:

  # LPIPS (VGG16): torchvision's ImageNet VGG16 and the lpips package's linear layers
  python -m experiments.convert_weights --vgg=vgg16-397923af.pth \\
      --lin=<site-packages>/lpips/weights/v0.1/vgg.pth --out=lpips_vgg16.npz
  # FID: pytorch-fid's Inception (TensorFlow's FID network)
  python -m experiments.convert_weights --inception=pt_inception-2015-12-05-6726825d.pth \\
      --out=fid_inception.npz

`torchvision.models.vgg16(weights="IMAGENET1K_V1")` caches --vgg as
~/.cache/torch/hub/checkpoints/vgg16-397923af.pth; --lin ships inside the `lpips` wheel (or is
taming-transformers' `vgg.pth`); pytorch-fid downloads --inception to the same cache on first
use. Reading them needs PyTorch (`pip install torch`), which this suite does not otherwise use.
The .npz files keep the PyTorch names and layouts (wm_jax/core/perceptual.py, wm_jax/core/fid.py);
pass them as `--lpips_weights` / `--fid_weights` to benchmarks.wm_quality and
experiments.train_offline, and the LPIPS one as IRIS's `agent.tokenizer.lpips_weights`.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

from wm_jax.core import fid, perceptual

_VGG = flags.DEFINE_string("vgg", None, "LPIPS: torchvision's VGG16 ImageNet weights (.pth).")
_LIN = flags.DEFINE_string("lin", None, "LPIPS: the v0.1 linear layers for VGG (.pth).")
_INCEPTION = flags.DEFINE_string("inception", None, "FID: pytorch-fid's Inception (.pth).")
_OUT = flags.DEFINE_string("out", None, "The .npz to write (refused if it exists).")
flags.mark_flags_as_required(["out"])


def main(argv):
  del argv
  if bool(_INCEPTION.value) == bool(_VGG.value or _LIN.value) or (
      _VGG.value and not _LIN.value) or (_LIN.value and not _VGG.value):
    sys.exit("error: pass either --vgg and --lin (LPIPS) or --inception (FID).")
  try:
    import torch
  except ImportError:
    sys.exit("error: reading .pth files needs PyTorch: pip install torch, then rerun.")
  if os.path.exists(_OUT.value):
    sys.exit(f"error: {_OUT.value} exists: move it away or choose another --out.")
  if _INCEPTION.value:
    sources, wanted = [_INCEPTION.value], fid.expected_shapes()
    hint = "pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
  else:
    sources, wanted = [_VGG.value, _LIN.value], perceptual.expected_shapes()
    hint = "pass torchvision's vgg16-397923af.pth and lpips' weights/v0.1/vgg.pth"
  arrays = {}
  for path in sources:
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # missing, truncated or not a state dict
      sys.exit(f"error: {path} cannot be read by torch.load ({type(e).__name__}): {hint}.")
    arrays.update({k: v.numpy() for k, v in state.items()})
  missing = [k for k, shape in wanted.items()
             if k not in arrays or tuple(arrays[k].shape) != shape]
  if missing:
    sys.exit(f"error: {missing[0]} {wanted[missing[0]]} is not in the given files with that "
             f"shape: {hint}.")
  with open(_OUT.value + ".tmp", "wb") as f:
    np.savez(f, **{k: arrays[k].astype(np.float32) for k in wanted})
  os.replace(_OUT.value + ".tmp", _OUT.value)
  print(f"{_OUT.value}: {len(wanted)} arrays")


if __name__ == "__main__":
  app.run(main)
