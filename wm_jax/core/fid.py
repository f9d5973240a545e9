"""FID (Heusel et al. 2017, arXiv:1706.08500, eq. 6) with the Inception network of TensorFlow's
FID code, as pytorch-fid ports it (`pt_inception-2015-12-05`), as pure JAX functions over
user-supplied weights.

  FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

over the 2048 pool3 features of real and generated frames. Frames are resized bilinearly to
299 x 299 and scaled to [-1, 1] as pytorch-fid does; the network is torchvision's Inception v3
with pytorch-fid's FID patches (average pools that exclude the padding, a max pool in the last
block). The weights are not shipped and cannot be downloaded here: convert pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` with `python -m experiments.convert_weights
--inception=...`; the .npz keeps the PyTorch state-dict names ('Mixed_5b.branch1x1.conv.weight',
'....bn.running_mean', ...).

FID needs many frames: with fewer than a few thousand its estimate is biased upward (and the
covariance of 2048 features from fewer than 2048 frames is singular), so compare FIDs only at
equal frame counts, as the tables do.
"""

from __future__ import annotations

import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from wm_jax.core.pretrained import read_converted

CONVERT_HINT = ("convert pytorch-fid's weights with python -m experiments.convert_weights "
                "--inception=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz")
BN_EPS = 1e-3   # torchvision's BasicConv2d

# (name, in channels, out channels, kernel (h, w), stride, padding (h, w)) of every conv+BN+ReLU
_STEM = [("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)), ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
         ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)), ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
         ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))]


