"""Ha & Schmidhuber's World Models (2018, arXiv:1803.10122) as the paper's three phases, each a
pure jitted function driven by experiments/world_models.py:

1. random rollouts (experiments.collect --policy=random_controller: a new C with tiny random
   parameters per episode, `random_controller_agent`, as Ha's code) -> a dataset
   (wm_jax/dataset.py);
2. V, a VAE of the frames (`train_vae`), then M, an MDN-RNN over V's latents (`train_rnn`;
   both in wm_jax/models/vae_mdnrnn.py);
3. C, a linear controller a_t = tanh(W [z_t, h_t] + b) (sec. 2.3, `controller_action`) evolved
   with CMA-ES (evosax) either in the real env (`real_fitness`: z_t sampled from V's
   q(z | frame) as in Ha's code, h_t from M fed that z and a) or entirely inside the dream
   (`dream_fitness`: M samples z_{t+1} at temperature tau and predicts the reward and the end;
   sec. 4, "Learning inside of a dream").

Fitness is the mean return over `rollouts` episodes per candidate, as the paper (16 rollouts,
population 64). The population axis is sharded over the devices in the dream, so its size must
divide the device count.

V and M also train together as one offline `WorldModel` (`make_world_models_world_model`, for
experiments.train_offline and benchmarks.wm_quality), with `VisionMemoryModel` as the env.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Callable, Iterator

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from wm_jax.agents.base import Agent, WorldModel
from wm_jax.agents.components import (ComponentLearner, check_schedule, component_world_model,
                                      staged)
from wm_jax.errors import RunConfigError
from wm_jax.envs.base import EnvSpec
from wm_jax.errors import read_json
from wm_jax.models.vae_mdnrnn import (MDNRNN, VAENet, VisionMemoryModel, make_mdnrnn,
                                      sample_latent, vae_loss)
from wm_jax.parallel import make_mesh


# --------------------------------------------------------------------------- controller


def controller_size(z_size: int, units: int, action_size: int) -> int:
  """Parameters of the linear controller: (Z + U) x A weights and A biases (867 for CarRacing)."""
  return (z_size + units) * action_size + action_size


def controller_action(theta: jax.Array, z: jax.Array, h: jax.Array) -> jax.Array:
  """theta [D] flat (W then b), z [N, Z], h [N, U] -> C's output [N, A] = tanh(W [z, h] + b) in [-1, 1]."""
  x = jnp.concatenate([z, h], -1)
  action_size = theta.shape[0] // (x.shape[-1] + 1)
  w = theta[:x.shape[-1] * action_size].reshape(x.shape[-1], action_size)
  return jnp.tanh(x @ w + theta[x.shape[-1] * action_size:])


def env_action(output: jax.Array, clip_dims: tuple[int, ...]) -> jax.Array:
  """C's output [N, A] in [-1, 1] -> the env action [N, A] in [-1, 1] (the suite's continuous
  convention: the env applies (a + 1) / 2 to its [0, 1] controls). Every dim passes unchanged
  except those in `clip_dims`, which reach the env as clip(a, 0, 1) (Ha's carracing/model.py,
  get_action: brake = clip(tanh(.), 0, 1), so C's negative half means no brake), i.e. as
  2 clip(a, 0, 1) - 1 in the suite's convention."""
  if not clip_dims:
    return output
  one_sided = jnp.zeros(output.shape[-1], bool).at[jnp.asarray(clip_dims)].set(True)
  return jnp.where(one_sided, 2.0 * jnp.clip(output, 0.0, 1.0) - 1.0, output)


