"""wm_jax/jit_cache.py: the entry points' persistent compilation cache."""

import os
import subprocess
import sys

from wm_jax import jit_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILE_ONCE = """
import jax, jax.numpy as jnp
from wm_jax import jit_cache
print(jit_cache.enable(min_compile_s=0.0))
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8))).block_until_ready()
"""


def run_child(env: dict) -> str:
  env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
  out = subprocess.run([sys.executable, "-c", COMPILE_ONCE], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()[-1]


def test_enable_writes_compiled_programs_to_the_chosen_folder(tmp_path):
  folder = str(tmp_path / "jit")
  assert run_child({"JAX_COMPILATION_CACHE_DIR": None,
                    "WM_JAX_COMPILATION_CACHE": folder}) == folder
  assert os.listdir(folder), "the compiled program was not stored"


def test_empty_setting_turns_it_off_and_jaxs_own_setting_wins(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("WM_JAX_COMPILATION_CACHE", "")
  assert jit_cache.enable() is None
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/else")
  monkeypatch.setenv("WM_JAX_COMPILATION_CACHE", "/not/this")
  assert jit_cache.enable() == "/somewhere/else"
