"""Does a Dreamer run's critic know the value of its own policy? Compares the critic's value of
the states the policy visits in evaluation with the discounted return that actually followed.

  python -m benchmarks.value_calibration --workdir=RUN [--steps=500] [--envs=4]

Restores the run's latest checkpoint, runs its evaluation policy for `--steps` agent steps on
fresh eval envs, and prints JSON: at a few times t, the mean critic value v(s_t) and the mean
real discounted return-to-go G_t = sum_k gamma^k r_{t+k}, truncated at the last step (so G_t is
a lower bound of the value when episodes go on). A critic far below G_t makes the actor's
objective myopic: it then sees little beyond the imagination horizon.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from wm_jax.agents import make_agent
from wm_jax.agents.actor_critic import make_actor_critic
from wm_jax.agents.dreamer import resolve_agent_config
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs import make_env
from wm_jax.models.rssm import feat_of, make_world_model
from wm_jax.replay import make_replay

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "run directory of a Dreamer run with a checkpoint")
flags.DEFINE_integer("steps", 500, "agent steps of evaluation to compare over")
flags.DEFINE_integer("envs", 4, "eval envs")
flags.DEFINE_integer("seed", 123, "seed of the eval envs and the policy")
flags.mark_flag_as_required("workdir")


def restore(workdir: str, cfg, spec):
  """The agent state of the run's latest checkpoint."""
  agent = make_agent(cfg.method, cfg.agent, spec)
  replay = make_replay(spec, cfg.env.num_envs, cfg.run.replay_capacity, cfg.run.batch_size,
                       cfg.run.batch_length)
  template = {"agent": agent.init(jax.random.key(0)), "key": jax.random.key(0),
              "replay": replay.init()}
  restored = Checkpointer(workdir).restore(template)
  if restored is None:
    raise SystemExit(f"error: {workdir} has no checkpoint yet; train it first.")
  return agent, restored[0]["agent"], restored[1]["agent_step"]


def rollout(agent, state, env, steps: int, seed: int):
  """(feats [N, steps, F], rewards [N, steps]) of the evaluation policy; rewards[:, t] follows
  the action taken in the state of feats[:, t]."""
  act = jax.jit(agent.act, static_argnums=4)
  keys = list(env.spec.obs) + ["reward", "is_first", "is_last", "is_terminal"]
  step, carry, key = env.reset(), agent.initial_carry(env.num_envs), jax.random.key(seed)
  feats, rewards = [], []
  for _ in range(steps):
    key, act_key = jax.random.split(key)
    action, carry = act(state, carry, {k: step[k] for k in keys}, act_key, False)
    feats.append(np.asarray(feat_of(carry["state"])))
    step = env.step(np.asarray(action))
    rewards.append(step["reward"])
  return np.stack(feats, 1), np.stack(rewards, 1)


def discounted_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
  """[N, T] -> [N, T] G_t = sum_{k >= t} gamma^(k - t) r_k, truncated at T."""
  out, acc = np.zeros_like(rewards), np.zeros(rewards.shape[0])
  for t in reversed(range(rewards.shape[1])):
    acc = rewards[:, t] + gamma * acc
    out[:, t] = acc
  return out


def main(_):
  logging.set_verbosity(logging.WARNING)   # orbax logs the restore at INFO
  with open(os.path.join(FLAGS.workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  env = make_env(cfg.env.suite, cfg.env.task, FLAGS.envs, FLAGS.seed, eval_mode=True,
                 **cfg.env.protocol)
  agent, state, agent_step = restore(FLAGS.workdir, cfg, env.spec)
  resolved = resolve_agent_config(cfg.agent)
  ac = make_actor_critic(make_world_model(resolved, env.spec).cfg, env.spec.act)
  feats, rewards = rollout(agent, state, env, FLAGS.steps, FLAGS.seed)
  env.close()
  values = np.asarray(ac.value(state["ac"]["critic"], jnp.asarray(feats)))
  to_go = discounted_to_go(rewards, resolved.gamma)
  times = [t for t in (0, FLAGS.steps // 10, FLAGS.steps // 5, FLAGS.steps // 2)]
  print(json.dumps({
      "workdir": FLAGS.workdir, "task": cfg.env.task, "agent_step": agent_step,
      "gamma": resolved.gamma, "steps": FLAGS.steps, "envs": FLAGS.envs,
      "mean_reward_per_step": round(float(rewards.mean()), 4),
      "returns": [round(float(r), 1) for r in rewards.sum(1)],
      "at": [{"t": t, "critic_value": round(float(values[:, t].mean()), 3),
              "real_discounted_return_to_go": round(float(to_go[:, t].mean()), 3)}
             for t in times]}, indent=1))


if __name__ == "__main__":
  app.run(main)