def controller_step(vae: VAENet, vae_params, rnn: MDNRNN, rnn_params, thetas: jax.Array,
                    carry, image: jax.Array, clip_dims: tuple[int, ...], key: jax.Array,
                    noise: jax.Array | float = 0.0):
  """One real step of the agent (sec. 2.3's loop): thetas [N, D] (a controller per env), M's
  state for N envs and frames uint8 [N, 64, 64, 3] -> (M's next state, env actions [N, A]).
  z_t is a sample of V's q(z | frame) (`sample_latent`), as in Ha's code (carracing/model.py,
  encode_obs) and as in the dream, where C reads M's samples of z, and M learned from samples;
  a_t = env_action(clip(C(z_t, h_t) + noise, -1, 1)), and M then reads (z_t, a_t), the action
  actually taken."""
  z = sample_latent(*vae.apply(vae_params, image, method=VAENet.encode), key)
  output = jax.vmap(lambda t, zi, hi: controller_action(t, zi[None], hi[None])[0])(
      thetas, z, rnn.hidden(carry))
  action = env_action(jnp.clip(output + noise, -1.0, 1.0), clip_dims)
  carry, _ = rnn.step(rnn_params, carry, z, action)
  return carry, action


def controller_agent(vae: VAENet, rnn: MDNRNN, state: dict, action_size: int,
                     explore_std: float, clip_dims: tuple[int, ...]) -> Agent:
  """C as an `Agent` (wm_jax/agents/base.py) that acts in the real env, for experiments.collect
  and the iterative procedure (sec. 5): `state` {'vae', 'rnn': params, 'theta': [D]} is what
  `init` returns; the carry is M's state, reset where is_first; while exploring, Gaussian noise
  of std `explore_std` is added to C's output (the paper leaves the exploration open)."""
  def act(state, carry, obs, key, explore):
    n = obs["is_first"].shape[0]
    carry = jax.tree.map(lambda c, c0: jnp.where(obs["is_first"][:, None], c0, c), carry,
                         rnn.initial(n))
    thetas = jnp.broadcast_to(state["theta"], (n,) + state["theta"].shape)
    k_z, k_noise = jax.random.split(key)
    noise = explore_std * jax.random.normal(k_noise, (n, action_size)) if explore else 0.0
    carry, action = controller_step(vae, state["vae"], rnn, state["rnn"], thetas, carry,
                                    obs["image"], clip_dims, k_z, noise)
    return action, carry
  return Agent(init=lambda key: state, initial_carry=rnn.initial, act=act)


def random_controller_agent(z_size: int, units: int, action_size: int, max_std: float,
                            clip_dims: tuple[int, ...]) -> Agent:
  """Ha's random rollout policy (carracing/extract.py with model.py's init_random_model_params
  (stdev=U(0, 1) * 0.01)) as an `Agent`: every episode draws a new C whose parameters are
  standard Cauchy draws times a std ~ U(0, max_std). V and M are untrained there, their weights
  drawn the same tiny way, so V's mean and log-variance are ~0 and its sampled z is N(0, I)
  noise, and M's h is ~0: here C reads z ~ N(0, I) and h = 0 (a named simplification). With
  such small weights most episodes steer little at half gas without braking; the Cauchy tails
  give some that steer or brake hard. The carry holds each env's C [N, D]."""
  dim = controller_size(z_size, units, action_size)

  def act(state, thetas, obs, key, explore):
    del state, explore
    n = obs["is_first"].shape[0]
    k_std, k_theta, k_z = jax.random.split(key, 3)
    std = jax.random.uniform(k_std, (n, 1), maxval=max_std)
    thetas = jnp.where(obs["is_first"][:, None],
                       std * jax.random.cauchy(k_theta, (n, dim)), thetas)
    z, h = jax.random.normal(k_z, (n, z_size)), jnp.zeros((n, units))
    output = jax.vmap(lambda t, zi, hi: controller_action(t, zi[None], hi[None])[0])(
        thetas, z, h)
    return env_action(output, clip_dims), thetas
  return Agent(init=lambda key: {}, initial_carry=lambda n: jnp.zeros((n, dim)), act=act)


