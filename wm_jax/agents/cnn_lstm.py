"""The CNN-LSTM actor-critic trained in a world model's imagination, shared by IRIS and DIAMOND.

IRIS (Micheli et al. 2023, arXiv:2209.00588, sec. 2.3; IRIS code src/models/actor_critic.py)
and DIAMOND (Alonso et al. 2024, arXiv:2405.12399, sec. 3; DWM paper sec. 4.3, which follows
IRIS): one network with a shared CNN + LSTM trunk and linear policy and value heads, read frame
by frame. `net` picks the paper's network: 'iris' (4 x (3x3 conv, 2x2 max-pool, ReLU), default
init) or 'diamond' (DIAMOND's actor_critic.py: a 3x3 conv, then 4 x (SmallResBlock, 2x2
max-pool) and DIAMOND's utils.init_lstm); `zero_heads` zero-initialises the policy and value
heads as DIAMOND does. It imagines through any world model offering the env interface of
DESIGN.md, `step(sim, action, key) -> (sim, obs, reward, cont)` with `sim['frame']` the
current frame float32 [B, 64, 64, 3] in [0, 1], and learns by REINFORCE with a value baseline
on lambda-returns, an entropy bonus and a squared-error value loss.

The world-model families differ only in what the LSTM is burnt in on and how the world model
is reset (IRIS: tokenizer reconstructions, one frame; DIAMOND: real frames, H frames of
conditioning); they build (carry, sim) and call `ImaginedActorCritic.loss`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from wm_jax.core import losses
from wm_jax.core.nets import PARAM_DTYPE
from wm_jax.envs.base import ActionSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.diffusion import SmallResBlock

sg = jax.lax.stop_gradient
Carry = tuple  # LSTM (c, h), float32 [N, lstm] each
# (sim, action [B] or [B, A], key) -> (sim, obs dict, reward [B], cont [B]): a world model's step.
EnvStep = Callable[[Any, jax.Array, jax.Array], tuple]


NETS = ("iris", "diamond")


class ActorCriticNet(nn.Module):
  """(LSTM carry, frames [N, 64, 64, 3] in [0, 1]) -> (carry, policy output [N, A] logits or [N, 2A] mean/std, value [N]): a CNN trunk (`net`: IRIS's 4 x (3x3 conv, 2x2 max-pool, ReLU), or DIAMOND's 3x3 conv + 4 x (SmallResBlock, 2x2 max-pool)), an LSTM and linear heads, zero-initialised with `zero_heads` (DIAMOND's actor_critic.py).

  `encode` (the CNN, any number of frames at once) and `recur` (LSTM and heads) split the step
  so that a sequence is encoded in one batched pass before the LSTM scans it: convolution
  gradients inside a `lax.scan` are many times slower on XLA:CPU.
  """
  channels: Sequence[int]
  lstm: int
  act: ActionSpec
  net: str = "iris"
  zero_heads: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    conv = lambda ch: nn.Conv(ch, (3, 3), padding="SAME", dtype=self.dtype,
                              param_dtype=PARAM_DTYPE)
    if self.net == "diamond":
      self.stem = conv(self.channels[0])
      self.blocks = [SmallResBlock(ch, self.dtype) for ch in self.channels]
    else:
      self.convs = [conv(ch) for ch in self.channels]
    self.cell = nn.OptimizedLSTMCell(self.lstm, dtype=self.dtype, param_dtype=PARAM_DTYPE)
    size = self.act.num_actions if self.act.discrete else 2 * self.act.dim
    head_init = nn.initializers.zeros if self.zero_heads else nn.linear.default_kernel_init
    self.actor = nn.Dense(size, dtype=self.dtype, param_dtype=PARAM_DTYPE, kernel_init=head_init)
    self.critic = nn.Dense(1, dtype=self.dtype, param_dtype=PARAM_DTYPE, kernel_init=head_init)

  def encode(self, frame: jax.Array) -> jax.Array:
    """frames [N, 64, 64, 3] in [0, 1] -> features [N, D]."""
    x = (frame * 2.0 - 1.0).astype(self.dtype)
    pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    if self.net == "diamond":
      x = self.stem(x)
      for block in self.blocks:
        x = pool(block(x))
    else:
      for conv in self.convs:
        x = nn.relu(pool(conv(x)))
    return x.reshape(x.shape[0], -1)

  def recur(self, carry: Carry, features: jax.Array):
    """(carry, features [N, D]) -> (carry, policy output, value [N])."""
    carry, h = self.cell(carry, features)
    carry = jax.tree.map(lambda c: c.astype(jnp.float32), carry)
    return carry, self.actor(h).astype(jnp.float32), self.critic(h)[..., 0].astype(jnp.float32)

  def __call__(self, carry: Carry, frame: jax.Array):
    return self.recur(carry, self.encode(frame))


def check_actor_critic_config(cfg: ml_collections.ConfigDict) -> None:
  """One sentence on an impossible `actor_critic` section (IRIS and DIAMOND start-up checks)."""
  if cfg.net not in NETS:
    raise RunConfigError(f"agent.actor_critic.net={cfg.net!r} is unknown: use 'iris' or "
                         f"'diamond'.")
  if not (0.0 <= cfg.collect_epsilon <= 1.0 and cfg.collect_temperature > 0
          and cfg.eval_temperature > 0):
    raise RunConfigError("agent.actor_critic.collect_epsilon must lie in [0, 1] and the "
                         "temperatures must be positive.")


def diamond_lstm_init(cell_params: dict, key: jax.Array) -> dict:
  """Params of an `nn.OptimizedLSTMCell` (per-gate kernels 'i*' [D, U], 'h*' [U, U], biases 'h*' [U]) re-drawn as DIAMOND's utils.init_lstm draws PyTorch's fused LSTMCell: input kernels Xavier-uniform over the fused [D, 4U] matrix, recurrent kernels one orthogonal [U, 4U] matrix, biases 0 except the forget gate's 1."""
  d, u = cell_params["ii"]["kernel"].shape
  k_in, k_rec = jax.random.split(key)
  bound = (6.0 / (d + 4 * u)) ** 0.5
  kernels_in = jax.random.uniform(k_in, (d, 4 * u), jnp.float32, -bound, bound)
  kernels_rec = nn.initializers.orthogonal()(k_rec, (u, 4 * u), jnp.float32)
  out = {}
  for i, gate in enumerate("ifgo"):   # PyTorch's gate order
    out["i" + gate] = {"kernel": kernels_in[:, i * u:(i + 1) * u]}
    out["h" + gate] = {"kernel": kernels_rec[:, i * u:(i + 1) * u],
                       "bias": jnp.full((u,), 1.0 if gate == "f" else 0.0, jnp.float32)}
  return out


def policy_dist(out: jax.Array, act: ActionSpec, temperature: float = 1.0):
  """Policy output [..., A] -> Categorical(logits / temperature) (IRIS); continuous (ours, for DMC): [..., 2A] -> Normal(tanh(mean), temperature * std), std in [0.1, 1]."""
  if act.discrete:
    return distrax.Categorical(logits=out / temperature)
  mean, raw_std = jnp.split(out, 2, -1)
  std = (0.9 * jax.nn.sigmoid(raw_std + 2.0) + 0.1) * temperature
  return distrax.MultivariateNormalDiag(jnp.tanh(mean), std)


def reset_carry(carry: Carry, is_first: jax.Array) -> Carry:
  """Zeroes the LSTM carry [N, D] where is_first [N]."""
  return jax.tree.map(lambda c: jnp.where(is_first[:, None], 0.0, c), carry)


class ImaginedActorCritic:
  """Pure functions of the CNN-LSTM actor-critic for the `actor_critic` config section `cfg` (net, zero_heads, channels, lstm, horizon, gamma, lambda_, entropy, collect_epsilon, collect/eval_temperature)."""

  def __init__(self, cfg: ml_collections.ConfigDict, act: ActionSpec, dtype=jnp.float32):
    self.cfg = cfg
    self.act_spec = act
    self.net = ActorCriticNet(tuple(cfg.channels), cfg.lstm, act, cfg.net, cfg.zero_heads, dtype)

  def init(self, key: jax.Array, frame_shape: tuple = (64, 64, 3)):
    k_net, k_lstm = jax.random.split(key)
    params = self.net.init(k_net, self.zero_carry(1), jnp.zeros((1,) + frame_shape, jnp.float32))
    if self.cfg.net == "diamond":
      params = {**params, "params": {**params["params"], "cell": diamond_lstm_init(
          params["params"]["cell"], k_lstm)}}
    return params

  def zero_carry(self, n: int) -> Carry:
    zeros = jnp.zeros((n, self.cfg.lstm), jnp.float32)
    return (zeros, zeros)

  def unroll(self, params, carry: Carry, frames: jax.Array, is_first: jax.Array | None = None):
    """frames [B, L, 64, 64, 3] in [0, 1], optional is_first [B, L] (resets) -> (carry, out [B, L, ...], value [B, L]): the frames encoded in one pass, then the LSTM scanned over them."""
    B, L = frames.shape[:2]
    features = self.net.apply(params, frames.reshape((B * L,) + frames.shape[2:]),
                              method=ActorCriticNet.encode).reshape(B, L, -1)

    def step(carry, xs):
      feature, first = xs
      if first is not None:
        carry = reset_carry(carry, first)
      carry, out, value = self.net.apply(params, carry, feature, method=ActorCriticNet.recur)
      return carry, (out, value)
    swap = lambda x: None if x is None else jnp.swapaxes(x, 0, 1)
    carry, (out, value) = jax.lax.scan(step, carry, (swap(features), swap(is_first)))
    return carry, swap(out), swap(value)

  def sample_action(self, out: jax.Array, key: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Policy output [N, ...] -> int32 [N] or float32 [N, A] (unclipped) sample."""
    action = policy_dist(out, self.act_spec, temperature).sample(seed=key)
    return action.astype(jnp.int32) if self.act_spec.discrete else action

  def env_action(self, action: jax.Array) -> jax.Array:
    """A sampled action -> the env's: discrete unchanged, continuous clipped to the spec's bounds."""
    if self.act_spec.discrete:
      return action
    return jnp.clip(action, self.act_spec.low, self.act_spec.high)

  def act(self, params, carry: Carry, frame: jax.Array, is_first: jax.Array, key: jax.Array,
          explore: bool, epsilon: float | jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """One env step of the policy on frames [N, 64, 64, 3] in [0, 1] -> (env action [N, ...], carry): temperature `collect_temperature` and epsilon-random `collect_epsilon` (or `epsilon`, a float or [] array, where given) while collecting, `eval_temperature` in evaluation (IRIS trainer.yaml collection.train / .test)."""
    c = self.cfg
    epsilon = c.collect_epsilon if epsilon is None else epsilon
    carry = reset_carry(carry, jnp.asarray(is_first, bool))
    carry, out, _ = self.net.apply(params, carry, frame)
    k_policy, k_random, k_coin = jax.random.split(key, 3)
    action = self.sample_action(out, k_policy,
                                c.collect_temperature if explore else c.eval_temperature)
    if explore:
      n, spec = action.shape[0], self.act_spec
      random = (jax.random.randint(k_random, (n,), 0, spec.num_actions) if spec.discrete else
                jax.random.uniform(k_random, action.shape, jnp.float32, spec.low, spec.high))
      coin = jax.random.uniform(k_coin, (n,)) < epsilon
      action = jnp.where(coin.reshape((n,) + (1,) * (action.ndim - 1)), random, action)
    return self.env_action(action).astype(self.act_spec.dtype), carry

  def imagine(self, params, env_step: EnvStep, carry: Carry, sim, key: jax.Array):
    """Rolls a world model for `horizon` steps under the policy from (carry, sim) [B] -> frames [B, H+1, 64, 64, 3], actions [B, H, ...], rewards [B, H], conts [B, H] (IRIS sec. 2.3, ActorCritic.imagine), one `lax.scan`."""
    def step(state, k):
      carry, sim = state
      k_act, k_env = jax.random.split(k)
      frame = sim["frame"]
      carry, out, _ = self.net.apply(params, carry, frame)
      action = self.sample_action(out, k_act)
      sim, _, reward, cont = env_step(sim, self.env_action(action), k_env)
      return (carry, sim), (frame, action, reward, cont)
    (_, sim), (frames, actions, rewards, conts) = jax.lax.scan(
        step, (carry, sim), jax.random.split(key, self.cfg.horizon))
    frames = jnp.concatenate([frames, sim["frame"][None]], 0)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return swap(frames), swap(actions), swap(rewards), swap(conts)

  def loss(self, params, env_step: EnvStep, carry: Carry, sim, weight: jax.Array,
           key: jax.Array) -> tuple[jax.Array, dict]:
    """Imagination from (burnt-in carry, world-model state) [B] -> (loss [], metrics): -log pi(a_t) sg(R_t - V_t) - eta H(pi) + (V_t - sg(R_t))^2 averaged over t < H and the starts, each start weighted by weight [B] (IRIS sec. 2.3, ActorCritic.compute_loss; R_t the lambda-returns)."""
    c = self.cfg
    frames, actions, rewards, conts = self.imagine(sg(params), env_step, sg(carry), sim, key)
    _, out, values = self.unroll(params, sg(carry), frames)               # [B, H + 1]
    returns = losses.lambda_returns(rewards, sg(values[:, :-1]), c.gamma * conts,
                                    sg(values[:, -1]), c.lambda_)
    dist = policy_dist(out[:, :-1], self.act_spec)
    weight = weight[:, None]
    advantage = sg(returns - values[:, :-1])
    actor_loss = losses.masked_mean(-dist.log_prob(actions) * advantage, weight)
    entropy = losses.masked_mean(dist.entropy(), weight)
    value_loss = losses.masked_mean(jnp.square(values[:, :-1] - sg(returns)), weight)
    loss = actor_loss - c.entropy * entropy + value_loss
    return loss, {"actor_critic_loss": loss, "actor_loss": actor_loss,
                  "value_loss": value_loss, "entropy": entropy,
                  "imagined_return": losses.masked_mean(returns[:, 0], weight[:, 0]),
                  "imagined_reward": losses.masked_mean(rewards, weight)}
