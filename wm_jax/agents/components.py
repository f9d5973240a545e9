"""Agents made of separately optimised components (IRIS: tokenizer, world model, actor-critic;
DIAMOND: denoiser, reward/end model, actor-critic): one optimiser step per component, each
switched on from its own update count inside one jitted update."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def train_component(opts: dict, name: str, loss_fn: Callable, params: dict, opt: dict):
  """One step of optimiser opts[name] on loss_fn(params[name]) -> (loss, metrics) -> (params, opt, metrics + '{name}_grad_norm'); the other components are unchanged."""
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[name])
  updates, new_opt = opts[name].update(grads, opt[name], params[name])
  metrics[f"{name}_grad_norm"] = optax.tree.norm(grads)
  return ({**params, name: optax.apply_updates(params[name], updates)},
          {**opt, name: new_opt}, metrics)


def staged(active: jax.Array, train_fn: Callable, params: dict, opt: dict, *args):
  """train_fn(params, opt, *args) -> (params, opt, metrics) where `active` (bool []), else params and opt unchanged with zero metrics (one `lax.cond`)."""
  def skip(params, opt, *args):
    _, _, shapes = jax.eval_shape(train_fn, params, opt, *args)
    return params, opt, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.lax.cond(active, train_fn, skip, params, opt, *args)


class ComponentLearner:
  """Base of the IRIS and DIAMOND learners: per-component optimisers `opts`, the world-model
  components `world_model_parts` that the actor-critic imagines through (read without gradient),
  and the subclass's `actor_critic_loss(ac_params, model_params, batch, key) -> (loss, metrics)`."""
  opts: dict
  world_model_parts: tuple = ()

  def _train(self, name: str, loss_fn: Callable, params: dict, opt: dict):
    return train_component(self.opts, name, loss_fn, params, opt)

  def train_actor_critic(self, params, opt, batch, key):
    """Actor-critic step in the imagination of the current world model -> (params, opt, metrics)."""
    model_params = {k: params[k] for k in self.world_model_parts}
    loss = lambda p: self.actor_critic_loss(p, model_params, batch, key)
    return self._train("actor_critic", loss, params, opt)