def check_population(population: int, devices: int | None = None) -> None:
  """One sentence unless the CMA-ES population splits evenly over the devices."""
  devices = devices or jax.device_count()
  if population % devices:
    raise RunConfigError(f"controller.population={population} does not divide over {devices} "
                         f"devices: use a multiple of {devices}.")


def check_dataset(dataset) -> int:
  """The action size of a dataset World Models can learn from; one sentence otherwise."""
  entries = dataset.spec["entries"]
  image = entries.get("image")
  if image is None or tuple(image["shape"]) != (64, 64, 3):
    shape = None if image is None else tuple(image["shape"])
    raise RunConfigError(f"World Models' VAE reads 64 x 64 RGB frames and {dataset.directory} "
                         f"holds image {shape}: collect it from an env with 'image' "
                         f"observations of that size (e.g. box2d CarRacing-v3).")
  action = entries["action"]
  if action["dtype"] != "float32" or len(action["shape"]) != 1:
    raise RunConfigError(f"World Models' linear controller outputs continuous actions and "
                         f"{dataset.directory} holds discrete ones: collect a continuous-action "
                         f"env (e.g. box2d CarRacing-v3).")
  return int(action["shape"][0])


# --------------------------------------------------------------------------- saved phases

CONFIG_FILE = "config.json"


def read_params(path: str, template):
  """Params saved at `path` (flax msgpack) in the structure of `template`; one sentence if the
  file cannot be read (it is left in place)."""
  try:
    with open(path, "rb") as f:
      return flax.serialization.from_bytes(template, f.read())
  except Exception as e:
    raise RunConfigError(f"{path} cannot be read ({type(e).__name__}): move it away to "
                         f"train that phase again.") from None


def load_controller_policy(path: str, spec: EnvSpec) -> tuple[Agent, dict, str]:
  """(agent, state, name) acting in an env of `spec` with the controller saved at `path`
  (controller_{dream,real}.pkl of experiments.world_models): M is the rnn.msgpack beside it,
  V (vae.msgpack) and the config (config.json) are the run folder's, i.e. the controller's
  folder or, for a round of the iterative procedure, the folder above it."""
  folder = os.path.dirname(os.path.abspath(path))
  run_folder = next((f for f in (folder, os.path.dirname(folder))
                     if os.path.exists(os.path.join(f, CONFIG_FILE))), None)
  if run_folder is None or not re.fullmatch(r"controller_(dream|real)\.pkl", os.path.basename(path)):
    raise RunConfigError(f"--policy={path} is not a controller file of experiments.world_models "
                         f"(controller_dream.pkl or controller_real.pkl in its --out, beside "
                         f"{CONFIG_FILE}): pass one of those.")
  config = ml_collections.ConfigDict(read_json(
      os.path.join(run_folder, CONFIG_FILE), RunConfigError,
      "rerun experiments.world_models into that folder to rewrite it"))
  if "agent" not in config:
    raise RunConfigError(f"{os.path.join(run_folder, CONFIG_FILE)} predates the config layout "
                         f"with V and M under `agent`: rerun experiments.world_models with that "
                         f"--out to rewrite it (finished phases are loaded, not retrained).")
  if spec.act.discrete or "image" not in spec.obs:
    raise RunConfigError(f"The controller {path} acts from 64 x 64 frames with continuous "
                         f"actions: collect from the env it was trained on "
                         f"({config.env.suite}/{config.env.task}).")
  theta = jnp.asarray(load_evolution(path)["state"].mean)   # C's flat [D] CMA-ES mean
  vae = VAENet(config.agent.vae.z_size, config.agent.vae.depth)
  rnn = make_mdnrnn(config.agent.rnn)
  key = jax.random.PRNGKey(0)
  state = {"vae": read_params(os.path.join(run_folder, "vae.msgpack"),
                              vae.init(key, np.zeros((1, 64, 64, 3), np.uint8))),
           "rnn": read_params(os.path.join(folder, "rnn.msgpack"), rnn.init(key, spec.act.dim)),
           "theta": theta}
  agent = controller_agent(vae, rnn, state, spec.act.dim, config.controller.explore_std,
                           tuple(config.controller.clip_dims))
  return agent, state, f"world_models controller {os.path.abspath(path)}"


