"""Shared test settings: CPU JAX, headless MuJoCo, repository root on sys.path, one
persistent compilation cache for the session, and seeded LPIPS and FID Inception weights
(`lpips_weights`, `inception_weights`).

Many tests start `experiments.train` (or train_offline) several times with one config (a run,
then its resume); the cache lets the later processes load the programs the first compiled
instead of compiling them again. It lives in a fresh folder per session (shared by the
pytest-xdist workers, which inherit the environment), so no test depends on a previous
session's programs.
"""

import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="wm_jax_test_jit_"))
# The tests are mostly XLA compiles of tiny programs: unoptimised CPU code compiles in about half
# the time and computes the same values (speed is measured by benchmarks/, never by a test).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def seeded_weights(shapes: dict, bias_std: float, seed: int = 0) -> dict:
  """Random weights of the given {key: shape} in the converter's layout: He-scaled convs,
  LPIPS's linear layers in [0, 1), batch-norm scales and variances in [0.5, 1.5), other
  vectors (biases, shifts, means) normal with std `bias_std`."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in shapes.items():
    if key.startswith("lin"):
      out[key] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    elif len(shape) == 4:
      out[key] = (rng.normal(0, 1, shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
    elif key.endswith("bn.weight") or key.endswith("running_var"):
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[key] = rng.normal(0, bias_std, shape).astype(np.float32)
  return out


def seeded_lpips_weights() -> dict:
  from wm_jax.core.perceptual import expected_shapes
  return seeded_weights(expected_shapes(), bias_std=0.01)


def seeded_inception_weights() -> dict:
  from wm_jax.core.fid import expected_shapes
  return seeded_weights(expected_shapes(), bias_std=0.1)


@pytest.fixture(scope="session")
def lpips_weights(tmp_path_factory) -> str:
  """Path of a .npz of `seeded_lpips_weights()`."""
  path = tmp_path_factory.mktemp("lpips") / "seeded.npz"
  np.savez(path, **seeded_lpips_weights())
  return str(path)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> str:
  """Path of a .npz of `seeded_inception_weights()`."""
  path = tmp_path_factory.mktemp("fid") / "seeded.npz"
  np.savez(path, **seeded_inception_weights())
  return str(path)


# The tests that take a minute or more on 2 cores (end-to-end runs in subprocesses) start first,
# so that the pytest-xdist workers finish together instead of one of them running a long test
# alone at the end of `make test`.
LONGEST = ("test_wm_quality.py::test_benchmark_writes_the_table",
           "test_offline.py::test_train_offline_reports_resumes",
           "test_world_models.py::test_three_phases_end_to_end",
           "test_iris.py::test_staged_schedule_and_acting",
           "test_train.py::test_vmapped_seeds_equal_single_seed_runs",
           "test_multiprocess.py::test_two_process_update_equals_one_device_update")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: not any(name in item.nodeid for name in LONGEST))
