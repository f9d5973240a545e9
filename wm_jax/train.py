"""The generic loop: collect -> replay -> update -> evaluate -> log -> checkpoint.

`train(config, workdir)` runs any method whose agent follows wm_jax/agents/base.py. The hot
path stays on device: the env Step crosses to the device once per env step (uint8 frames),
one jitted call stores it in replay and picks the next action, and updates sample and train
inside jit. Updates follow DreamerV3's train ratio: `train_ratio` replayed steps per env
step, i.e. N * train_ratio / (batch_size * batch_length) updates per loop iteration of N envs.

Run directory (see README): config.json, protocol.json, metrics.jsonl, scores.jsonl, tb/,
checkpoints/, done.json. Rerunning the same command resumes from the last checkpoint; SIGTERM
saves and exits; a config or protocol card that differs from the saved one (outside
`RESUMABLE_FIELDS`) and an unreadable checkpoint are refused with one sentence and leave the
run untouched. Update metrics stay on the device and are fetched every `run.metrics_every`
updates (one host sync), so updates queue asynchronously on accelerators.

`run.num_seeds=S` trains seeds seed..seed+S-1 in one process (`Seeds`): one vmapped act and
update over a leading seed axis, one checkpoint in workdir/checkpoints/, and per seed a run
directory workdir/seed_<seed>/ with the files above (but checkpoints/), which the report reads
as S runs.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import signal
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from wm_jax import parallel
from wm_jax.agents import check_agent_config, make_agent
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs import make_env, protocol_card
from wm_jax.envs.base import SeedStackedEnv, steps_on_device
from wm_jax.errors import NonFiniteLossError, RunConfigError, read_json
from wm_jax.logger import RunLogger, mean_metrics, trim_jsonl
from wm_jax.replay import check_fits, make_replay, replay_nbytes, to_stored


# ---------------------------------------------------------------------------------------------
# Run directory and config checks.

# Fields a resumed run may change (extending or re-scheduling a run, or memory only); any other
# difference between the saved and the given config refuses the resume.
RESUMABLE_FIELDS = ("run.steps", "run.eval_every", "run.eval_episodes", "run.log_every",
                    "run.checkpoint_every", "run.metrics_every", "run.collect_on_device",
                    "agent.tokenizer.microbatches")


# Fields added to a method's config after runs of it were saved, with the value that names how
# those runs trained: a saved config without the field reads as having that value (resume,
# wm_jax.trained.run_config).
_COMPONENT_AGENT_FIELDS = {"agent.world_model_batch_size": None,
                           "agent.schedule.actor_critic_every": 1,
                           "agent.actor_critic.net": "iris"}
ADDED_FIELDS = {"iris": {**_COMPONENT_AGENT_FIELDS, "agent.tokenizer.microbatches": 1,
                         "agent.actor_critic.zero_heads": False},
                "diamond": {**_COMPONENT_AGENT_FIELDS, "agent.actor_critic.zero_heads": True,
                            "agent.denoiser.per_pixel_cross_attn_depths": None}}


def with_added_fields(saved: dict) -> dict:
  """A saved config dict (config.json) with the ADDED_FIELDS of its method that it lacks."""
  saved = json.loads(json.dumps(saved))
  for path, value in ADDED_FIELDS.get(saved.get("method"), {}).items():
    *parents, leaf = path.split(".")
    node = saved
    for name in parents:
      node = node.setdefault(name, {})
    node.setdefault(leaf, value)
  return saved


def flatten_dict(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}: a nested config dict keyed by dotted paths."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten_dict(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_differences(saved: dict, given: dict, resumable=RESUMABLE_FIELDS) -> list[str]:
  """Fields (dotted paths) whose values differ, ignoring those a resume may change."""
  a, b = flatten_dict(saved), flatten_dict(given)
  return sorted(k for k in set(a) | set(b)
                if k not in resumable and a.get(k, "<absent>") != b.get(k, "<absent>"))


def _workdir_files(config, card: dict) -> dict:
  """name -> (content, what it is, how to resume) of the files that identify a run."""
  return {"config.json": (json.loads(config.to_json_best_effort()), "config",
                          "rerun with the saved config to resume it"),
          "protocol.json": (json.loads(json.dumps(card)), "protocol card",
                            "restore its protocol.json to resume it")}


def check_workdir(workdir: str, config, card: dict, resumable=RESUMABLE_FIELDS) -> bool:
  """Creates `workdir` if needed; for one that holds a run, checks that its config.json and
  protocol.json match `config` and `card` (one sentence if not). Writes no file.

  Returns True when the workdir already holds this run (resume).
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise RunConfigError(f"--workdir {workdir} is a file, not a directory: choose a directory "
                         f"path.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:  # a file in the path, no permission, a read-only disk
    raise RunConfigError(f"--workdir {workdir} cannot be created ({e.strerror}): choose "
                         f"another path.") from None
  resumed = os.path.exists(os.path.join(workdir, "config.json"))
  for name, (given, what, fix) in _workdir_files(config, card).items():
    path = os.path.join(workdir, name)
    if not (resumed and os.path.exists(path)):
      continue
    saved = read_json(path, RunConfigError, "restore it or use a new --workdir")
    if name == "config.json":
      saved = with_added_fields(saved)
    diffs = config_differences(saved, given, resumable)
    if diffs:
      flat_saved, flat_given = flatten_dict(saved), flatten_dict(given)
      shown = "; ".join(f"{k}: saved {flat_saved.get(k, '<absent>')!r}, given "
                        f"{flat_given.get(k, '<absent>')!r}" for k in diffs[:3])
      raise RunConfigError(
          f"{workdir} holds a run with a different {what} ({shown}); {fix}, or choose a new "
          f"--workdir.")
  return resumed


def write_workdir(workdir: str, config, card: dict) -> None:
  """Writes config.json and protocol.json (a resume may have extended run.steps and the like)."""
  for name, (given, _, _) in _workdir_files(config, card).items():
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(given, f, indent=2, sort_keys=True)


def prepare_workdir(workdir: str, config, card: dict, resumable=RESUMABLE_FIELDS) -> bool:
  """check_workdir, then write_workdir: a refused resume leaves the run untouched.

  Returns True when the workdir already holds this run (resume).
  """
  resumed = check_workdir(workdir, config, card, resumable)
  write_workdir(workdir, config, card)
  return resumed


def validate(config) -> None:
  """Rejects an impossible run config at start-up (before any env starts) with one sentence."""
  run = config.run
  for name in ("steps", "eval_every", "log_every", "checkpoint_every", "eval_episodes",
               "metrics_every", "num_seeds"):
    if run[name] <= 0:
      raise RunConfigError(f"run.{name}={run[name]} must be positive.")
  if config.env.num_envs <= 0 or config.env.eval_envs <= 0:
    raise RunConfigError("env.num_envs and env.eval_envs must be positive.")
  if run.train_ratio < 0:
    raise RunConfigError(f"run.train_ratio={run.train_ratio} must be >= 0.")
  if run.train_ratio > 0:
    if run.batch_length < 2:
      raise RunConfigError(f"run.batch_length={run.batch_length} must be at least 2.")
    check_fits(run.replay_capacity, config.env.num_envs, run.batch_length)
  check_agent_config(config.method, config.agent, config.run)


# ---------------------------------------------------------------------------------------------
# Episodes and evaluation.


class EpisodeTracker:
  """Sums raw rewards and counts steps per env until the scored episode ends (is_game_over)."""

  def __init__(self, num_envs: int):
    self.returns = np.zeros(num_envs, np.float64)
    self.lengths = np.zeros(num_envs, np.int64)

  def update(self, step: dict) -> list[tuple[int, float, int]]:
    """Adds one Step; returns (env index, return, length) of episodes that just ended."""
    self.returns += step["reward"]
    self.lengths += ~step["is_first"]
    done = np.flatnonzero(step["is_game_over"])
    finished = [(int(i), float(self.returns[i]), int(self.lengths[i])) for i in done]
    self.returns[done] = 0.0
    self.lengths[done] = 0
    return finished


def evaluate(agent, act, state, env, episodes: int, key) -> list[tuple[float, int]]:
  """Runs the greedy policy until every eval env finished its share of `episodes`.

  Each env contributes its first ceil(episodes / N) episodes, so short episodes are not
  over-represented; returns (return, length) pairs, `episodes` of them.
  """
  quota = math.ceil(episodes / env.num_envs)
  counts = np.zeros(env.num_envs, np.int64)
  results: list[tuple[int, float, int]] = []
  tracker = EpisodeTracker(env.num_envs)
  step = env.reset()
  carry = agent.initial_carry(env.num_envs)
  while counts.min() < quota:
    key, act_key = jax.random.split(key)
    action, carry = act(state, carry, step, act_key, False)
    step = env.step(np.asarray(action))
    for i, ret, length in tracker.update(step):
      if counts[i] < quota:
        counts[i] += 1
        results.append((counts[i], ret, length))
  results.sort(key=lambda r: r[0])  # round-robin over envs, then cut to the requested count
  return [(ret, length) for _, ret, length in results[:episodes]]


# ---------------------------------------------------------------------------------------------
# The loop.


class Seeds(NamedTuple):
  """The seeds one process trains (`run.num_seeds` of them from `seed` on).

  One seed: a plain run, no seed axis anywhere. Several: agent states, replays, keys, recurrent
  carries and env Steps are stacked on a leading seed axis [S, ...], and act, replay add and
  sample, and the update are one vmapped call over it; each seed keeps its own key chain, envs
  and run directory (`workdir/seed_<seed>/`), so it matches a single-seed run of that seed.
  """
  values: tuple[int, ...]

  @property
  def stacked(self) -> bool:
    return len(self.values) > 1

  def map(self, fn: Callable) -> Callable:
    """fn over one seed's arrays -> fn over the seed axis (vmapped) when seeds are stacked."""
    return jax.vmap(fn) if self.stacked else fn

  def stack(self, trees: list):
    """One pytree per seed -> one pytree with a leading seed axis (or the tree, for one seed)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees) if self.stacked else trees[0]

  def take(self, tree, index: int):
    """Seed number `index`'s slice of a stacked pytree (the tree itself, for one seed)."""
    return jax.tree.map(lambda x: x[index], tree) if self.stacked else tree

  def split(self, key, num: int = 2) -> tuple:
    """jax.random.split of every seed's key: `num` keys, each shaped like `key` ([2] or [S, 2])."""
    if not self.stacked:
      return tuple(jax.random.split(key, num))
    return tuple(jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num))(key), 0, 1))

  def workdirs(self, workdir: str) -> list[str]:
    """The run directory of each seed: `workdir` itself, or `workdir/seed_<seed>` per seed."""
    if not self.stacked:
      return [workdir]
    return [os.path.join(workdir, f"seed_{seed}") for seed in self.values]