# --------------------------------------------------------------------------- V and M training


def _adam(lr: float, clip: float = 0.0) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr)) if clip else optax.adam(lr)


def fit(loss_fn: Callable, params, opt: optax.GradientTransformation, sample: Callable,
        steps: int, key: jax.Array, progress: Callable[[Iterator], Iterator] = iter):
  """`steps` optimiser steps on loss_fn(params, batch, key) -> (loss, metrics), each on a batch sample(rng, key) drawn on the host -> (params, metrics per step)."""
  @jax.jit
  def step(params, opt_state, batch, key):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  opt_state = opt.init(params)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
  history = []
  for i in progress(range(steps)):
    k_batch, k_step = jax.random.split(jax.random.fold_in(key, i))
    params, opt_state, metrics = step(params, opt_state, sample(rng, k_batch), k_step)
    history.append({k: float(v) for k, v in metrics.items()})
  return params, history


def train_vae(net: VAENet, params, frames: np.ndarray, cfg, key: jax.Array,
              progress: Callable[[Iterator], Iterator] = iter):
  """V trained for cfg.steps Adam steps on random frames uint8 [S, 64, 64, 3] -> (params, losses per step)."""
  loss = lambda p, images, k: vae_loss(net, p, images, k, cfg.kl_tolerance)
  sample = lambda rng, k: frames[rng.integers(0, len(frames), cfg.batch_size)]
  return fit(loss, params, _adam(cfg.lr), sample, cfg.steps, key, progress)


def encode_frames(net: VAENet, params, frames: np.ndarray, batch: int = 512):
  """frames uint8 [S, 64, 64, 3] -> (mu, log sigma) float32 [S, Z] of q(z | frame)."""
  encode = jax.jit(lambda p, x: net.apply(p, x, method=VAENet.encode))
  parts = [encode(params, frames[i:i + batch]) for i in range(0, len(frames), batch)]
  return (np.concatenate([np.asarray(p[0]) for p in parts]),
          np.concatenate([np.asarray(p[1]) for p in parts]))


def sequence_windows(episode_starts: np.ndarray, length: int) -> np.ndarray:
  """Start indices of every window of `length` steps that stays inside one episode (episodes shorter than `length` give none)."""
  starts = [np.arange(s, e - length + 1) for s, e in zip(episode_starts[:-1],
                                                          episode_starts[1:])]
  return np.concatenate(starts) if starts else np.zeros(0, int)


def rnn_batch(steps: dict, mu, log_sigma, windows: np.ndarray, length: int, rng, batch: int,
              key) -> tuple:
  """(z [B, L, Z], action [B, L, A], reward [B, L], end [B, L]) of `batch` windows (starts from `windows`, inside one episode each) in M's alignment: z sampled from q(z|frame) (the paper samples z anew each batch), the action taken at z_t, the reward and end received after it. The suite stores the action and reward that led *to* a step, so they shift by one; after an episode's last frame they are zero."""
  rows = rng.choice(windows, batch)[:, None] + np.arange(length)
  z = np.asarray(sample_latent(mu[rows], log_sigma[rows], key))
  nxt = np.minimum(rows + 1, len(mu) - 1)
  has_next = ~steps["is_first"][nxt] & (rows + 1 < len(mu))
  action = np.where(has_next[..., None], steps["action"][nxt], 0.0).astype(np.float32)
  reward = np.where(has_next, steps["reward"][nxt], 0.0).astype(np.float32)
  end = np.where(has_next, steps["is_terminal"][nxt], False).astype(np.float32)
  return z.astype(np.float32), action, reward, end


