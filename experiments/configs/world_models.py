"""World Models (Ha & Schmidhuber 2018, arXiv:1803.10122) on CarRacing, in the paper's three
phases (experiments/world_models.py; the library is wm_jax/agents/world_models.py and
wm_jax/models/vae_mdnrnn.py). Variants: carracing, cpu, debug.

carracing: the paper's numbers (sec. 3 and App. A): 10,000 random rollouts (Ha's code drives
each with a randomly initialised C: `experiments.collect --policy=random_controller`), V with
z 32 and KL tolerance 0.5 trained one epoch at batch 100 (lr 1e-4), M with LSTM 256 and 5
mixtures trained 20 epochs on 1000-step sequences at batch 100 (lr 1e-3, gradient clip 1), C
evolved by CMA-ES with population 64 and 16 rollouts per candidate, scored over 100 episodes. The paper
trained CarRacing's controller in the real env; its dream-trained controller was DoomTakeCover's
(temperature 1.15). Here both are run on CarRacing; the dream uses temperature 1.0 and M's
reward head, and its episodes last `dream_horizon` steps or until M predicts the end.
cpu: the same algorithm at a 2-core CPU budget (smaller counts, shorter sequences, population
32 x 8 rollouts): V and M take about 25 minutes, C's 60 dream generations about 2 minutes, its
12 real-env generations of 300-step episodes about 14 minutes (population x rollouts envs,
about 920k real steps); debug: tiny, for tests.

`agent` holds V and M (and their offline schedule), `run` the [batch_size, batch_length]
windows of offline training: `experiments.train_offline` and `benchmarks.wm_quality` train V + M
as one world model on any suite dataset of 64 x 64 frames (wm_quality's default variant:
`carracing`).

Collect the random rollouts first (the env is this config's `env` section), with Ha's random
controllers (`--policy=random` gives uniform random actions instead):
  python -m experiments.collect --config=experiments/configs/world_models.py:cpu \
      --policy=random_controller --steps=240000 --out=data/carracing_random_controller
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import check_variant

VARIANTS = ("carracing", "cpu", "debug")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """Config of a World Models variant (carracing, cpu, debug)."""
  check_variant(variant, VARIANTS)
  c = ml_collections.ConfigDict()
  c.method = "world_models"
  c.variant = variant
  c.seed = 0
  c.env = ml_collections.ConfigDict(dict(suite="box2d", task="CarRacing-v3", num_envs=8,
                                         protocol={}))
  c.agent = ml_collections.ConfigDict(dict(
      vae=dict(z_size=32, depth=32, kl_tolerance=0.5, lr=1e-4, batch_size=100, steps=100_000),
      # temperature: M's sampling temperature tau in the dream and in open-loop rollouts
      # (the paper's DoomTakeCover dream used 1.15; 1.0 samples M's own mixture).
      rnn=dict(z_size=32, units=256, mixtures=5, lr=1e-3, clip=1.0, batch_size=100,
               batch_length=1000, steps=2000, temperature=1.0),
      # Offline training as one world model (experiments.train_offline, benchmarks.wm_quality;
      # wm_jax/agents/world_models.py `make_world_models_world_model`): each update trains V on
      # every frame of a [run.batch_size, run.batch_length] batch and M on the same windows, M
      # from stop-gradient samples of the current V, each from its `*_start` update. Deviation,
      # named: the paper trains V to the end before M (rnn_start beyond V's updates comes
      # closest), on batches of its own sizes (vae.batch_size, rnn.batch_size x batch_length,
      # which the three-phase experiments.world_models uses).
      schedule=dict(vae_start=0, rnn_start=0)))
  c.run = ml_collections.ConfigDict(dict(batch_size=16, batch_length=32))
  c.controller = ml_collections.ConfigDict(dict(
      population=64, rollouts=16, generations=200, init_std=0.1,
      # CMA-ES generations of the real-env evolution; None = `generations` (the paper's runs
      # are one or the other). Real-env generations cost population x rollouts real episodes.
      real_generations=ml_collections.FieldReference(None, field_type=int),
      dream_horizon=1000,
      # Action dims C drives as clip(a, 0, 1) of the env's [0, 1] control instead of
      # (a + 1) / 2: CarRacing's brake (Ha's carracing/model.py get_action), so that C's
      # negative half, and a C near zero, do not brake.
      clip_dims=(2,),
      # Ha's random rollouts (experiments.collect --policy=random_controller): each episode's
      # C has parameters Cauchy x std, std ~ U(0, random_std) (carracing/extract.py).
      random_std=0.01,
      dream_start="first",   # dreams start from V's z of real first frames ('any': any frame)
      max_steps=1000,    # real-env steps per episode (CarRacing-v3's time limit)
      # Gaussian action noise when C collects data (experiments.collect --policy=...pkl, the
      # iterative rounds); the paper leaves the exploration of its sec. 5 open.
      explore_std=0.1))
  # The iterative training procedure (sec. 5): rounds of (collect with the dream-trained C,
  # train M further on all data, evolve C in the new dream); 0 is the paper's CarRacing run.
  c.iterate = ml_collections.ConfigDict(dict(rounds=0, steps=100_000))
  c.eval_episodes = 100
  if variant == "cpu":
    c.agent.vae.update(batch_size=64, steps=3000)
    # M: 8000 steps. Its reward head is good where M is fed real latents: summed over 100-step
    # held-out windows its predicted reward correlates 0.97 with the real one (0.81 when M
    # dreams those windows under the real actions, 0.50 over 300 steps); the per-step MSE stays
    # near the reward's variance only because the step a new tile is reached is unpredictable.
    # C: dreams of 1000 steps, the real episode's length. With 300-step dreams C learned to do
    # well for 300 steps (+9.7 over them) and then left the road: -55.8 over full episodes
    # against -31.0 for uniform random actions, and 2 of 6 earlier evolutions beat random.
    # With 1000-step dreams and z sampled from V in the real env (Ha's code) the dream-trained
    # C beat random in 3 of 3 CMA-ES seeds (README, "World Models"), with V and M trained on
    # 240k steps of random rollouts; with M trained on 48k of them the same evolution scored
    # -40.3 (seed 0).
    c.agent.rnn.update(batch_size=32, batch_length=100, steps=8000)
    c.controller.update(population=32, rollouts=8, generations=60, real_generations=12,
                        dream_horizon=1000, max_steps=300)
    c.iterate.steps = 24_000
    c.eval_episodes = 32
  elif variant == "debug":
    c.env.update(num_envs=2, protocol={"time_limit": 40})
    c.agent.vae.update(depth=4, batch_size=4, steps=3)
    c.agent.rnn.update(units=16, mixtures=2, batch_size=2, batch_length=8, steps=3)
    c.run.update(batch_size=2, batch_length=12)
    c.controller.update(population=4, rollouts=1, generations=2, dream_horizon=10,
                        max_steps=40)
    c.iterate.steps = 80
    c.eval_episodes = 2
  return c