def check_seed_layout(workdir: str, seeds: Seeds) -> None:
  """One sentence when `workdir` holds a run of the other kind (one seed / several seeds)."""
  single = os.path.exists(os.path.join(workdir, "config.json"))
  several = glob.glob(os.path.join(workdir, "seed_*", "config.json"))
  if seeds.stacked and single:
    raise RunConfigError(f"{workdir} holds a single-seed run: choose a new --workdir for "
                         f"run.num_seeds={len(seeds.values)}.")
  if not seeds.stacked and several:
    raise RunConfigError(f"{workdir} holds a run of several seeds (seed_*/): rerun it with its "
                         f"run.num_seeds or choose a new --workdir.")


class StopFlag:
  """Set by SIGTERM/SIGINT; the loop then checkpoints and returns."""

  def __init__(self):
    self.signal = None
    self._previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _crossed(before: int, after: int, every: int) -> bool:
  return after // every > before // every


def phased_updates(agent, mesh, seeds: Seeds = Seeds((0,))) -> Callable[[int], Callable]:
  """updates -> the data-parallel jitted update to run at that update count: one function, or
  for a scheduled agent one per phase (`agent.schedule`, compiled when first reached).
  With stacked `seeds` the update is vmapped over the seed axis (batch axis 1)."""
  batch_axis = 1 if seeds.stacked else 0
  if agent.schedule is None:
    update = parallel.data_parallel(seeds.map(agent.update), mesh, batch_axis)
    return lambda updates: update
  compiled = {}

  def update_for(updates: int):
    phase = agent.schedule(updates)
    if phase not in compiled:
      compiled[phase] = parallel.data_parallel(
          seeds.map(functools.partial(agent.update, phase=phase)), mesh, batch_axis)
    return compiled[phase]
  return update_for


