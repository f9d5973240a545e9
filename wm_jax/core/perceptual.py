"""LPIPS (Zhang et al. 2018, arXiv:1801.03924, eq. 1), the VGG16 variant, as pure functions over
user-supplied weights.

  d(x, x0) = sum_l 1 / (H_l W_l) sum_{h, w} sum_c w_{l,c} (y_{l,hwc} - y0_{l,hwc})^2

where y_l are VGG16's activations at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each
unit-normalised over channels, and w_l the per-channel weights learned from human judgements
(version 0.1 of the `lpips` package: inputs in [-1, 1] shifted and scaled per channel first).
VGG16 is the trunk IRIS's perceptual loss uses (taming-transformers' LPIPS); the `lpips`
package's default AlexNet trunk is not ported.

The weights are not shipped and cannot be downloaded here: ImageNet VGG16 (torchvision's
`vgg16-397923af.pth`) and the linear layers (`lpips/weights/v0.1/vgg.pth`, inside the `lpips`
wheel). `python -m experiments.convert_weights` turns those two PyTorch files into one .npz
that `load_lpips_weights` reads; its keys are the PyTorch state-dict names:
  'features.{i}.weight' [C_out, C_in, 3, 3] and 'features.{i}.bias' [C_out] for torchvision's
  `vgg16().features` convolutions i in VGG16_CONVS, and 'lin{l}.model.1.weight' [1, C_l, 1, 1].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.core.pretrained import read_converted

# torchvision's vgg16().features: conv (3x3, padding 1) + ReLU pairs, 2x2 max-pools after
# indices 3, 8, 15 and 22; LPIPS taps the ReLU outputs at indices 3, 8, 15, 22 and 29.
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
               12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512),
               24: (512, 512), 26: (512, 512), 28: (512, 512)}
TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)   # lpips v0.1 ScalingLayer
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
CONVERT_HINT = ("convert the PyTorch weights with python -m experiments.convert_weights "
                "--vgg=vgg16-397923af.pth --lin=<lpips>/weights/v0.1/vgg.pth --out=lpips_vgg16.npz")


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{key: shape} of every array a weights file must hold (PyTorch names and layouts)."""
  shapes = {}
  for i, (c_in, c_out) in VGG16_CONVS.items():
    shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
    shapes[f"features.{i}.bias"] = (c_out,)
  for layer, channels in enumerate(TAP_CHANNELS):
    shapes[f"lin{layer}.model.1.weight"] = (1, channels, 1, 1)
  return shapes


def load_lpips_weights(path: str) -> dict:
  """The .npz at `path` -> {'convs': {i: (kernel [3, 3, C_in, C_out], bias [C_out])},
  'lins': [w_l [C_l]] x 5} as float32 jax arrays; one sentence naming the fix if the file is
  missing, unreadable or lacks an array."""
  arrays = read_converted(path, expected_shapes(), "LPIPS", CONVERT_HINT)
  as_jax = lambda x: jnp.asarray(x, jnp.float32)
  return {"convs": {i: (as_jax(arrays[f"features.{i}.weight"].transpose(2, 3, 1, 0)),
                        as_jax(arrays[f"features.{i}.bias"]))
                    for i in VGG16_CONVS},
          "lins": [as_jax(arrays[f"lin{layer}.model.1.weight"].reshape(-1))
                   for layer in range(len(TAPS))]}


def vgg16_taps(convs: dict, x: jax.Array) -> list[jax.Array]:
  """VGG16 (torchvision's `features`) on x [N, H, W, 3] -> the 5 ReLU activations LPIPS reads,
  [N, H / 2^l, W / 2^l, C_l] for l = 0..4 (H and W multiples of 16)."""
  taps = []
  for i in range(TAPS[-1] + 1):
    if i in convs:
      kernel, bias = convs[i]
      x = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    elif i - 1 in TAPS:   # the 2x2 max-pool after each tapped ReLU but the last
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    else:
      x = jax.nn.relu(x)
      if i in TAPS:
        taps.append(x)
  return taps


def distance_from_taps(taps_x: list[jax.Array], taps_y: list[jax.Array],
                       lins: list[jax.Array], eps: float = 1e-10) -> jax.Array:
  """LPIPS's eq. 1 from the two images' activations ([N, h_l, w_l, C_l] per layer) and the
  per-channel weights lins ([C_l] per layer) -> distance [N]."""
  unit = lambda t: t / (jnp.sqrt(jnp.sum(t * t, -1, keepdims=True)) + eps)
  return sum(jnp.mean(jnp.sum(w * (unit(a) - unit(b)) ** 2, -1), (1, 2))
             for a, b, w in zip(taps_x, taps_y, lins))


def lpips(weights: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """LPIPS between images x, y float [N, H, W, 3] in [0, 1] -> [N] (0 for identical images)."""
  scaled = lambda im: ((2.0 * im - 1.0) - SHIFT) / SCALE
  both = vgg16_taps(weights["convs"], scaled(jnp.concatenate([x, y])))
  n = x.shape[0]
  return distance_from_taps([t[:n] for t in both], [t[n:] for t in both], weights["lins"])


def make_lpips(path: str, chunk: int = 32) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """LPIPS with the weights at `path` as fn(x, y): float [M, H, W, 3] in [0, 1] -> [M], jitted,
  `chunk` image pairs at a time (VGG16's activations take about 4 MB per 64x64 pair)."""
  weights = load_lpips_weights(path)
  pairwise = jax.jit(lambda w, x, y: jax.lax.map(
      lambda xy: lpips(w, xy[0][None], xy[1][None])[0], (x, y), batch_size=chunk))
  return lambda x, y: pairwise(weights, x, y)
