"""wm_jax: world models for model-based RL as pure JAX functions (see README.md)."""

from wm_jax import xla_cpu

__version__ = "0.1.0"

xla_cpu.apply_cpu_flags()
