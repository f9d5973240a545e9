"""Synthetic inputs shared by the speed benchmarks: an Atari-like or CartPole-like env spec and
a fixed replay batch in the format of wm_jax/agents/base.py (speed does not depend on content)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec


def spec_for(obs: str) -> EnvSpec:
  """Atari-like (64x64 RGB, 6 discrete actions) or CartPole-like (4-d vector, 2 actions)."""
  if obs == "image":
    return EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                   act=ActionSpec(True, num_actions=6))
  return EnvSpec(obs={"vector": ArraySpec((4,), "float32")}, act=ActionSpec(True, num_actions=2))


def fake_batch(spec: EnvSpec, B: int, T: int) -> dict:
  """A fixed random replay batch [B, T] for `spec` (random frames or vectors, one episode start per row)."""
  rng = np.random.default_rng(0)
  batch = {"action": rng.integers(0, spec.act.num_actions, (B, T)).astype(np.int32),
           "reward": rng.normal(size=(B, T)).astype(np.float32),
           "is_first": np.zeros((B, T), bool), "is_last": np.zeros((B, T), bool),
           "is_terminal": np.zeros((B, T), bool)}
  if "image" in spec.obs:
    batch["image"] = rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8)
  else:
    batch["vector"] = rng.normal(size=(B, T, 4)).astype(np.float32)
  batch["is_first"][:, 0] = True
  return jax.tree.map(jnp.asarray, batch)
