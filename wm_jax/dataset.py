"""Offline datasets of trajectories: sharded .npz files and a JSON manifest, readable with numpy
alone (no wm_jax needed).

Written by `python -m experiments.collect`, read by `python -m experiments.train_offline`.
A dataset folder holds:

  manifest.json     {"format": "wm_jax.trajectories", "version": 1,
                     "spec": {"env": <protocol card: suite, task, protocol fields>,
                              "entries": {name: {"shape": [...], "dtype": str}},
                              "action": {"discrete", "num_actions", "dim", "low", "high"}},
                     "shards": [{"file", "steps", "episodes", "bytes", "sha256", "policy",
                                 "seed"}, ...]}
  shard_00000.npz   one array per entry, whole episodes back to back along axis 0, [S, ...]:
                    the replay's stored step (wm_jax/replay.py): the obs entries ('image'
                    uint8 [S, h, w, 3] and/or 'vector' float32 [S, D]), 'action' (the action
                    that led to this step, 0 where is_first), 'reward' float32 [S],
                    'is_first', 'is_last', 'is_terminal' bool [S].

Every shard holds whole episodes (is_first at each start, is_last at each end), so a dataset
splits into training and held-out episodes. A shard is written under a temporary name and
renamed, then the manifest is replaced the same way: a killed collect leaves the dataset as of
its last complete shard, and a rerun resumes from there. A shard file that the manifest does
not list is never overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import zipfile
from typing import Iterator

import jax
import numpy as np
from tqdm import tqdm

from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import UserError, read_json
from wm_jax.replay import stored_spec, to_stored

FORMAT, VERSION = "wm_jax.trajectories", 1
MANIFEST = "manifest.json"
SHARD_PATTERN = re.compile(r"shard_(\d{5,})\.npz$")
OBS_KEYS = ("image", "vector")


class DatasetError(UserError, ValueError):
  """A dataset folder that is missing, empty, damaged or of another spec than required."""


def dataset_spec(card: dict, spec: EnvSpec) -> dict:
  """The manifest's 'spec': the env's protocol card and the stored entries' shapes and dtypes."""
  entries = {name: {"shape": list(s.shape), "dtype": s.dtype}
             for name, s in stored_spec(spec).items()}
  return {"env": dict(card), "entries": entries, "action": dataclasses.asdict(spec.act)}


def env_spec(spec: dict) -> EnvSpec:
  """The EnvSpec (observation entries and actions) of a manifest's 'spec'."""
  obs = {name: ArraySpec(tuple(entry["shape"]), entry["dtype"])
         for name, entry in spec["entries"].items() if name in OBS_KEYS}
  return EnvSpec(obs=obs, act=ActionSpec(**spec["action"]))