def train_rnn(rnn: MDNRNN, params, steps: dict, mu: np.ndarray, log_sigma: np.ndarray,
              episode_starts: np.ndarray, cfg, key: jax.Array,
              progress: Callable[[Iterator], Iterator] = iter):
  """M trained for cfg.steps Adam steps (gradient clip cfg.clip) on windows of cfg.batch_length steps -> (params, losses per step)."""
  windows = sequence_windows(episode_starts, cfg.batch_length)
  if not len(windows):
    raise RunConfigError(f"No episode of the dataset is {cfg.batch_length} steps long: lower "
                         f"rnn.batch_length or collect longer episodes.")
  loss = lambda p, batch, k: rnn.loss(p, *batch)
  sample = lambda rng, k: rnn_batch(steps, mu, log_sigma, windows, cfg.batch_length, rng,
                                    cfg.batch_size, k)
  return fit(loss, params, _adam(cfg.lr, cfg.clip), sample, cfg.steps, key, progress)


# --------------------------------------------------------------------------- offline world model

WORLD_MODELS_CONTEXT = 8   # real frames M is filtered on before open loop (as the RSSM's)


class WorldModelsLearner(ComponentLearner):
  """V and M trained together on replay batches [B, T] (config `agent.schedule`: each from its
  `*_start` update; experiments/configs/world_models.py names the deviation from the paper's
  V-then-M training), with the paper's optimisers: Adam for V, Adam after a global-norm clip
  for M."""
  world_model_parts = ("vae", "rnn")

  def __init__(self, cfg: ml_collections.ConfigDict, spec: EnvSpec):
    self.cfg = cfg
    self.model = VisionMemoryModel(
        VAENet(cfg.vae.z_size, cfg.vae.depth), make_mdnrnn(cfg.rnn), cfg.vae.kl_tolerance,
        cfg.rnn.temperature, spec.act.size, spec.act.num_actions if spec.act.discrete else None)
    self.opts = {"vae": _adam(cfg.vae.lr), "rnn": _adam(cfg.rnn.lr, cfg.rnn.clip)}

  def train_vae(self, params, opt, batch, key):
    return self._train("vae", lambda p: self.model.vae_loss(p, batch, key), params, opt)

  def train_rnn(self, params, opt, batch, key):
    loss = lambda p: self.model.rnn_loss(p, params["vae"], batch, key)
    return self._train("rnn", loss, params, opt)

  def train_world_model(self, phase: tuple, params, opt, batch, key):
    """V's then M's step on the batch, each where phase (bool, bool) says it trains."""
    k_vae, k_rnn = jax.random.split(key)
    params, opt, m_vae = staged(phase[0], self.train_vae, params, opt, batch, k_vae)
    params, opt, m_rnn = staged(phase[1], self.train_rnn, params, opt, batch, k_rnn)
    return params, opt, {**m_vae, **m_rnn}


def make_world_models_world_model(cfg: ml_collections.ConfigDict, spec: EnvSpec) -> WorldModel:
  """V + M of a World Models config's `agent` section as a `WorldModel` for offline training
  (experiments.train_offline, benchmarks.wm_quality); one sentence unless the env gives 64 x 64
  RGB frames and V's and M's z sizes agree."""
  shape = getattr(spec.obs.get("image"), "shape", None)
  if shape is None or tuple(shape) != (64, 64, 3):
    given = "no frames" if shape is None else f"frames of shape {tuple(shape)}"
    raise RunConfigError(f"World Models' V encodes 64 x 64 x 3 frames but the env gives "
                         f"{given}: collect the data at env.protocol.image_size=64 from a "
                         f"pixel env.")
  if cfg.vae.z_size != cfg.rnn.z_size:
    raise RunConfigError(f"agent.vae.z_size={cfg.vae.z_size} and agent.rnn.z_size="
                         f"{cfg.rnn.z_size} must be equal: M models V's latents.")
  check_schedule(cfg.schedule)
  learner = WorldModelsLearner(cfg, spec)
  return component_world_model(learner, cfg.schedule, learner.model.init, WORLD_MODELS_CONTEXT)


