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
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import time
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from wm_jax import parallel
from wm_jax.agents import check_agent_config, make_agent
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs import make_env, protocol_card
from wm_jax.errors import NonFiniteLossError, RunConfigError, read_json
from wm_jax.logger import RunLogger, trim_jsonl
from wm_jax.replay import check_fits, make_replay, replay_nbytes, to_stored


# ---------------------------------------------------------------------------------------------
# Run directory and config checks.

# Fields a resumed run may change (extending or re-scheduling a run); any other difference
# between the saved and the given config refuses the resume.
RESUMABLE_FIELDS = ("run.steps", "run.eval_every", "run.eval_episodes", "run.log_every",
                    "run.checkpoint_every", "run.metrics_every")


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


def prepare_workdir(workdir: str, config, card: dict, resumable=RESUMABLE_FIELDS) -> bool:
  """Writes config.json and protocol.json (`card`) into a new workdir; for an existing one
  first checks that both match, so a refused resume leaves the run untouched.

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
  files = {"config.json": (json.loads(config.to_json_best_effort()), "config",
                           "rerun with the saved config to resume it"),
           "protocol.json": (json.loads(json.dumps(card)), "protocol card",
                             "restore its protocol.json to resume it")}
  resumed = os.path.exists(os.path.join(workdir, "config.json"))
  for name, (given, what, fix) in files.items():
    path = os.path.join(workdir, name)
    if not (resumed and os.path.exists(path)):
      continue
    saved = read_json(path, RunConfigError, "restore it or use a new --workdir")
    diffs = config_differences(saved, given, resumable)
    if diffs:
      flat_saved, flat_given = flatten_dict(saved), flatten_dict(given)
      shown = "; ".join(f"{k}: saved {flat_saved.get(k, '<absent>')!r}, given "
                        f"{flat_given.get(k, '<absent>')!r}" for k in diffs[:3])
      raise RunConfigError(
          f"{workdir} holds a run with a different {what} ({shown}); {fix}, or choose a new "
          f"--workdir.")
  for name, (given, _, _) in files.items():  # a resume may extend run.steps and the like
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(given, f, indent=2, sort_keys=True)
  return resumed


def validate(config) -> None:
  """Rejects an impossible run config at start-up (before any env starts) with one sentence."""
  run = config.run
  for name in ("steps", "eval_every", "log_every", "checkpoint_every", "eval_episodes",
               "metrics_every"):
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


def phased_updates(agent, mesh) -> Callable[[int], Callable]:
  """updates -> the data-parallel jitted update to run at that update count: one function, or
  for a scheduled agent one per phase (`agent.schedule`, compiled when first reached)."""
  if agent.schedule is None:
    update = parallel.data_parallel(agent.update, mesh)
    return lambda updates: update
  compiled = {}

  def update_for(updates: int):
    phase = agent.schedule(updates)
    if phase not in compiled:
      compiled[phase] = parallel.data_parallel(functools.partial(agent.update, phase=phase), mesh)
    return compiled[phase]
  return update_for


def _select(step: dict, keys) -> dict:
  return {k: step[k] for k in keys}


def train(config, workdir: str, progress: bool = True) -> dict:
  """Runs (or resumes) one training run in `workdir`; returns the final counters.

  Every check that can refuse the run (config, batch split over the devices, env names, a
  resume against the saved config and protocol card) comes before the workdir is written.
  """
  validate(config)
  if jax.process_count() > 1:
    raise RunConfigError(
        f"the training loop runs in one process, not {jax.process_count()}: its replay, "
        f"checkpoints and logs are per process, so start one run per host (the sweep's Ray "
        f"launcher does); across processes only the data-parallel update is tested.")
  run, seed = config.run, config.seed
  mesh = parallel.make_mesh()
  if run.train_ratio > 0:
    parallel.check_batch_divides(run.batch_size, mesh)
  env = make_env(config.env.suite, config.env.task, config.env.num_envs, seed,
                 **config.env.protocol)
  eval_env = make_env(config.env.suite, config.env.task,
                      min(config.env.eval_envs, run.eval_episodes), seed + 10_000,
                      eval_mode=True, **config.env.protocol)
  card = {**protocol_card(env), "method": config.method, "variant": config.variant,
          "frames_per_step": env.frames_per_step}
  resumed = prepare_workdir(workdir, config, card)

  agent = make_agent(config.method, config.agent, env.spec)
  learning = agent.update is not None and run.train_ratio > 0
  key, init_key = jax.random.split(jax.random.PRNGKey(seed))
  state = parallel.replicate(agent.init(init_key), mesh)

  tree = {"agent": state, "key": key}
  replay = None
  if learning:
    replay = make_replay(env.spec, env.num_envs, run.replay_capacity, run.batch_size,
                         run.batch_length)
    print(f"replay: {run.replay_capacity:,} steps, "
          f"{replay_nbytes(env.spec, run.replay_capacity) / 2**30:.2f} GiB on device",
          file=sys.stderr)
    tree["replay"] = replay.init()

  counters = {"agent_step": 0, "updates": 0, "update_credit": 0.0, "eval_round": 0,
              "wall_seconds": 0.0}
  ckpt = Checkpointer(workdir, keep=run.keep_checkpoints)
  restored = ckpt.restore(tree)
  if restored is not None:
    tree, counters = restored
    for name in ("metrics.jsonl", "scores.jsonl"):
      trim_jsonl(os.path.join(workdir, name), counters["agent_step"])
    print(f"resuming {workdir} from agent step {counters['agent_step']:,}", file=sys.stderr)
  elif resumed:
    for name in ("metrics.jsonl", "scores.jsonl"):  # killed before its first checkpoint
      trim_jsonl(os.path.join(workdir, name), -1)

  logger = RunLogger(workdir, env.frames_per_step,
                     {"suite": config.env.suite, "task": config.env.task, "seed": seed})
  stop = StopFlag()
  try:
    counters = _loop(config, workdir, agent, replay, env, eval_env, tree, counters, ckpt, logger,
                     mesh, stop, progress)
  finally:
    stop.restore()
    logger.close()
    env.close()
    eval_env.close()
    ckpt.close()
  return counters


def _loop(config, workdir, agent, replay, env, eval_env, tree, counters, ckpt, logger, mesh,
          stop, progress):
  run = config.run
  spec = env.spec
  num_envs = env.num_envs
  obs_keys = list(spec.obs) + ["reward", "is_first", "is_last", "is_terminal"]
  act = jax.jit(agent.act, static_argnums=4)
  updates_per_iter = num_envs * run.train_ratio / (run.batch_size * run.batch_length)

  if replay is not None:
    def collect(state, carry, replay_state, step, prev_action, key):
      """Stores (obs_t, a_{t-1}) and picks a_t from obs_t, in one device call."""
      replay_state = replay.add(replay_state, to_stored(step, prev_action, spec))
      action, carry = agent.act(state, carry, step, key, True)
      return action, carry, replay_state
    collect = jax.jit(collect, donate_argnums=2)  # the buffer is updated in place
    sample = jax.jit(replay.sample)
    update_for = phased_updates(agent, mesh)

  t_start, wall_before = time.time(), counters["wall_seconds"]
  queued: list[dict] = []          # device metrics of updates not yet fetched
  pending_metrics: list[dict] = []  # host metrics since the last log line
  last_good = {"agent": tree["agent"]}  # agent state as of the last finite fetch

  def fetch_metrics():
    """One device sync for all queued updates' metrics; stops on a non-finite loss."""
    for metrics in jax.device_get(queued):
      _check_finite(metrics, counters["agent_step"], save_last_good, len(queued))
      pending_metrics.append(metrics)
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

  tracker = EpisodeTracker(num_envs)
  step = env.reset()
  carry = agent.initial_carry(num_envs)
  prev_action = np.zeros((num_envs,) + spec.act.shape, spec.act.dtype)
  can_sample = False   # the replay only grows, so once it can sample it always can
  last_eval = float("nan")
  t_log, s_log = time.time(), counters["agent_step"]
  bar = tqdm(total=run.steps, initial=counters["agent_step"], unit="step", disable=not progress,
             mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True,
             desc=f"{config.method} {config.env.task}")

  while counters["agent_step"] < run.steps and stop.signal is None:
    tree["key"], act_key = jax.random.split(tree["key"])
    if replay is not None:
      action, carry, tree["replay"] = collect(tree["agent"], carry, tree["replay"],
                                              _select(step, obs_keys),
                                              prev_action, act_key)
    else:
      action, carry = act(tree["agent"], carry, _select(step, obs_keys), act_key, True)
    prev_action = np.asarray(action)
    step = env.step(prev_action)
    before = counters["agent_step"]
    counters["agent_step"] = now = before + num_envs
    bar.update(num_envs)
    for _, ret, length in tracker.update(step):
      logger.score("train", now, ret, length)

    if replay is not None and now >= run.learning_starts:
      counters["update_credit"] += updates_per_iter
      can_sample = can_sample or bool(replay.can_sample(tree["replay"]))
      while counters["update_credit"] >= 1.0 and can_sample:
        # Updates queue on the device; their metrics are fetched every run.metrics_every
        # updates (the 2023 code's jax.metrics_every), not after each one.
        tree["key"], sample_key, update_key = jax.random.split(tree["key"], 3)
        batch = parallel.shard_batch(sample(tree["replay"], sample_key), mesh)
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
      values = {"steps_per_second": (now - s_log) / max(elapsed, 1e-9),
                "updates": counters["updates"]}
      if pending_metrics:
        values.update({k: float(np.mean([m[k] for m in pending_metrics]))
                       for k in pending_metrics[0]})
      logger.metrics(now, values)
      pending_metrics.clear()
      t_log, s_log = time.time(), now
    if _crossed(before, now, run.eval_every) or now >= run.steps:
      tree["key"], eval_key = jax.random.split(tree["key"])
      results = evaluate(agent, act, tree["agent"], eval_env, run.eval_episodes, eval_key)
      for ret, length in results:
        logger.score("eval", now, ret, length, eval_round=counters["eval_round"])
      counters["eval_round"] += 1
      last_eval = float(np.mean([r for r, _ in results]))
      bar.set_postfix(eval_return=f"{last_eval:.1f}")
    if _crossed(before, now, run.checkpoint_every) or now >= run.steps:
      save()
  bar.close()

  if stop.signal is not None:
    save()
    print(f"{stop.signal}: saved a checkpoint at agent step {counters['agent_step']:,}; rerun "
          f"the same command to resume.", file=sys.stderr)
    return counters
  counters["wall_seconds"] = wall_before + time.time() - t_start
  done = {**counters, "env_frame": counters["agent_step"] * env.frames_per_step,
          "last_eval_return": last_eval}
  with open(os.path.join(workdir, "done.json"), "w") as f:
    json.dump(done, f, indent=2)
  return counters


def _check_finite(metrics: dict, agent_step: int, save_last_good, window: int) -> None:
  """Saves the last good state and stops when a loss term is NaN or inf (found in a fetch of `window` updates)."""
  for name, value in metrics.items():
    if name.endswith("_loss") and not np.all(np.isfinite(value)):
      save_last_good()
      raise NonFiniteLossError(
          f"Loss term {name!r} became {float(value)} at agent step {agent_step:,} (within "
          f"the last {window} updates); the last good state is checkpointed. Lower the "
          f"learning rate or enable gradient clipping, then rerun to resume.")
