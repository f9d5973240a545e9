"""Shared test settings: CPU JAX, headless MuJoCo, repository root on sys.path, and one
persistent compilation cache for the session.

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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