def spec_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Dotted paths where two nested spec dicts differ, as 'path: a vs b' (a's order first)."""
  out = []
  for key in list(a) + [k for k in b if k not in a]:
    x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(x, dict) and isinstance(y, dict):
      out += spec_differences(x, y, f"{prefix}{key}.")
    elif x != y:
      out.append(f"{prefix}{key}: {x!r} vs {y!r}")
  return out


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_json_atomically(path: str, value) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def _read_manifest(directory: str) -> dict:
  """The manifest of `directory`, or one sentence on why there is none to read."""
  if not os.path.exists(directory):
    raise DatasetError(f"Dataset folder {directory} does not exist: write one with "
                       f"`python -m experiments.collect --out={directory}`.")
  if not os.path.isdir(directory):
    raise DatasetError(f"{directory} is a file, not a dataset folder: pass the folder that "
                       f"`experiments.collect --out` wrote.")
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    what = "is empty" if not os.listdir(directory) else f"has no {MANIFEST}"
    raise DatasetError(f"Dataset folder {directory} {what}: it is not a dataset written by "
                       f"`python -m experiments.collect`; collect one there or pass another "
                       f"--dataset.")
  manifest = read_json(path, DatasetError, "restore it from a backup or collect the dataset "
                       "again into a new folder")
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise DatasetError(f"{path} is not a {FORMAT} v{VERSION} manifest: pass a folder written "
                       f"by `python -m experiments.collect`.")
  return manifest


def load_shard(directory: str, entry: dict, spec: dict) -> dict[str, np.ndarray]:
  """Reads one shard listed in the manifest, checking size, checksum, entries and shapes."""
  path = os.path.join(directory, entry["file"])
  fix = "collect the dataset again into a new folder (or restore the file from a backup)"
  if not os.path.exists(path):
    raise DatasetError(f"Shard {path} listed in the manifest is missing: {fix}.")
  size = os.path.getsize(path)
  if size != entry["bytes"]:
    raise DatasetError(f"Shard {path} is truncated or damaged ({size:,} bytes, the manifest "
                       f"says {entry['bytes']:,}): {fix}.")
  if _sha256(path) != entry["sha256"]:
    raise DatasetError(f"Shard {path} is damaged (its checksum differs from the manifest's): "
                       f"{fix}.")
  try:
    with np.load(path) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DatasetError(f"Shard {path} cannot be read ({type(e).__name__}): {fix}.") from None
  for name, want in spec["entries"].items():
    got = arrays.get(name)
    shape = [entry["steps"]] + list(want["shape"])
    if got is None or list(got.shape) != shape or str(got.dtype) != want["dtype"]:
      found = "no such array" if got is None else f"{got.dtype} {list(got.shape)}"
      raise DatasetError(f"Shard {path} holds {name!r} as {found}, but the manifest says "
                         f"{want['dtype']} {shape}: {fix}.")
  return arrays


@dataclasses.dataclass
class Dataset:
  """A loaded dataset: `spec` (the manifest's), `steps` {entry: [S, ...]} of every shard back to
  back, and `episode_starts` int [E + 1] (episode e is steps[starts[e]:starts[e + 1]])."""
  directory: str
  spec: dict
  manifest: dict
  steps: dict[str, np.ndarray]
  episode_starts: np.ndarray

  @property
  def num_episodes(self) -> int:
    return len(self.episode_starts) - 1

  def episodes(self, indices) -> dict[str, np.ndarray]:
    """The episodes `indices`, back to back: {entry: [S', ...]} (a stream with is_first)."""
    parts = [np.arange(self.episode_starts[i], self.episode_starts[i + 1]) for i in indices]
    rows = np.concatenate(parts) if parts else np.zeros(0, int)
    return {k: v[rows] for k, v in self.steps.items()}


def load_dataset(directory: str) -> Dataset:
  """Loads and checks every shard of a dataset folder (one sentence on anything wrong)."""
  manifest = _read_manifest(directory)
  if not manifest["shards"]:
    raise DatasetError(f"Dataset folder {directory} holds no complete shard yet (its collect "
                       f"stopped before writing one): rerun the collect command to resume it.")
  shards = [load_shard(directory, entry, manifest["spec"]) for entry in manifest["shards"]]
  steps = {k: np.concatenate([s[k] for s in shards]) for k in manifest["spec"]["entries"]}
  starts = np.flatnonzero(steps["is_first"])
  ends = np.flatnonzero(steps["is_last"]) + 1
  if len(starts) != len(ends) or not np.array_equal(starts[1:], ends[:-1]) or starts[0] != 0:
    raise DatasetError(f"Dataset {directory} does not hold whole episodes (is_first and "
                       f"is_last do not alternate): collect it again into a new folder.")
  return Dataset(directory, manifest["spec"], manifest, steps,
                 np.concatenate([starts, ends[-1:]]))


def concatenate_datasets(datasets: list[Dataset]) -> Dataset:
  """One Dataset of several of the same spec, episodes back to back in the given order (its
  `directory` names them all, joined by commas); one sentence if their specs differ."""
  first = datasets[0]
  for other in datasets[1:]:
    diffs = spec_differences(first.spec, other.spec)
    if diffs:
      raise DatasetError(f"Datasets {first.directory} and {other.directory} have different "
                         f"specs ({'; '.join(diffs[:3])}): combine datasets of one env only.")
  offsets = np.cumsum([0] + [len(d.steps["is_first"]) for d in datasets[:-1]])
  starts = [d.episode_starts[:-1] + o for d, o in zip(datasets, offsets)]
  total = offsets[-1] + len(datasets[-1].steps["is_first"])
  shards = [shard for d in datasets for shard in d.manifest["shards"]]
  return Dataset(",".join(d.directory for d in datasets), first.spec,
                 {"spec": first.spec, "shards": shards},
                 {k: np.concatenate([d.steps[k] for d in datasets]) for k in first.steps},
                 np.concatenate(starts + [np.array([total])]))


def split_episodes(num_episodes: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
  """(training, held-out) episode indices: the last ceil(holdout * E) episodes are held out."""
  held = int(np.ceil(holdout * num_episodes))
  if not 0 < held < num_episodes:
    raise DatasetError(f"Holding out {holdout:.0%} of {num_episodes} episodes leaves "
                       f"{num_episodes - held} for training and {held} for evaluation: collect "
                       f"more episodes or change --holdout.")
  return np.arange(num_episodes - held), np.arange(num_episodes - held, num_episodes)


class DatasetWriter:
  """Appends whole episodes to a dataset folder, one shard per `shard_steps` steps or more.

  Opening an existing dataset resumes it (its spec must equal `spec`); a folder with files but
  no manifest is refused, never written into.
  """

  def __init__(self, directory: str, spec: dict, shard_steps: int):
    self.directory, self.spec, self.shard_steps = directory, spec, shard_steps
    if os.path.isdir(directory) and os.listdir(directory) and not os.path.exists(
        os.path.join(directory, MANIFEST)):
      raise DatasetError(f"{directory} holds files but no {MANIFEST}: it is not a dataset to "
                         f"resume; choose an empty or new --out.")
    if os.path.exists(os.path.join(directory, MANIFEST)):
      self.manifest = _read_manifest(directory)
      diffs = spec_differences(self.manifest["spec"], spec)
      if diffs:
        raise DatasetError(f"{directory} holds a dataset of another spec ({'; '.join(diffs[:3])})"
                           f": collect into a new --out, or use the same env settings to "
                           f"append to it.")
    else:
      try:
        os.makedirs(directory, exist_ok=True)
      except OSError as e:
        raise DatasetError(f"--out {directory} cannot be created ({e.strerror}): choose another "
                           f"path.") from None
      self.manifest = {"format": FORMAT, "version": VERSION, "spec": spec, "shards": []}
      _write_json_atomically(os.path.join(directory, MANIFEST), self.manifest)
    self._pending: list[dict[str, np.ndarray]] = []

  @property
  def steps(self) -> int:
    """Steps in complete shards."""
    return sum(entry["steps"] for entry in self.manifest["shards"])

  @property
  def episodes(self) -> int:
    return sum(entry["episodes"] for entry in self.manifest["shards"])

  @property
  def pending_steps(self) -> int:
    """Steps of the episodes queued for the next shard."""
    return sum(len(e["is_first"]) for e in self._pending)

  def _next_file(self) -> str:
    """The next shard name, after every shard file present (listed or left by a killed run)."""
    taken = [int(m.group(1)) for name in os.listdir(self.directory)
             if (m := SHARD_PATTERN.match(name))]
    return f"shard_{max(taken, default=-1) + 1:05d}.npz"

  def add_episode(self, episode: dict[str, np.ndarray], policy: str, seed: int) -> None:
    """Queues one whole episode {entry: [L, ...]}; writes a shard once enough steps queue."""
    self._pending.append(episode)
    if self.pending_steps >= self.shard_steps:
      self.flush(policy, seed)

  def flush(self, policy: str, seed: int) -> None:
    """Writes the queued episodes as one shard and lists it in the manifest."""
    if not self._pending:
      return
    arrays = {k: np.concatenate([e[k] for e in self._pending]).astype(v["dtype"])
              for k, v in self.spec["entries"].items()}
    name = self._next_file()
    path = os.path.join(self.directory, name)
    with open(path + ".tmp", "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(path + ".tmp", path)
    self.manifest["shards"].append({
        "file": name, "steps": int(len(arrays["is_first"])), "episodes": len(self._pending),
        "bytes": os.path.getsize(path), "sha256": _sha256(path), "policy": policy,
        "seed": seed})
    _write_json_atomically(os.path.join(self.directory, MANIFEST), self.manifest)
    self._pending = []


class EpisodeSplitter:
  """Cuts N env streams of stored steps into whole episodes."""

  def __init__(self, num_envs: int):
    self._open: list[list[dict]] = [[] for _ in range(num_envs)]

  def add(self, step: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """step: {entry: [N, ...]} -> every episode that ends here, {entry: [L, ...]}."""
    for i, steps in enumerate(self._open):
      if step["is_first"][i]:
        steps.clear()
      steps.append({k: v[i] for k, v in step.items()})
      if step["is_last"][i] and steps[0]["is_first"]:
        yield {k: np.stack([s[k] for s in steps]) for k in steps[0]}
        steps.clear()


def collect_episodes(env, agent, state, writer: DatasetWriter, steps: int, seed: int,
                     policy: str, explore: bool, progress: bool = True) -> None:
  """Steps `env` with `agent` (the Agent contract of wm_jax/agents/base.py) and hands whole
  episodes to `writer` until it holds `steps`; `policy` names the agent in the manifest."""
  act = jax.jit(agent.act, static_argnums=4)
  splitter = EpisodeSplitter(env.num_envs)
  key = jax.random.PRNGKey(seed)
  step = env.reset()
  carry = agent.initial_carry(env.num_envs)
  action = np.zeros((env.num_envs,) + env.spec.act.shape, env.spec.act.dtype)
  obs_keys = list(env.spec.obs) + ["reward", "is_first", "is_last", "is_terminal"]
  bar = tqdm(total=steps, initial=writer.steps, unit="step", disable=not progress,
             mininterval=1.0 if sys.stderr.isatty() else 30.0, desc=f"collect {env.task}")
  written = writer.steps
  while writer.steps < steps:
    stored = jax.device_get(to_stored(step, action, env.spec))
    for episode in splitter.add(stored):
      writer.add_episode(episode, policy, seed)
    if writer.steps + writer.pending_steps >= steps:
      writer.flush(policy, seed)
    bar.update(writer.steps - written)
    written = writer.steps
    key, act_key = jax.random.split(key)
    action, carry = act(state, carry, {k: step[k] for k in obs_keys}, act_key, explore)
    action = np.asarray(action)
    step = env.step(action)
  bar.close()
