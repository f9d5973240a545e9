"""Agents made of separately optimised components (IRIS: tokenizer, world model, actor-critic;
DIAMOND: denoiser, reward/end model, actor-critic): one optimiser step per component, each
switched on from its own update count, `schedule.<component>_start`, and then run on every
`schedule.<component>_every`-th update (1 where the schedule has no such field).

Which components train is a *phase* known on the host (a tuple of bools, `schedule_phase`), and
the update is compiled once per phase (the Agent's `schedule`, wm_jax/agents/base.py) instead
of switching inside one jitted update with `lax.cond`: XLA:CPU runs the convolutions inside a
conditional's branches about 30x slower (measured, jaxlib 0.10.2: a DIAMOND denoiser step at
batch 16 took 0.59 s as is and 18 s as a `lax.cond` branch)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from wm_jax.agents.base import WorldModel, jit_init
from wm_jax.errors import RunConfigError


def train_component(opts: dict, name: str, loss_fn: Callable, params: dict, opt: dict):
  """One step of optimiser opts[name] on loss_fn(params[name]) -> (loss, metrics) -> (params, opt, metrics + '{name}_grad_norm'); the other components are unchanged."""
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[name])
  return apply_gradient(opts, name, grads, metrics, params, opt)


def apply_gradient(opts: dict, name: str, grads, metrics: dict, params: dict, opt: dict):
  """The step of optimiser opts[name] on the gradient `grads` of params[name] -> (params, opt, metrics + '{name}_grad_norm')."""
  updates, new_opt = opts[name].update(grads, opt[name], params[name])
  metrics = {**metrics, f"{name}_grad_norm": optax.tree.norm(grads)}
  return ({**params, name: optax.apply_updates(params[name], updates)},
          {**opt, name: new_opt}, metrics)


def sliced_value_and_grad(loss_fn: Callable, params, data: jax.Array, slices: int):
  """((loss, metrics), grads) of loss_fn(params, data [N, ...]) -> (loss [], metrics), as the means over `slices` equal slices of data along N, one slice per step of a `lax.scan`, so that one slice's activations are alive at a time. For a loss that is a mean over N this is the whole batch's loss and gradient up to float summation order; a metric that is not such a mean (a count) becomes its mean over the slices. (XLA:CPU keeps all activations of a straight-line backward pass even under jax.checkpoint, jax issue #19822; a loop does not.)"""
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  if slices == 1:
    return value_and_grad(params, data)
  sliced = data.reshape((slices, data.shape[0] // slices) + data.shape[1:])

  def add_slice(total, chunk):
    return jax.tree.map(jnp.add, total, value_and_grad(params, chunk)), None
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       jax.eval_shape(value_and_grad, params, sliced[0]))
  total, _ = jax.lax.scan(add_slice, zeros, sliced)
  return jax.tree.map(lambda x: x / slices, total)


def schedule_phase(schedule, components: tuple[str, ...]) -> Callable[[int], tuple]:
  """updates -> phase: for each component, whether it trains at that update count
  (updates >= schedule.<component>_start, then every schedule.<component>_every-th update)."""
  starts = tuple(schedule[f"{name}_start"] for name in components)
  every = tuple(schedule.get(f"{name}_every", 1) for name in components)
  return lambda updates: tuple(bool(updates >= start and (updates - start) % k == 0)
                               for start, k in zip(starts, every))


def check_schedule(schedule) -> None:
  """One sentence naming the fix unless every `*_start` is >= 0 and every `*_every` >= 1."""
  if min(v for k, v in schedule.items() if k.endswith("_start")) < 0:
    raise RunConfigError("agent.schedule.*_start are update counts and must be >= 0.")
  if min([v for k, v in schedule.items() if k.endswith("_every")] or [1]) < 1:
    raise RunConfigError("agent.schedule.*_every count updates between a component's steps "
                         "and must be >= 1.")


def staged(active: bool, train_fn: Callable, params: dict, opt: dict, *args):
  """train_fn(params, opt, *args) -> (params, opt, metrics) if `active` (a Python bool: the
  phase is static), else params and opt unchanged and no metrics: the loop averages each metric
  over the updates that computed it (wm_jax.logger.mean_metrics)."""
  if active:
    return train_fn(params, opt, *args)
  return params, opt, {}


def check_world_model_batch(agent, run=None) -> None:
  """One sentence unless agent.world_model_batch_size is None or 1 .. run.batch_size."""
  n = agent.world_model_batch_size
  if n is not None and n < 1:
    raise RunConfigError(f"agent.world_model_batch_size={n} must be None (the whole replay "
                         f"batch) or at least 1.")
  if n is not None and run is not None and n > run.batch_size:
    raise RunConfigError(f"agent.world_model_batch_size={n} exceeds run.batch_size="
                         f"{run.batch_size}: the world model trains on that many of the replay "
                         f"batch's sequences, so lower it or raise run.batch_size.")


class ComponentLearner:
  """Base of the IRIS and DIAMOND learners: per-component optimisers `opts`, the world-model
  components `world_model_parts` that the actor-critic imagines through (read without gradient),
  and the subclass's `cfg` (its agent config) and `actor_critic_loss(ac_params, model_params,
  batch, key) -> (loss, metrics)`."""
  opts: dict
  world_model_parts: tuple = ()

  def _train(self, name: str, loss_fn: Callable, params: dict, opt: dict):
    return train_component(self.opts, name, loss_fn, params, opt)

  def world_model_batch(self, batch: dict) -> dict:
    """Replay batch [B, T, ...] -> its first `world_model_batch_size` sequences (all if None):
    the world-model components may train on fewer sequences than the actor-critic imagines
    from (IRIS and DIAMOND sample one batch per component)."""
    n = self.cfg.world_model_batch_size
    return batch if n is None else jax.tree.map(lambda x: x[:n], batch)

  def train_actor_critic(self, params, opt, batch, key):
    """Actor-critic step in the imagination of the current world model, from each sequence of
    the replay batch -> (params, opt, metrics)."""
    model_params = {k: params[k] for k in self.world_model_parts}
    loss = lambda p: self.actor_critic_loss(p, model_params, batch, key)
    return self._train("actor_critic", loss, params, opt)


def component_world_model(learner: ComponentLearner, schedule, model_init: Callable,
                          context_length: int) -> WorldModel:
  """The world-model components of `learner` (no actor-critic) as a `WorldModel` for offline
  training: an update runs `learner.train_world_model(phase, params, opt, batch, key)`, each
  component from its `schedule.<component>_start` update on (a start beyond the run's updates
  leaves it untrained); the env interface is `learner.model`'s."""
  parts = learner.world_model_parts

  def init(key):
    params = model_init(key)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt": {name: learner.opts[name].init(params[name]) for name in parts}}

  def update(state, batch, key, phase):
    params, opt, metrics = learner.train_world_model(phase, state["params"], state["opt"],
                                                     batch, key)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
    return {"step": state["step"] + 1, "params": params, "opt": opt}, metrics

  return WorldModel(init=jit_init(init), update=update, schedule=schedule_phase(schedule, parts),
                    reset_from=learner.model.reset_from, step=learner.model.step,
                    context_length=context_length)
