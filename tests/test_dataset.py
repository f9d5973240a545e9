"""Offline datasets (wm_jax/dataset.py, experiments.collect): shards of whole episodes readable
with numpy alone, resume, refused specs, and one sentence for every damaged dataset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wm_jax.dataset import (DatasetError, DatasetWriter, EpisodeSplitter, concatenate_datasets,
                            dataset_spec, env_spec, load_dataset, split_episodes)
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = EnvSpec(obs={"image": ArraySpec((8, 8, 3), "uint8")},
               act=ActionSpec(discrete=True, num_actions=3))
CARD = {"image_size": 8, "suite": "toy", "task": "t"}


def _episode(length: int, value: int) -> dict:
  """One episode of `length` steps whose frames all equal `value`."""
  first, last = np.zeros(length, bool), np.zeros(length, bool)
  first[0], last[-1] = True, True
  return {"image": np.full((length, 8, 8, 3), value, np.uint8),
          "action": np.arange(length, dtype=np.int32) % 3, "reward": np.ones(length, np.float32),
          "is_first": first, "is_last": last, "is_terminal": last.copy()}


def _write(directory, lengths, shard_steps=10, spec=None):
  writer = DatasetWriter(str(directory), spec or dataset_spec(CARD, SPEC), shard_steps)
  for i, length in enumerate(lengths):
    writer.add_episode(_episode(length, i), "random", 0)
  writer.flush("random", 0)
  return writer


def test_shards_hold_whole_episodes_and_read_back_with_numpy_alone(tmp_path):
  writer = _write(tmp_path / "d", [4, 7, 3, 9, 5])
  manifest = json.load(open(tmp_path / "d" / "manifest.json"))
  # Episodes queue until a shard holds >= 10 steps: [4, 7] | [3, 9] | [5].
  assert [s["steps"] for s in manifest["shards"]] == [11, 12, 5]
  assert [s["episodes"] for s in manifest["shards"]] == [2, 2, 1]
  assert writer.steps == 28 and writer.episodes == 5
  with np.load(tmp_path / "d" / manifest["shards"][1]["file"]) as shard:   # no wm_jax needed
    assert shard["image"].shape == (12, 8, 8, 3) and shard["is_first"].sum() == 2
  data = load_dataset(str(tmp_path / "d"))
  assert data.num_episodes == 5 and data.episode_starts.tolist() == [0, 4, 11, 14, 23, 28]
  third = data.episodes([2])
  assert third["image"].shape[0] == 3 and np.all(third["image"] == 2)
  assert env_spec(data.spec) == SPEC


def test_episode_splitter_cuts_env_streams_at_episode_ends():
  splitter = EpisodeSplitter(2)
  firsts = [[1, 1], [0, 0], [0, 1], [1, 0]]
  lasts = [[0, 0], [0, 1], [1, 0], [0, 0]]
  done = []
  for t in range(4):
    step = {"image": np.full((2, 1), t), "is_first": np.array(firsts[t], bool),
            "is_last": np.array(lasts[t], bool)}
    done += [e["image"][:, 0].tolist() for e in splitter.add(step)]
  # env 1 ends at t=1 (steps 0, 1); env 0 ends at t=2 (steps 0, 1, 2); env 1's next is open.
  assert done == [[0, 1], [0, 1, 2]]


def test_resume_appends_and_another_spec_is_refused_without_touching_files(tmp_path):
  _write(tmp_path / "d", [4, 7])
  writer = _write(tmp_path / "d", [5, 6])
  assert writer.steps == 22 and len(writer.manifest["shards"]) == 2
  before = {f: open(tmp_path / "d" / f, "rb").read() for f in os.listdir(tmp_path / "d")}
  other = EnvSpec(obs={"image": ArraySpec((16, 16, 3), "uint8")}, act=SPEC.act)
  with pytest.raises(DatasetError, match=r"another spec \(env.image_size: 8 vs 16"):
    DatasetWriter(str(tmp_path / "d"), dataset_spec({**CARD, "image_size": 16}, other), 10)
  assert before == {f: open(tmp_path / "d" / f, "rb").read() for f in os.listdir(tmp_path / "d")}


def test_datasets_of_one_spec_concatenate_episode_by_episode(tmp_path):
  _write(tmp_path / "a", [4, 7])
  _write(tmp_path / "b", [3, 5, 2])
  a, b = load_dataset(str(tmp_path / "a")), load_dataset(str(tmp_path / "b"))
  both = concatenate_datasets([a, b])
  assert both.num_episodes == 5
  np.testing.assert_array_equal(both.episode_starts, [0, 4, 11, 14, 19, 21])
  for i, (source, j) in enumerate([(a, 0), (a, 1), (b, 0), (b, 1), (b, 2)]):
    for k in source.steps:
      np.testing.assert_array_equal(both.episodes([i])[k], source.episodes([j])[k])
  assert both.directory == f"{a.directory},{b.directory}"
  _write(tmp_path / "c", [3], spec=dataset_spec({**CARD, "task": "other"}, SPEC))
  with pytest.raises(DatasetError, match=r"different specs \(env.task: 't' vs 'other'\)"):
    concatenate_datasets([a, load_dataset(str(tmp_path / "c"))])


def test_a_folder_without_manifest_and_an_unlisted_shard_are_never_overwritten(tmp_path):
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("mine")
  with pytest.raises(DatasetError, match="holds files but no manifest.json"):
    DatasetWriter(str(tmp_path / "notes"), dataset_spec(CARD, SPEC), 10)
  _write(tmp_path / "d", [4, 7])
  (tmp_path / "d" / "shard_00001.npz").write_bytes(b"left by a killed collect")
  writer = _write(tmp_path / "d", [3, 8])
  assert writer.manifest["shards"][-1]["file"] == "shard_00002.npz"
  assert (tmp_path / "d" / "shard_00001.npz").read_bytes() == b"left by a killed collect"


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist"), ("empty", "is empty"), ("no_shards", "no complete shard"),
    ("truncated", "truncated or damaged"), ("flipped", "checksum differs"),
    ("shape", "holds 'image' as uint8 \\[11, 4, 4, 3\\]")])
def test_damaged_datasets_get_one_sentence(tmp_path, damage, message):
  d = tmp_path / "d"
  if damage == "empty":
    d.mkdir()
  elif damage == "no_shards":
    DatasetWriter(str(d), dataset_spec(CARD, SPEC), 10)
  elif damage != "missing":
    _write(d, [4, 7])
    shard = d / "shard_00000.npz"
    data = shard.read_bytes()
    if damage == "truncated":
      shard.write_bytes(data[:len(data) // 2])
    elif damage == "flipped":
      shard.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:   # a shard rewritten with another frame size, its manifest entry updated to match
      arrays = dict(np.load(shard))
      arrays["image"] = arrays["image"][:, :4, :4]
      np.savez_compressed(shard, **arrays)
      manifest = json.load(open(d / "manifest.json"))
      from wm_jax.dataset import _sha256
      manifest["shards"][0].update(bytes=os.path.getsize(shard), sha256=_sha256(str(shard)))
      json.dump(manifest, open(d / "manifest.json", "w"))
  with pytest.raises(DatasetError, match=message) as error:
    load_dataset(str(d))
  assert "\n" not in str(error.value)


def test_split_keeps_the_last_episodes_for_evaluation():
  train, held = split_episodes(10, 0.25)
  assert train.tolist() == list(range(7)) and held.tolist() == [7, 8, 9]
  with pytest.raises(DatasetError, match="collect more episodes"):
    split_episodes(1, 0.1)


def _collect(out, *flags):
  return subprocess.run(
      [sys.executable, "-m", "experiments.collect", "--config=experiments/configs/random.py:debug",
       "--config.env.suite=sprite", "--config.env.task=reach", "--config.env.num_envs=2",
       f"--out={out}", "--noprogress", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_collect_writes_resumes_and_refuses_another_env(tmp_path):
  out = tmp_path / "sprite"
  first = _collect(out, "--steps=150", "--shard_steps=100")
  assert first.returncode == 0, first.stderr[-2000:]
  data = load_dataset(str(out))
  assert data.spec["env"]["suite"] == "sprite" and data.steps["image"].shape[1:] == (64, 64, 3)
  assert len(data.steps["is_first"]) >= 150 and data.num_episodes >= 2
  # The action stored at a step is the one that led to it (0 where an episode starts).
  assert np.all(data.steps["action"][data.steps["is_first"]] == 0)
  second = _collect(out, "--steps=300", "--shard_steps=100")
  assert second.returncode == 0 and "resuming" in second.stderr
  manifest = json.load(open(out / "manifest.json"))
  assert sum(s["steps"] for s in manifest["shards"]) >= 300
  assert len({s["seed"] for s in manifest["shards"]}) == 2       # new env seeds on resume
  refused = _collect(out, "--steps=400", "--config.env.suite=classic",
                     "--config.env.task=CartPole-v1")
  assert refused.returncode != 0 and "Traceback" not in refused.stderr
  assert "holds a dataset of another spec (env." in refused.stderr.strip().splitlines()[-1]


def test_a_trained_runs_agent_is_restored_as_the_policy_without_its_replay(tmp_path):
  import jax
  from experiments.collect import load_policy
  from experiments.configs import dreamerv3
  from wm_jax.agents import make_agent
  from wm_jax.checkpoint import Checkpointer
  from wm_jax.envs import make_env
  config = dreamerv3.get_config("debug")
  env = make_env("sprite", "reach", 1, 0)
  agent = make_agent("dreamerv3", config.agent, env.spec)
  state = agent.init(jax.random.PRNGKey(7))
  ckpt = Checkpointer(str(tmp_path / "run"))
  ckpt.save(120, {"agent": state, "key": jax.random.PRNGKey(0),
                  "replay": {"image": np.ones((50, 64, 64, 3), np.uint8)}}, {"agent_step": 120})
  ckpt.close()
  (tmp_path / "run" / "config.json").write_text(config.to_json_best_effort())
  _, restored, name = load_policy(str(tmp_path / "run"), env.spec, 1, config)
  assert name.startswith("dreamerv3 run ") and name.endswith("at step 120")
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  other = EnvSpec(obs=env.spec.obs, act=ActionSpec(discrete=True, num_actions=9))
  with pytest.raises(Exception, match="does not fit this env"):
    load_policy(str(tmp_path / "run"), other, 1, config)
  with pytest.raises(Exception, match="random_controller drives World Models' controller.*"
                                      "world_models.py"):
    load_policy("random_controller", env.spec, 1, config)
  env.close()