# Collection: one loop iteration stores (obs_t, a_{t-1}) in replay, picks a_t and steps the N
# envs. On the host that is one device call and one env.step per iteration; for on-device envs
# (envs/base.py) `make_device_collector` runs many iterations in one jitted call.

DEVICE_ITERATIONS = 256   # most iterations per on-device collection call
TRACKED = ("reward", "is_first", "is_game_over")   # what EpisodeTracker reads of each step


def store_and_act(agent, replay, spec, seeds: Seeds) -> Callable:
  """(state, carry, replay_state, obs, prev_action, key) -> (action, carry, replay_state): the
  device half of a loop iteration (no replay, when the agent does not learn: replay_state
  stays None), vmapped over stacked seeds."""
  def iteration(state, carry, replay_state, obs, prev_action, key):
    if replay is not None:
      replay_state = replay.add(replay_state, to_stored(obs, prev_action, spec))
    action, carry = agent.act(state, carry, obs, key, True)
    return action, carry, replay_state
  return seeds.map(iteration)


def make_device_collector(agent, replay, env, seeds: Seeds, obs_keys) -> Callable:
  """Up to DEVICE_ITERATIONS loop iterations (store -> act -> env.device_step) in one jitted
  `lax.fori_loop` for an on-device env: the host loop's iterations, same keys, no host round
  trip per env step.

  collect(state, key, carry, replay_state, step, prev_action, env_carry, iterations)
      -> (key, carry, replay_state, step, prev_action, env_carry, tracked)
  tracked: 'reward', 'is_first', 'is_game_over' of each new step, [DEVICE_ITERATIONS, (S,) N]
  (rows from `iterations` on stay zero).
  """
  act_and_store = store_and_act(agent, replay, env.spec, seeds)

  def collect(state, key, carry, replay_state, step, prev_action, env_carry, iterations):
    tracked = {k: jnp.zeros((DEVICE_ITERATIONS,) + np.shape(step[k]), step[k].dtype)
               for k in TRACKED}

    def iteration(i, loop):
      key, carry, replay_state, step, prev_action, env_carry, tracked = loop
      key, act_key = seeds.split(key)
      action, carry, replay_state = act_and_store(state, carry, replay_state,
                                                  _select(step, obs_keys), prev_action, act_key)
      env_carry, step = env.device_step(env_carry, action)
      tracked = {k: v.at[i].set(step[k]) for k, v in tracked.items()}
      return (key, carry, replay_state, step, action.astype(prev_action.dtype), env_carry,
              tracked)
    return jax.lax.fori_loop(0, iterations, iteration, (key, carry, replay_state, step,
                                                        prev_action, env_carry, tracked))
  return jax.jit(collect, donate_argnums=3)   # the buffer is updated in place


