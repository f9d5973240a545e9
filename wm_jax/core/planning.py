"""Planning in a learned model: the cross-entropy method (CEM) over action sequences.

PlaNet (Hafner et al. 2019, arXiv:1811.04551, sec. 3 "Planning algorithm" and Algorithm 2)
plans with CEM (Rubinstein 1997): a diagonal Gaussian belief over action sequences [H, A],
initialised to Normal(0, I), is refit `iterations` times to the `top_k` best of `candidates`
sampled sequences; the agent executes the first action of the final mean. PlaNet's values:
horizon 12, 1000 candidates, top 100, 10 iterations. Written for any world model: the
objective scores a batch of sequences, e.g. a sum of predicted rewards (wm_jax/agents/dreamer.py
with behavior='cem').
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def cem(objective: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array, horizon: int,
        action_dim: int, *, candidates: int, top_k: int, iterations: int, low: float = -1.0,
        high: float = 1.0) -> jax.Array:
  """The CEM plan: the belief's mean [H, A] after `iterations` refits.

  objective(sequences [C, H, A], key) -> scores [C]: higher is better. Samples are clipped to
  [low, high] before they are scored, as the env would clip them.
  """
  def refit(belief, key):
    mean, std = belief
    sample_key, score_key = jax.random.split(key)
    noise = jax.random.normal(sample_key, (candidates, horizon, action_dim))
    sequences = jnp.clip(mean + std * noise, low, high)
    _, best = jax.lax.top_k(objective(sequences, score_key), top_k)
    elite = sequences[best]
    return (elite.mean(0), elite.std(0)), None

  start = (jnp.zeros((horizon, action_dim)), jnp.ones((horizon, action_dim)))
  (mean, _), _ = jax.lax.scan(refit, start, jax.random.split(key, iterations))
  return mean