def _block_a(name, cin, pool):
  return [(f"{name}.branch1x1", cin, 64, (1, 1), 1, (0, 0)),
          (f"{name}.branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
          (f"{name}.branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
          (f"{name}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
          (f"{name}.branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
          (f"{name}.branch_pool", cin, pool, (1, 1), 1, (0, 0))]


def _block_c(name, c7):
  return [(f"{name}.branch1x1", 768, 192, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7_1", 768, c7, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
          (f"{name}.branch7x7_3", c7, 192, (7, 1), 1, (3, 0)),
          (f"{name}.branch7x7dbl_1", 768, c7, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
          (f"{name}.branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
          (f"{name}.branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
          (f"{name}.branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3)),
          (f"{name}.branch_pool", 768, 192, (1, 1), 1, (0, 0))]


def _block_e(name, cin):
  return [(f"{name}.branch1x1", cin, 320, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
          (f"{name}.branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
          (f"{name}.branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
          (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
          (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
          (f"{name}.branch_pool", cin, 192, (1, 1), 1, (0, 0))]


CONVS = {c[0]: c[1:] for c in (
    _STEM + _block_a("Mixed_5b", 192, 32) + _block_a("Mixed_5c", 256, 64)
    + _block_a("Mixed_5d", 288, 64)
    + [("Mixed_6a.branch3x3", 288, 384, (3, 3), 2, (0, 0)),
       ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1), 1, (0, 0)),
       ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
       ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))]
    + _block_c("Mixed_6b", 128) + _block_c("Mixed_6c", 160) + _block_c("Mixed_6d", 160)
    + _block_c("Mixed_6e", 192)
    + [("Mixed_7a.branch3x3_1", 768, 192, (1, 1), 1, (0, 0)),
       ("Mixed_7a.branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
       ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1), 1, (0, 0)),
       ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
       ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
       ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))]
    + _block_e("Mixed_7b", 1280) + _block_e("Mixed_7c", 2048))}


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{key: shape} of every array a weights file must hold (PyTorch names and layouts)."""
  shapes = {}
  for name, (c_in, c_out, (kh, kw), _, _) in CONVS.items():
    shapes[f"{name}.conv.weight"] = (c_out, c_in, kh, kw)
    for stat in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{stat}"] = (c_out,)
  return shapes


def load_inception_weights(path: str) -> dict:
  """The .npz at `path` -> {conv name: (kernel [kh, kw, C_in, C_out], scale [C_out],
  shift [C_out])}, batch norm folded into a per-channel scale and shift; one sentence naming
  the fix if the file is missing, unreadable or lacks an array."""
  arrays = read_converted(path, expected_shapes(), "Inception", CONVERT_HINT)
  folded = {}
  for name in CONVS:
    get = lambda stat: arrays[f"{name}.bn.{stat}"].astype(np.float64)
    scale = get("weight") / np.sqrt(get("running_var") + BN_EPS)
    folded[name] = (jnp.asarray(arrays[f"{name}.conv.weight"].transpose(2, 3, 1, 0), jnp.float32),
                    jnp.asarray(scale, jnp.float32),
                    jnp.asarray(get("bias") - get("running_mean") * scale, jnp.float32))
  return folded


def _conv(weights, name, x):
  """BasicConv2d: conv (no bias), batch norm (inference statistics), ReLU."""
  kernel, scale, shift = weights[name]
  _, _, _, stride, (ph, pw) = CONVS[name]
  y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((ph, ph), (pw, pw)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y * scale + shift)


def _max_pool(x, stride, padding=0):
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               pad)


def _avg_pool_excluding_padding(x):
  """3x3 average pool, stride 1, padding 1, the padding not counted (count_include_pad=False)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  count = jax.lax.reduce_window(jnp.ones_like(x[:1, :, :, :1]), 0.0, jax.lax.add, (1, 3, 3, 1),
                                (1, 1, 1, 1), pad)
  return total / count


def pool3_features(weights: dict, images: jax.Array) -> jax.Array:
  """images float [N, H, W, 3] in [0, 1] -> the 2048 pool3 features [N, 2048] of the FID
  Inception (pytorch-fid's InceptionV3 block 3, resized to 299 and scaled to [-1, 1])."""
  x = jax.image.resize(images, (images.shape[0], 299, 299, 3), "bilinear", antialias=False)
  x = 2.0 * x - 1.0
  conv = lambda name, h: _conv(weights, name, h)
  for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
    x = conv(name, x)
  x = conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", _max_pool(x, 2)))
  x = _max_pool(x, 2)
  for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):   # FIDInceptionA
    x = jnp.concatenate([
        conv(f"{m}.branch1x1", x),
        conv(f"{m}.branch5x5_2", conv(f"{m}.branch5x5_1", x)),
        conv(f"{m}.branch3x3dbl_3", conv(f"{m}.branch3x3dbl_2", conv(f"{m}.branch3x3dbl_1", x))),
        conv(f"{m}.branch_pool", _avg_pool_excluding_padding(x))], -1)
  x = jnp.concatenate([                             # InceptionB
      conv("Mixed_6a.branch3x3", x),
      conv("Mixed_6a.branch3x3dbl_3",
           conv("Mixed_6a.branch3x3dbl_2", conv("Mixed_6a.branch3x3dbl_1", x))),
      _max_pool(x, 2)], -1)
  for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):   # FIDInceptionC
    b7 = x
    for part in ("branch7x7_1", "branch7x7_2", "branch7x7_3"):
      b7 = conv(f"{m}.{part}", b7)
    b7d = x
    for part in ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4",
                 "branch7x7dbl_5"):
      b7d = conv(f"{m}.{part}", b7d)
    x = jnp.concatenate([conv(f"{m}.branch1x1", x), b7, b7d,
                         conv(f"{m}.branch_pool", _avg_pool_excluding_padding(x))], -1)
  b3 = conv("Mixed_7a.branch3x3_2", conv("Mixed_7a.branch3x3_1", x))   # InceptionD
  b7 = x
  for part in ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"):
    b7 = conv(f"Mixed_7a.{part}", b7)
  x = jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)
  for m, pool in (("Mixed_7b", _avg_pool_excluding_padding),   # FIDInceptionE_1
                  ("Mixed_7c", lambda h: _max_pool(h, 1, 1))):  # FIDInceptionE_2
    b3 = conv(f"{m}.branch3x3_1", x)
    b3d = conv(f"{m}.branch3x3dbl_2", conv(f"{m}.branch3x3dbl_1", x))
    x = jnp.concatenate([conv(f"{m}.branch1x1", x),
                         conv(f"{m}.branch3x3_2a", b3), conv(f"{m}.branch3x3_2b", b3),
                         conv(f"{m}.branch3x3dbl_3a", b3d), conv(f"{m}.branch3x3dbl_3b", b3d),
                         conv(f"{m}.branch_pool", pool(x))], -1)
  return x.mean((1, 2))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """FID's eq. 6 between two feature sets [N, D] and [M, D] (float64 statistics; the matrix
  square root by scipy, its imaginary round-off dropped, as pytorch-fid)."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a = np.cov(a.astype(np.float64), rowvar=False)
  cov_b = np.cov(b.astype(np.float64), rowvar=False)
  with warnings.catch_warnings():   # fewer frames than features: singular, as the tables say
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():   # pytorch-fid's remedy: a 1e-6 diagonal offset
      offset = np.eye(cov_a.shape[0]) * 1e-6
      root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
               - 2.0 * np.trace(np.real(root)))


def make_features(path: str, chunk: int = 16) -> Callable[[np.ndarray], np.ndarray]:
  """The FID Inception with the weights at `path` as fn(images float [M, H, W, 3] in [0, 1])
  -> pool3 features [M, 2048], jitted, `chunk` images at a time."""
  weights = load_inception_weights(path)
  features = jax.jit(lambda w, x: jax.lax.map(lambda im: pool3_features(w, im[None])[0], x,
                                              batch_size=chunk))
  return lambda images: np.asarray(features(weights, jnp.asarray(images, jnp.float32)))
