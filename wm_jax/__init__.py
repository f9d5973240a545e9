"""wm_jax: world models for model-based RL as pure JAX functions (see README.md)."""

__version__ = "0.1.0"
