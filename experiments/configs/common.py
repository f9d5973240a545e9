"""Shared parts of every method's config: the env, the run schedule and the benchmark presets.

A method config (`experiments/configs/<method>.py`) calls `base_config(method, variant)` and
fills `config.agent`. Fields (all overridable with `--config.<path>=<value>`):

  method, variant, seed
  env.suite        'atari' | 'dmc' | 'dmc_vision' | 'classic' | 'vizdoom' | 'sprite'
  env.task         game / task name ('Pong', 'cheetah_run', 'CartPole-v1', 'HealthGathering',
                   'reach')
  env.num_envs     training envs stepped together; env.eval_envs for evaluation
  env.protocol     suite protocol overrides handed to wm_jax.envs.make_env (the protocol card)
  run.steps        total agent steps (env steps summed over envs; frames = steps x frame skip)
  run.train_ratio  replayed steps per env step (DreamerV3's definition); 0 = no learning
  run.batch_size, run.batch_length, run.replay_capacity (steps), run.learning_starts
  run.eval_every, run.eval_episodes, run.log_every, run.checkpoint_every (agent steps)
  run.metrics_every  updates whose metrics are fetched to the host together (one sync)
  run.num_seeds    seeds seed, seed+1, ... trained together in one process (vmapped; each
                   in workdir/seed_<seed>/, equal to a single-seed run of that seed)
  run.collect_on_device  for pure-JAX envs (sprite): run the act -> env step -> replay add
                   iterations between updates in one jitted loop (same results as the host
                   loop); ignored by host envs (envpool, dm_control)
"""

from __future__ import annotations

import difflib

import ml_collections

from wm_jax.errors import UnknownNameError

# Atari-100k protocol (the README's card): 64x64 RGB, frame skip 4 with max-pool, no sticky
# actions, up to 30 no-ops, no fire reset, minimal actions, 108k-frame cap, raw rewards.
ATARI_PROTOCOL = dict(image_size=64, frame_skip=4, sticky_prob=0.0, noop_max=30,
                      max_episode_frames=108_000, life_loss_terminal=False)
DMC_PROTOCOL = dict(action_repeat=2)
DMC_VISION_PROTOCOL = dict(action_repeat=2, image_size=64)
VIZDOOM_PROTOCOL = dict(image_size=64, frame_skip=4)

# Benchmark presets: env and run schedule per variant. 100k agent steps = 400k frames on
# Atari; 1M frames = 500k agent steps on DMC with action repeat 2.
PRESETS = {
    "atari100k": dict(
        env=dict(suite="atari", task="Pong", num_envs=1, eval_envs=8,
                 protocol=ATARI_PROTOCOL),
        run=dict(steps=100_000, replay_capacity=100_000, eval_every=25_000,
                 eval_episodes=100, log_every=1_000, checkpoint_every=10_000)),
    "dmc_proprio": dict(
        env=dict(suite="dmc", task="cheetah_run", num_envs=4, eval_envs=4,
                 protocol=DMC_PROTOCOL),
        run=dict(steps=500_000, replay_capacity=1_000_000, eval_every=50_000,
                 eval_episodes=10, log_every=5_000, checkpoint_every=50_000)),
    "dmc_vision": dict(
        env=dict(suite="dmc_vision", task="cheetah_run", num_envs=4, eval_envs=4,
                 protocol=DMC_VISION_PROTOCOL),
        run=dict(steps=500_000, replay_capacity=1_000_000, eval_every=50_000,
                 eval_episodes=10, log_every=5_000, checkpoint_every=50_000)),
    "vizdoom": dict(
        env=dict(suite="vizdoom", task="HealthGathering", num_envs=1, eval_envs=8,
                 protocol=VIZDOOM_PROTOCOL),
        run=dict(steps=100_000, replay_capacity=100_000, eval_every=25_000,
                 eval_episodes=16, log_every=1_000, checkpoint_every=10_000)),
    "debug": dict(
        env=dict(suite="classic", task="CartPole-v1", num_envs=2, eval_envs=2, protocol={}),
        run=dict(steps=2_000, replay_capacity=10_000, eval_every=1_000, eval_episodes=4,
                 log_every=200, checkpoint_every=500)),
}

def check_variant(variant: str, known) -> str:
  """Returns the variant, or raises one sentence listing the valid ones."""
  if variant in known:
    return variant
  close = difflib.get_close_matches(variant or "", list(known), n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  raise UnknownNameError(f"Unknown config variant {variant!r}{hint}: use one of "
                   f"{', '.join(known)}, e.g. --config=experiments/configs/random.py:debug.")


def base_config(method: str, variant: str) -> ml_collections.ConfigDict:
  """Env + run fields of `variant`'s preset, with an empty `agent` for the method to fill."""
  preset = PRESETS[check_variant(variant, PRESETS)]
  config = ml_collections.ConfigDict()
  config.method = method
  config.variant = variant
  config.seed = 0
  config.env = ml_collections.ConfigDict(preset["env"])
  config.run = ml_collections.ConfigDict(dict(
      train_ratio=0.0, batch_size=16, batch_length=64, learning_starts=0,
      keep_checkpoints=2, num_seeds=1, collect_on_device=True,
      metrics_every=10))   # updates per metrics fetch (one host sync; 2023 code: 10)
  config.run.update(preset["run"])
  config.agent = ml_collections.ConfigDict()
  return config


def use_sprite_debug_run(config: ml_collections.ConfigDict) -> None:
  """The CPU debug run of the pixel world models (IRIS, DIAMOND), in place: the 64x64 sprite env
  (wm_jax/envs/sprite.py), replay batches of 32 x 6 (the world model trains on 4 of them), one
  update every 2 env iterations, and their shared CNN-LSTM actor-critic
  (wm_jax/agents/cnn_lstm.py) at a small size, on every 8th update."""
  # Imagination horizon 15, not a shorter CPU-saving one: this actor-critic trained in the TRUE
  # sprite dynamics (a perfect world model, 32 imagined episodes per update) stayed at the
  # random policy's return (1.0-1.4 per 50 steps) for 3000 updates at horizon 4, and reached
  # 10.2 in 750 updates at horizon 15.
  config.agent.actor_critic.update(dict(channels=(8, 8, 16, 16), lstm=32, horizon=15))
  config.env.suite, config.env.task = "sprite", "reach"
  config.env.protocol = {}
  run = config.run
  # Replay batches of 32 x 6: the world model trains on the first 4 sequences of each, on every
  # update; the actor-critic imagines from all 32 on every 8th update. With 4 starts per update
  # (the whole batch, on every update) IRIS's actor-critic stayed at random for 100k steps on
  # sprite/reach, while a fresh one in the same frozen world model learned with 32 independent
  # sequences per update (and not with 32 starts taken as 8 consecutive frames of 4 sequences),
  # measured with benchmarks.imagination_probe (issue 8; the consecutive-frame starts were a
  # prototype, not kept). 32 starts cost ~1.5 s per update on 2 CPU cores against ~0.2 s for 4,
  # so every 8th update keeps the run's cost.
  run.batch_size, run.batch_length = 32, 6
  config.agent.world_model_batch_size = 4
  config.agent.schedule.actor_critic_every = 8
  run.train_ratio = 48.0         # 2 envs x 48 / (32 x 6): one update every 2 env iterations
  run.learning_starts = 64