# --------------------------------------------------------------------------- fitness


def dream_returns(rnn: MDNRNN, rnn_params, theta: jax.Array, start_z: jax.Array,
                  key: jax.Array, horizon: int, temperature: float,
                  clip_dims: tuple[int, ...]) -> jax.Array:
  """Returns [R] of R dreamed episodes of one controller theta [D] from start latents start_z [R, Z]: M samples z_{t+1} at temperature tau and predicts the reward; an episode ends where the end probability passes 0.5 or at `horizon` steps."""
  def step(loop, k):
    carry, z, alive, total = loop
    action = env_action(controller_action(theta, z, rnn.hidden(carry)), clip_dims)
    carry, z, reward, end = rnn.dream_step(rnn_params, carry, z, action, k, temperature)
    total = total + alive * reward
    return (carry, z, alive * (end < 0.5), total), None
  num = start_z.shape[0]
  loop = (rnn.initial(num), start_z, jnp.ones(num), jnp.zeros(num))
  return jax.lax.scan(step, loop, jax.random.split(key, horizon))[0][3]


def dream_start_latents(mu: np.ndarray, log_sigma: np.ndarray, episode_starts: np.ndarray,
                        where: str) -> tuple[np.ndarray, np.ndarray]:
  """V's q(z | frame), (mu, log sigma) [S, Z] each, of the frames dreams start from: every
  episode's first frame ('first', the reference code's initial_z) or every frame ('any')."""
  rows = episode_starts[:-1] if where == "first" else np.arange(len(mu))
  return mu[rows], log_sigma[rows]


def make_dream_fitness(rnn: MDNRNN, rnn_params, starts: tuple[np.ndarray, np.ndarray],
                       cfg, temperature: float) -> Callable:
  """(population [P, D], key) -> (mean dreamed return [P] over cfg.rollouts episodes each (cfg: the `controller` section), M sampling at `temperature`, 0 real env steps); each dream starts from z sampled from one of `starts` ((mu, log sigma) [S, Z] of V's q(z | frame) for real frames, as the reference code samples its initial z); one jitted call, the population sharded over the devices."""
  mesh = make_mesh()
  pop_sharding = NamedSharding(mesh, P("data"))
  start_mu, start_log_sigma = map(jnp.asarray, starts)

  def one(theta, key):
    k1, k2, k3 = jax.random.split(key, 3)
    rows = jax.random.randint(k1, (cfg.rollouts,), 0, start_mu.shape[0])
    z0 = sample_latent(start_mu[rows], start_log_sigma[rows], k3)
    return jnp.mean(dream_returns(rnn, rnn_params, theta, z0, k2, cfg.dream_horizon,
                                  temperature, tuple(cfg.clip_dims)))

  @jax.jit
  def returns(population, key):
    population = jax.lax.with_sharding_constraint(population, pop_sharding)
    return jax.vmap(one)(population, jax.random.split(key, population.shape[0]))
  return lambda population, key: (returns(population, key), 0)


def real_returns(vae: VAENet, vae_params, rnn: MDNRNN, rnn_params, thetas: np.ndarray, env,
                 max_steps: int, clip_dims: tuple[int, ...],
                 key: jax.Array) -> tuple[np.ndarray, int]:
  """(returns [N] of the first episode of each of env's N envs, env steps taken in those episodes), env i driven by controller thetas[i] ([N, D]) for at most max_steps steps; z_t is sampled from V's q(z | frame), h_t is M's state fed that z and a."""
  act = jax.jit(lambda carry, image, thetas, key: controller_step(
      vae, vae_params, rnn, rnn_params, thetas, carry, image, clip_dims, key))

  thetas = jnp.asarray(thetas)
  num = thetas.shape[0]
  if env.num_envs != num:
    raise ValueError(f"real_returns needs one env per controller: {env.num_envs} != {num}")
  step = env.reset()
  carry = rnn.initial(num)
  total, done, steps = np.zeros(num), np.zeros(num, bool), 0
  for t in range(max_steps):
    carry, action = act(carry, step["image"], thetas, jax.random.fold_in(key, t))
    step = env.step(np.asarray(action))
    steps += int(np.sum(~done))
    total += np.where(done, 0.0, step["reward"])
    done |= step["is_last"]
    if done.all():
      break
  return total, steps


