"""Is a trained world model a usable training env for its agent? A diagnostic for runs on
sprite/reach (benchmarks.sprite_reach, or experiments.train on a `debug` variant), as JSON.

1. Controllability: the imagined reward per step, from the same real starts, under uniformly
   random actions and under the scripted goal walker (`sprite.walk_to_goal`, which reads the
   agent and goal cells from each imagined frame), beside the same two policies in the real
   env from the same states. A world model an agent can learn in gives the walker much more
   reward than random actions, as the real env does (about 0.36 against 0.025 per step).
   Beside it, the fraction of imagined frames after a rollout's first reward that still show a
   goal (`imagined_goal_kept`; the real env: 1): a model that erases the reached goal instead
   of respawning it shows its reward model frames it never saw, which can reward every step.
2. With `--ac_updates=N` (IRIS and DIAMOND runs, whose CNN-LSTM actor-critic reads frames): a
   fresh actor-critic trained for N updates in the frozen world model on replay-like batches of
   random-policy sequences, its real-env return every N/8 updates. If it learns here while the
   online run's agent did not, the world model is not what limits the run: the actor-critic's
   budget is (starts per update `--ac_starts`, learning rate `--ac_lr`).

  python -m benchmarks.imagination_probe --run=RUN_DIR [--ac_updates=800 --ac_starts=32 --ac_lr=1e-3]
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from wm_jax import trained
from wm_jax.agents import diamond, iris
from wm_jax.envs import sprite
from wm_jax.errors import RunConfigError, UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "run directory of a sprite/reach run (its latest checkpoint)")
flags.DEFINE_integer("starts", 64, "real starts of the controllability rollouts")
flags.DEFINE_integer("horizon", 15, "imagined steps per rollout")
flags.DEFINE_integer("ac_updates", 0, "actor-critic updates in the frozen world model (0: skip)")
flags.DEFINE_integer("ac_starts", 32, "imagination starts (replay sequences) per update")
flags.DEFINE_float("ac_lr", 1e-3, "the actor-critic's learning rate")
flags.DEFINE_integer("eval_episodes", 64, "real-env episodes per actor-critic evaluation")
flags.DEFINE_integer("seed", 0, "seed")

LEARNERS = {"iris": iris.IrisLearner, "diamond": diamond.DiamondLearner}
REPLAY_KEYS = ("image", "reward", "is_first", "is_last", "is_terminal")


def real_sequences(key: jax.Array, batch: int, length: int, protocol: sprite.SpriteProtocol
                   ) -> tuple[dict, sprite.SpriteState]:
  """The first `length` steps of `batch` sprite episodes (the run's `protocol`) under random
  actions, as a replay batch [B, T] (action[:, t] led to frame t; action[:, 0] = 0), and the env
  states [B] at their last frames."""
  def episode(key):
    k_reset, k_steps = jax.random.split(key)
    state, first = sprite.reset(k_reset, protocol)

    def step(state, k):
      k_action, k_env = jax.random.split(k)
      action = jax.random.randint(k_action, (), 0, 5)
      state, obs = sprite.step(state, action, k_env, protocol)
      return state, ({k: obs[k] for k in REPLAY_KEYS}, action)
    state, (steps, actions) = jax.lax.scan(step, state, jax.random.split(k_steps, length - 1))
    prepend = lambda x0, xs: jnp.concatenate([x0[None], xs])
    seq = {k: prepend(first[k], steps[k]) for k in REPLAY_KEYS}
    seq["action"] = prepend(jnp.zeros((), jnp.int32), actions)
    return seq, state
  return jax.vmap(episode)(jax.random.split(key, batch))


def random_actions(frame: jax.Array, key: jax.Array) -> jax.Array:
  """Frames [B, ...] -> uniformly random actions int32 [B]."""
  return jax.random.randint(key, frame.shape[:1], 0, 5)


def policies(protocol: sprite.SpriteProtocol) -> dict:
  """{name: policy(frame [B, h, w, 3], key) -> actions [B]}: random actions and the goal walker."""
  goal_walker = lambda frame, key: sprite.walk_to_goal(frame, protocol)
  return {"random": random_actions, "goal_walker": goal_walker}


def imagined_reward(world_model, params, context: dict, policy, key, horizon: int,
                    protocol: sprite.SpriteProtocol) -> tuple[jax.Array, jax.Array]:
  """(mean reward per step, goal kept) of `policy(frame [B, h, w, 3], key) -> actions [B]` over
  `horizon` steps of the world model reset on `context` ([B, C] real frames and actions). Goal
  kept: the fraction of imagined frames after a rollout's first reward that still show a goal
  (`sprite.goal_visible`; NaN if no rollout was rewarded, None in the JSON). The real env
  always draws one, a reached goal respawning elsewhere; a world model that erases it shows
  its reward model frames it never saw."""
  k_reset, k_steps = jax.random.split(key)
  sim = world_model.reset_from(params, context, k_reset)
  frame = context["image"][:, -1].astype(jnp.float32) / 255.0

  def step(carry, k):
    sim, frame = carry
    k_act, k_env = jax.random.split(k)
    sim, obs, reward, _ = world_model.step(params, sim, policy(frame, k_act), k_env)
    return (sim, obs["image"]), (reward, sprite.goal_visible(obs["image"], protocol))
  _, (rewards, visible) = jax.lax.scan(step, (sim, frame), jax.random.split(k_steps, horizon))
  rewarded_before = jnp.cumsum(rewards > 0, 0) - (rewards > 0) > 0          # [horizon, B]
  goal_kept = (visible & rewarded_before).sum() / rewarded_before.sum()
  return rewards.mean(), goal_kept


def real_reward(states: sprite.SpriteState, frame: jax.Array, policy, key, horizon: int,
                protocol: sprite.SpriteProtocol):
  """The same as `imagined_reward` in the real env from its states [B] and frames [B, h, w, 3]."""
  def step(carry, k):
    states, frame = carry
    k_act, k_env = jax.random.split(k)
    actions = policy(frame, k_act)
    env_step = lambda state, action, k: sprite.step(state, action, k, protocol)
    states, obs = jax.vmap(env_step)(states, actions, jax.random.split(k_env, actions.shape[0]))
    return (states, obs["image"]), obs["reward"]
  _, rewards = jax.lax.scan(step, (states, frame), jax.random.split(key, horizon))
  return rewards.mean()


def controllability(run: str, spec, key: jax.Array, protocol: sprite.SpriteProtocol
                    ) -> tuple[dict, dict]:
  """({policy: {'imagined': reward per step, 'real': reward per step, 'imagined_goal_kept'}}
  for `policies`, the checkpoint's counters)."""
  _, world_model, wm_state, counters = trained.load_world_model(run, spec)
  k_data, k_roll = jax.random.split(key)
  context, states = real_sequences(k_data, FLAGS.starts, max(world_model.context_length, 1),
                                   protocol)
  context = {k: context[k] for k in ("image", "action", "is_first")}
  out = {}
  for name, policy in policies(protocol).items():
    imagined, goal_kept = jax.jit(lambda p, k, policy=policy: imagined_reward(
        world_model, p, context, policy, k, FLAGS.horizon, protocol))(wm_state["params"], k_roll)
    real = jax.jit(lambda k, policy=policy: real_reward(
        states, context["image"][:, -1], policy, k, FLAGS.horizon, protocol))(k_roll)
    goal_kept = None if jnp.isnan(goal_kept) else round(float(goal_kept), 3)
    out[name] = {"imagined": round(float(imagined), 4), "real": round(float(real), 4),
                 "imagined_goal_kept": goal_kept}
  return out, counters


def real_return(agent, agent_state: dict, key: jax.Array, episodes: int,
                protocol: sprite.SpriteProtocol) -> jax.Array:
  """Mean return of the agent's evaluation policy over `episodes` real episodes."""
  k_reset, k_steps = jax.random.split(key)
  states, obs = jax.vmap(lambda k: sprite.reset(k, protocol))(jax.random.split(k_reset, episodes))

  def step(carry, k):
    states, obs, lstm = carry
    k_act, k_env = jax.random.split(k)
    actions, lstm = agent.act(agent_state, lstm, {"image": obs["image"],
                                                  "is_first": obs["is_first"]}, k_act, False)
    env_step = lambda state, action, k: sprite.step(state, action, k, protocol)
    states, obs = jax.vmap(env_step)(states, actions, jax.random.split(k_env, episodes))
    return (states, obs, lstm), obs["reward"]
  carry = (states, obs, agent.initial_carry(episodes))
  _, rewards = jax.lax.scan(step, carry, jax.random.split(k_steps, protocol.episode_length))
  return rewards.sum(0).mean()


def actor_critic_in_frozen_model(run: str, spec, key: jax.Array,
                                 protocol: sprite.SpriteProtocol) -> dict:
  """A fresh actor-critic trained FLAGS.ac_updates times in the run's frozen world model ->
  {'eval_curve': [{'updates', 'mean_return'}], 'seconds_per_update'}."""
  config, agent, agent_state, _ = trained.load_agent(run, spec)
  if config.method not in LEARNERS:
    raise RunConfigError(f"--ac_updates trains the CNN-LSTM actor-critic of IRIS and DIAMOND; "
                         f"{run} is a {config.method} run: drop --ac_updates.")
  config.agent.actor_critic.opt.lr = FLAGS.ac_lr
  learner = LEARNERS[config.method](config.agent, spec)
  k_init, k_train, k_eval = jax.random.split(key, 3)
  params = {**agent_state["params"], "actor_critic": learner.ac.init(
      k_init, tuple(spec.obs["image"].shape))}
  opt = {"actor_critic": learner.opts["actor_critic"].init(params["actor_critic"])}

  @jax.jit
  def update(params, opt, key):
    k_data, k_update = jax.random.split(key)
    batch, _ = real_sequences(k_data, FLAGS.ac_starts, config.run.batch_length, protocol)
    return learner.train_actor_critic(params, opt, batch, k_update)[:2]
  evaluate = jax.jit(lambda params, k: real_return(agent, {**agent_state, "params": params}, k,
                                                   FLAGS.eval_episodes, protocol))
  every = max(FLAGS.ac_updates // 8, 1)
  curve, seconds = [], 0.0
  for i, k in enumerate(jax.random.split(k_train, FLAGS.ac_updates + 1)):
    if i % every == 0 or i == FLAGS.ac_updates:
      curve.append({"updates": i, "mean_return": round(float(evaluate(params, k_eval)), 2)})
      print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
    if i < FLAGS.ac_updates:
      t0 = time.time()
      params, opt = jax.block_until_ready(update(params, opt, k))
      seconds += time.time() - t0 if i else 0.0    # the first update compiles
  return {"eval_curve": curve,
          "seconds_per_update": round(seconds / max(FLAGS.ac_updates - 1, 1), 3),
          "learning_rate": FLAGS.ac_lr, "starts_per_update": FLAGS.ac_starts,
          "horizon": config.agent.actor_critic.horizon}


def main(_):
  try:
    probe()
  except UserError as e:
    sys.exit(f"error: {e}")


def probe():
  if not FLAGS.run:
    raise RunConfigError("--run is required: the run directory of a sprite/reach training run.")
  config = trained.run_config(FLAGS.run)
  if (config.env.suite, config.env.task) != ("sprite", "reach"):
    raise RunConfigError(f"{FLAGS.run} trained on {config.env.suite}/{config.env.task}; this "
                         f"probe reads sprite/reach frames: pass a run of benchmarks.sprite_reach.")
  protocol = sprite.SpriteProtocol(**dict(config.env.protocol))   # the run's frame size
  spec = sprite.SpriteEnv(1, FLAGS.seed, protocol).spec
  key = jax.random.PRNGKey(FLAGS.seed)
  k_control, k_ac = jax.random.split(key)
  reward_per_step, counters = controllability(FLAGS.run, spec, k_control, protocol)
  results = {"run": FLAGS.run, "method": config.method,
             "agent_step": counters["agent_step"], "updates": counters["updates"],
             "reward_per_step": reward_per_step, "starts": FLAGS.starts, "horizon": FLAGS.horizon}
  if FLAGS.ac_updates:
    results["actor_critic_in_frozen_model"] = actor_critic_in_frozen_model(FLAGS.run, spec, k_ac,
                                                                           protocol)
  results["cpu_count"] = os.cpu_count()
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