def iterations_to_next_event(counters: dict, num_envs: int, run, credit_per_iteration: float,
                             limit: int = DEVICE_ITERATIONS) -> int:
  """How many loop iterations the on-device collector may run before the host must act: up
  to the first after which an update is due, a log / eval / checkpoint boundary is crossed or
  the run ends; at most `limit`. Replays the loop's own credit sums, so updates follow the same
  env steps as in the host loop."""
  now, credit = counters["agent_step"], counters["update_credit"]
  for iterations in range(1, limit + 1):
    before, now = now, now + num_envs
    if credit_per_iteration and now >= run.learning_starts:
      credit += credit_per_iteration
      if credit >= 1.0:
        return iterations
    boundaries = (run.log_every, run.eval_every, run.checkpoint_every)
    if now >= run.steps or any(_crossed(before, now, every) for every in boundaries):
      return iterations
  return limit


def _keep_replay(tree: dict, replay_state) -> None:
  """Puts the updated replay into the checkpointed tree (None: the agent keeps no replay)."""
  if replay_state is not None:
    tree["replay"] = replay_state


def _select(step: dict, keys) -> dict:
  return {k: step[k] for k in keys}


def _seed_config(config, seed: int):
  """A copy of `config` for one of its seeds (what that seed's run directory records)."""
  seed_config = config.copy_and_resolve_references()
  seed_config.seed = seed
  return seed_config