def make_real_fitness(vae, vae_params, rnn, rnn_params, env, cfg) -> Callable:
  """(population [P, D], key) -> (mean real-env return [P] over `cfg.rollouts` episodes each, env steps taken); env has P x rollouts envs (candidate i drives envs i*R .. i*R+R-1)."""
  rollouts = cfg.rollouts

  def fitness(population, key):
    thetas = np.repeat(np.asarray(population), rollouts, axis=0)
    returns, steps = real_returns(vae, vae_params, rnn, rnn_params, thetas, env, cfg.max_steps,
                                  tuple(cfg.clip_dims), key)
    return jnp.asarray(returns.reshape(-1, rollouts).mean(1)), steps
  return fitness


# --------------------------------------------------------------------------- CMA-ES


def evolve(fitness: Callable, dim: int, cfg, key: jax.Array, path: str,
           progress: Callable[[Iterator], Iterator] = iter,
           start: np.ndarray | None = None, generations: int | None = None) -> dict:
  """CMA-ES (evosax) maximising fitness(population [P, D], key) -> (returns [P], real env steps) for `generations` (default cfg.generations) generations from theta = `start` (0 by default); after every generation its state and history are saved to `path` (written to a temporary name, then renamed), and a rerun resumes from there. Returns {'mean': [D] the final distribution mean, 'history': per generation mean / best / worst fitness, real env steps and seconds}."""
  import time

  from evosax.algorithms import CMA_ES
  check_population(cfg.population)
  es = CMA_ES(population_size=cfg.population, solution=jnp.zeros(dim))
  params = es.default_params.replace(std_init=cfg.init_std)
  ask, tell = jax.jit(es.ask), jax.jit(es.tell)
  init_key, key = jax.random.split(key)
  saved = load_evolution(path)
  if saved is None:
    mean = jnp.zeros(dim) if start is None else jnp.asarray(start)
    state, history = es.init(init_key, mean, params), []
  else:
    state, history = saved["state"], saved["history"]
  for generation in progress(range(len(history), generations or cfg.generations)):
    start = time.perf_counter()
    k_ask, k_fit = jax.random.split(jax.random.fold_in(key, generation))
    population, state = ask(k_ask, state, params)
    returns, env_steps = fitness(population, k_fit)
    returns = np.asarray(returns)
    state, _ = tell(k_ask, population, -jnp.asarray(returns), state, params)  # minimises
    history.append({"generation": generation + 1, "mean": float(returns.mean()),
                    "best": float(returns.max()), "worst": float(returns.min()),
                    "env_steps": int(env_steps), "seconds": time.perf_counter() - start})
    save_evolution(path, {"state": jax.device_get(state), "history": history})
  return {"mean": np.asarray(es.get_mean(state)), "history": history}


def save_evolution(path: str, value: dict) -> None:
  with open(path + ".tmp", "wb") as f:
    pickle.dump(value, f)
  os.replace(path + ".tmp", path)


def load_evolution(path: str) -> dict | None:
  """The saved evolution at `path`, None if there is none; one sentence if it cannot be read."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, "rb") as f:
      return pickle.load(f)
  except Exception as e:   # a truncated or foreign file: never overwrite it silently
    raise RunConfigError(f"{path} cannot be read ({type(e).__name__}): move it away to evolve "
                         f"that controller again.") from None
