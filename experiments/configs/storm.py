"""STORM (Zhang et al. 2023, arXiv:2310.09615). Variants: atari100k, atari100k_paper_protocol,
dmc_vision, debug.

Defaults are the paper's, as its code sets them (weipu-zhang/STORM, config_files/STORM.yaml
and sub_models/): 32 x 32 latents with 1% unimix; CNN of 32-64-128-256 channels (kernel 4,
stride 2) down to 4 x 4; a 2-layer, 512-wide, 8-head Transformer (post-LN blocks, ReLU MLP
2x wide, learned positions, context 64); reward and termination heads of 2 x 512;
world-model Adam lr 1e-4, gradient clip 1000; imagination of 1024 starts x 16 steps after a
burn-in of 8; actor and critic of 2 x 512 (LayerNorm + ReLU), gamma 0.985, lambda 0.95,
entropy 3e-4, Adam lr 3e-5 (eps 1e-5, clip 100), slow critic EMA 0.98, return percentiles
5/95 with EMA 0.99; bfloat16 compute; batch 16 x 64, one update per env step.

Named deviations from the paper's code:
  * LayerNorm instead of BatchNorm in the encoder/decoder CNNs (batch statistics are state
    a pure update would have to carry; DreamerV3 also uses LayerNorm there).
  * No dropout (the code uses 0.1 in the Transformer).
  * Attention and the reward/termination/KL terms never cross an episode start; the code's
    sequences run across resets.
  * The actor-critic is the suite's DreamerV3 one (wm_jax/agents/actor_critic.py): its
    losses are weighted by the imagined cumulative continuation and the slow critic
    regularises towards the slow critic's value, where STORM's code leaves the losses
    unweighted and regresses towards lambda-returns computed with the slow critic.
  * Imagination contexts are windows of the world-model batch (its posterior samples), not a
    second replay sample of 1024 x 8 frames that the code encodes again.
  * Acting reads the current frame's posterior z_t with h_{t-1} of the last 16 steps of the
    episode; the code acts on a prior sample of z_t predicted from the previous 16 steps.
The suite's Atari card (common.ATARI_PROTOCOL: no sticky actions, minimal action set, no
life-loss termination) is the default so that every family runs one protocol; STORM's own
(ALE v5 sticky actions 0.25, full action space, life loss as termination) is the
`atari100k_paper_protocol` variant.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import dreamerv3
from experiments.configs.common import ATARI_PROTOCOL, base_config, check_variant

VARIANTS = ("atari100k", "atari100k_paper_protocol", "dmc_vision", "debug")
# STORM's Atari protocol: gymnasium ALE/<Game>-v5 (sticky actions 0.25), full action space,
# AtariPreprocessing (frame skip 4 with max-pool, up to 30 no-ops), life loss as termination.
STORM_ATARI_PROTOCOL = dict(ATARI_PROTOCOL, sticky_prob=0.25, full_action_space=True,
                            life_loss_terminal=True)


def _mlp(units=512, layers=2, **kw) -> ml_collections.ConfigDict:
  """A network section of STORM's heads: Linear(no bias) -> LayerNorm -> ReLU, `layers` times."""
  return ml_collections.ConfigDict(dict(units=units, layers=layers, act="relu", norm=True, **kw))


def agent_config() -> ml_collections.ConfigDict:
  """Every STORM hyperparameter, as a named field (values: the paper's code)."""
  a = ml_collections.ConfigDict()
  a.precision = "bfloat16"        # the code trains under torch.autocast(bfloat16)
  a.stoch, a.classes, a.unimix = 32, 32, 0.01
  a.action_clip = 1.0             # continuous actions enter the token clipped (DreamerV3 code)
  a.encoder = _mlp(cnn_depth=32, cnn_mults=(1, 2, 4, 8), cnn_kernel=4,  # 32-64-128-256 to 4x4
                   symlog_inputs=True)   # vector inputs (not in the paper): as DreamerV3
  a.decoder = _mlp(cnn_depth=32, cnn_mults=(1, 2, 4, 8), cnn_kernel=4)
  a.transformer = ml_collections.ConfigDict(dict(
      width=512, depth=2, heads=8, max_len=64, positions="learned",
      mlp_ratio=2, pre_norm=False, act="relu"))   # the code's post-LN AttentionBlockKVCache
  a.reward_head = _mlp(bins=255, bin_low=-20.0, bin_high=20.0, outscale=1.0)
  a.term_head = _mlp(outscale=1.0, imagine="mode")   # code: termination_hat > 0
  a.loss_scales = ml_collections.ConfigDict(dict(image=1.0, vector=1.0, reward=1.0, term=1.0))
  a.kl = ml_collections.ConfigDict(dict(free_nats=1.0, dyn_scale=0.5, rep_scale=0.1))
  a.model_opt = ml_collections.ConfigDict(dict(lr=1e-4, eps=1e-8, clip=1000.0, wd=0.0))
  # Imagination (ImagineBatchSize, ImagineContextLength, ImagineBatchLength) and acting context.
  a.imag_batch, a.imag_context, a.imag_horizon = 1024, 8, 16
  a.act_context = 16              # the code's acting deque(maxlen=16)
  # Actor-critic: the DreamerV3 one with STORM's Agent section (Gamma, Lambda, EntropyCoef).
  dv3 = dreamerv3.agent_config()
  a.gamma, a.return_lambda = 0.985, 0.95
  a.actor = dv3.actor
  a.actor.update(units=512, layers=2, act="relu", entropy=3e-4,
                 unimix=0.0,             # the code's plain Categorical policy
                 grad_cont="reinforce")  # continuous control (dmc_vision, not in the paper)
  a.critic = dv3.critic
  a.critic.update(units=512, layers=2, act="relu", outscale=1.0)
  a.return_norm = dv3.return_norm
  a.actor_opt, a.critic_opt = dv3.actor_opt, dv3.critic_opt   # Adam 3e-5, eps 1e-5, clip 100
  return a


def get_config(variant: str = "debug") -> ml_collections.ConfigDict:
  """Run config of a STORM variant (one of VARIANTS)."""
  check_variant(variant, VARIANTS)
  preset = "atari100k" if variant == "atari100k_paper_protocol" else variant
  config = base_config("storm", preset)
  config.variant = variant
  config.agent = agent_config()
  run = config.run
  run.batch_size, run.batch_length = 16, 64
  run.learning_starts = 1024      # BufferWarmUp
  run.train_ratio = 1024.0        # one 16 x 64 update per env step (TrainDynamicsEverySteps 1)
  if variant == "atari100k_paper_protocol":
    config.env.protocol = dict(STORM_ATARI_PROTOCOL)
  elif variant == "debug":
    run.train_ratio = 32.0
    run.batch_size, run.batch_length = 4, 16
    run.learning_starts = 256
    shrink_for_debug(config.agent)
  return config


def shrink_for_debug(agent: ml_collections.ConfigDict) -> None:
  """Turns a STORM agent config into a tiny float32 model for tests and CPU smoke runs, in place."""
  agent.precision = "float32"
  agent.stoch, agent.classes = 8, 8
  agent.transformer.update(width=64, depth=1, heads=2)   # DreamerV3 debug: deter 64
  for net in (agent.encoder, agent.decoder):
    net.update(units=64, layers=1, cnn_depth=8)
  for net in (agent.reward_head, agent.term_head, agent.actor, agent.critic):
    net.update(units=64, layers=1)
  agent.imag_batch, agent.imag_context, agent.imag_horizon = 32, 4, 8
  agent.act_context = 8