def _make_envs(config, seeds: Seeds, eval_mode: bool):
  """The training (or evaluation) envs of every seed: one BatchedEnv, or a SeedStackedEnv."""
  num = config.env.num_envs
  if eval_mode:
    num = min(config.env.eval_envs, config.run.eval_episodes)
  envs = [make_env(config.env.suite, config.env.task, num, seed + (10_000 if eval_mode else 0),
                   eval_mode=eval_mode, **config.env.protocol) for seed in seeds.values]
  return SeedStackedEnv(envs) if seeds.stacked else envs[0]


def train(config, workdir: str, progress: bool = True) -> dict:
  """Runs (or resumes) one training run in `workdir`, or `run.num_seeds` seeds of it stacked in
  one process (Seeds); returns the final counters.

  Every check that can refuse the run (config, batch split over the devices, env names, a
  resume against the saved config and protocol card) comes before the workdir is written.
  """
  validate(config)
  if jax.process_count() > 1:
    raise RunConfigError(
        f"the training loop runs in one process, not {jax.process_count()}: its replay, "
        f"checkpoints and logs are per process, so start one run per host (the sweep's Ray "
        f"launcher does); across processes only the data-parallel update is tested.")
  run = config.run
  seeds = Seeds(tuple(config.seed + i for i in range(run.num_seeds)))
  mesh = parallel.make_mesh()
  if run.train_ratio > 0:
    parallel.check_batch_divides(run.batch_size, mesh)
  check_seed_layout(workdir, seeds)
  env = _make_envs(config, seeds, eval_mode=False)
  eval_env = _make_envs(config, seeds, eval_mode=True)
  card = {**protocol_card(env), "method": config.method, "variant": config.variant,
          "frames_per_step": env.frames_per_step}
  seed_configs = [_seed_config(config, seed) if seeds.stacked else config
                  for seed in seeds.values]
  seed_dirs = seeds.workdirs(workdir)
  resumed = [check_workdir(d, c, card) for d, c in zip(seed_dirs, seed_configs)]
  for seed_dir, seed_config in zip(seed_dirs, seed_configs):
    write_workdir(seed_dir, seed_config, card)

  agent = make_agent(config.method, config.agent, env.spec)
  learning = agent.update is not None and run.train_ratio > 0
  keys, states = [], []
  for seed in seeds.values:
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    keys.append(key)
    states.append(agent.init(init_key))
  tree = {"agent": parallel.replicate(seeds.stack(states), mesh), "key": seeds.stack(keys)}
  replay = None
  if learning:
    replay = make_replay(env.spec, env.num_envs, run.replay_capacity, run.batch_size,
                         run.batch_length)
    print(f"replay: {run.replay_capacity:,} steps"
          f"{f' per seed x {len(seeds.values)} seeds' if seeds.stacked else ''}, "
          f"{len(seeds.values) * replay_nbytes(env.spec, run.replay_capacity) / 2**30:.2f} GiB "
          f"on device", file=sys.stderr)
    tree["replay"] = seeds.stack([replay.init() for _ in seeds.values])

  counters = {"agent_step": 0, "updates": 0, "update_credit": 0.0, "eval_round": 0,
              "wall_seconds": 0.0}
  ckpt = Checkpointer(workdir, keep=run.keep_checkpoints)
  restored = ckpt.restore(tree)
  if restored is not None:
    tree, counters = restored
    print(f"resuming {workdir} from agent step {counters['agent_step']:,}", file=sys.stderr)
  for seed_dir, was_resumed in zip(seed_dirs, resumed):
    if restored is not None or was_resumed:   # -1: killed before its first checkpoint
      for name in ("metrics.jsonl", "scores.jsonl"):
        trim_jsonl(os.path.join(seed_dir, name),
                   counters["agent_step"] if restored is not None else -1)

  loggers = [RunLogger(seed_dir, env.frames_per_step,
                       {"suite": config.env.suite, "task": config.env.task, "seed": seed})
             for seed_dir, seed in zip(seed_dirs, seeds.values)]
  stop = StopFlag()
  try:
    counters = _loop(config, seeds, seed_dirs, agent, replay, env, eval_env, tree, counters,
                     ckpt, loggers, mesh, stop, progress)
  finally:
    stop.restore()
    for logger in loggers:
      logger.close()
    env.close()
    eval_env.close()
    ckpt.close()
  return counters


def _loop(config, seeds, seed_dirs, agent, replay, env, eval_env, tree, counters, ckpt, loggers,
          mesh, stop, progress):
  run = config.run
  spec = env.spec
  num_envs = env.num_envs
  num_seeds = len(seeds.values)
  obs_keys = list(spec.obs) + ["reward", "is_first", "is_last", "is_terminal"]
  eval_act = jax.jit(agent.act, static_argnums=4)   # one seed at a time, as in a single run
  updates_per_iter = num_envs * run.train_ratio / (run.batch_size * run.batch_length)
  credit_per_iter = updates_per_iter if replay is not None else 0.0
  on_device = run.collect_on_device and steps_on_device(env)
  if on_device:
    collect_on_device = make_device_collector(agent, replay, env, seeds, obs_keys)
  else:  # the buffer is updated in place
    collect = jax.jit(store_and_act(agent, replay, spec, seeds), donate_argnums=2)

  if replay is not None:
    sample = jax.jit(seeds.map(replay.sample))
    can_sample_all = jax.jit(lambda state: jnp.all(seeds.map(replay.can_sample)(state)))
    update_for = phased_updates(agent, mesh, seeds)

  t_start, wall_before = time.time(), counters["wall_seconds"]
  queued: list[dict] = []          # device metrics of updates not yet fetched
  pending_metrics: list[list[dict]] = [[] for _ in seeds.values]  # per seed, since the last log
  last_good = {"agent": tree["agent"]}  # agent state as of the last finite fetch

  def fetch_metrics():
    """One device sync for all queued updates' metrics; stops on a non-finite loss."""
    for metrics in jax.device_get(queued):
      _check_finite(metrics, counters["agent_step"], save_last_good, len(queued), seeds)
      for i, pending in enumerate(pending_metrics):
        pending.append(seeds.take(metrics, i))
    queued.clear()
    last_good["agent"] = tree["agent"]

  def save():
    fetch_metrics()   # a checkpoint only ever holds a state whose losses were checked
    counters["wall_seconds"] = wall_before + time.time() - t_start
    ckpt.save(counters["agent_step"], tree, counters)

  def save_last_good():
    tree["agent"] = last_good["agent"]
    counters["wall_seconds"] = wall_before + time.time() - t_start
    ckpt.save(counters["agent_step"], tree, counters)

  trackers = [EpisodeTracker(num_envs) for _ in seeds.values]
  step = env.reset()
  carry = seeds.stack([agent.initial_carry(num_envs) for _ in seeds.values])
  prev_action = np.zeros(((num_seeds,) if seeds.stacked else ()) + (num_envs,) + spec.act.shape,
                         spec.act.dtype)
  can_sample = False   # the replay only grows, so once it can sample it always can
  last_eval = [float("nan")] * num_seeds
  t_log, s_log = time.time(), counters["agent_step"]
  bar = tqdm(total=run.steps, initial=counters["agent_step"], unit="step", disable=not progress,
             mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True,
             desc=f"{config.method} {config.env.task}"
                  f"{f' x {num_seeds} seeds' if seeds.stacked else ''}")

  env_carry = env.device_carry() if on_device else None

  def collect_on_host() -> list[dict]:
    """One loop iteration: one device call to store and act, one env step; [its Step]."""
    nonlocal carry, prev_action, step
    tree["key"], act_key = seeds.split(tree["key"])
    action, carry, replay_state = collect(tree["agent"], carry, tree.get("replay"),
                                          _select(step, obs_keys), prev_action, act_key)
    _keep_replay(tree, replay_state)
    prev_action = np.asarray(action)
    step = env.step(prev_action)
    return [step]

  def collect_iterations_on_device() -> list[dict]:
    """The iterations up to the next update or boundary in one call; their tracked flags."""
    nonlocal carry, prev_action, step, env_carry
    iterations = iterations_to_next_event(counters, num_envs, run, credit_per_iter)
    tree["key"], carry, replay_state, step, prev_action, env_carry, tracked = (
        collect_on_device(tree["agent"], tree["key"], carry, tree.get("replay"), step,
                          prev_action, env_carry, iterations))
    _keep_replay(tree, replay_state)
    tracked = jax.device_get(tracked)
    return [{k: v[i] for k, v in tracked.items()} for i in range(iterations)]

  while counters["agent_step"] < run.steps and stop.signal is None:
    before = counters["agent_step"]
    for new_step in (collect_iterations_on_device() if on_device else collect_on_host()):
      counters["agent_step"] = now = counters["agent_step"] + num_envs
      for i, (tracker, logger) in enumerate(zip(trackers, loggers)):
        for _, ret, length in tracker.update(seeds.take(new_step, i)):
          logger.score("train", now, ret, length)
      if replay is not None and now >= run.learning_starts:
        counters["update_credit"] += updates_per_iter
    bar.update(now - before)

    if replay is not None and now >= run.learning_starts:
      can_sample = can_sample or bool(can_sample_all(tree["replay"]))
      while counters["update_credit"] >= 1.0 and can_sample:
        # Updates queue on the device; their metrics are fetched every run.metrics_every
        # updates (the 2023 code's jax.metrics_every), not after each one.
        tree["key"], sample_key, update_key = seeds.split(tree["key"], 3)
        batch = parallel.shard_batch(sample(tree["replay"], sample_key), mesh,
                                     1 if seeds.stacked else 0)
        update = update_for(counters["updates"])
        tree["agent"], metrics = update(tree["agent"], batch, update_key)
        queued.append(metrics)
        counters["updates"] += 1
        counters["update_credit"] -= 1.0
        if len(queued) >= run.metrics_every:
          fetch_metrics()

    if _crossed(before, now, run.log_every) or now >= run.steps:
      fetch_metrics()
      elapsed = time.time() - t_log
      shared = {"steps_per_second": (now - s_log) / max(elapsed, 1e-9),
                "updates": counters["updates"]}
      for logger, pending in zip(loggers, pending_metrics):
        values = dict(shared)
        if pending:
          values.update(mean_metrics(pending))
        logger.metrics(now, values)
        pending.clear()
      t_log, s_log = time.time(), now
    if _crossed(before, now, run.eval_every) or now >= run.steps:
      tree["key"], eval_key = seeds.split(tree["key"])
      eval_envs = eval_env.envs if seeds.stacked else [eval_env]
      for i, (logger, seed_env) in enumerate(zip(loggers, eval_envs)):
        results = evaluate(agent, eval_act, seeds.take(tree["agent"], i), seed_env,
                           run.eval_episodes, seeds.take(eval_key, i))
        for ret, length in results:
          logger.score("eval", now, ret, length, eval_round=counters["eval_round"])
        last_eval[i] = float(np.mean([r for r, _ in results]))
      counters["eval_round"] += 1
      bar.set_postfix(eval_return=f"{np.mean(last_eval):.1f}")
    if _crossed(before, now, run.checkpoint_every) or now >= run.steps:
      save()
  bar.close()

  if stop.signal is not None:
    save()
    print(f"{stop.signal}: saved a checkpoint at agent step {counters['agent_step']:,}; rerun "
          f"the same command to resume.", file=sys.stderr)
    return counters
  counters["wall_seconds"] = wall_before + time.time() - t_start
  for seed_dir, seed_eval in zip(seed_dirs, last_eval):
    done = {**counters, "env_frame": counters["agent_step"] * env.frames_per_step,
            "last_eval_return": seed_eval}
    with open(os.path.join(seed_dir, "done.json"), "w") as f:
      json.dump(done, f, indent=2)
  return counters


def _check_finite(metrics: dict, agent_step: int, save_last_good, window: int,
                  seeds: Seeds) -> None:
  """Saves the last good state and stops when a loss term is NaN or inf (found in a fetch of
  `window` updates); with stacked seeds, names the first seed where it is."""
  for name, value in metrics.items():
    bad = np.flatnonzero(~np.isfinite(np.reshape(value, -1))) if name.endswith("_loss") else []
    if len(bad):
      save_last_good()
      where = f" of seed {seeds.values[bad[0]]}" if seeds.stacked else ""
      raise NonFiniteLossError(
          f"Loss term {name!r}{where} became {float(np.reshape(value, -1)[bad[0]])} at agent "
          f"step {agent_step:,} (within the last {window} updates); the last good state is "
          f"checkpointed. Lower the learning rate or enable gradient clipping, then rerun to "
          f"resume.")
