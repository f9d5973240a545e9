"""The run loop end to end: config overrides, run-directory files, resume after SIGKILL,
SIGTERM, refused resumes, and one-sentence errors for bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import random as random_config
from wm_jax import agents
from wm_jax.agents.base import Agent
from wm_jax.errors import NonFiniteLossError
from wm_jax.eval.runs import find_run_dirs
from wm_jax import train as train_module
from wm_jax.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(workdir, *overrides, variant="debug", method="random"):
  return [sys.executable, "-m", "experiments.train",
          f"--config=experiments/configs/{method}.py:{variant}", f"--workdir={workdir}",
          "--noprogress", *overrides]


def _run(workdir, *overrides, variant="debug", method="random", env=None, check=True):
  out = subprocess.run(_cmd(workdir, *overrides, variant=variant, method=method), cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
  if check:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _error_line(out):
  """The last stderr line; asserts the run failed with a single 'error: ...' sentence."""
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  return out.stderr.strip().splitlines()[-1]


def test_run_writes_config_protocol_logs_scores_and_tensorboard(tmp_path):
  wd = tmp_path / "run"
  _run(wd, "--config.run.steps=600", "--config.run.log_every=200", "--config.seed=3")
  config = json.load(open(wd / "config.json"))
  assert config["run"]["steps"] == 600 and config["seed"] == 3   # overrides took effect
  card = json.load(open(wd / "protocol.json"))
  assert card["suite"] == "classic" and card["task"] == "CartPole-v1"
  assert card["method"] == "random" and card["variant"] == "debug"
  metrics = _lines(wd / "metrics.jsonl")
  assert [m["agent_step"] for m in metrics] == [200, 400, 600]
  assert all(m["env_frame"] == m["agent_step"] * card["frames_per_step"] for m in metrics)
  scores = _lines(wd / "scores.jsonl")
  evals = [s for s in scores if s["kind"] == "eval"]
  assert len(evals) == 4 and {s["agent_step"] for s in evals} == {600}
  train_eps = [s for s in scores if s["kind"] == "train"]
  assert train_eps and all(8 <= s["return"] <= 500 for s in train_eps)  # random CartPole
  assert all(s["return"] == s["length"] for s in scores)  # +1 per step in CartPole
  assert json.load(open(wd / "done.json"))["agent_step"] == 600
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "tb"))


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
  wd = tmp_path / "run"
  _run(wd, "--config.run.steps=400")
  before = open(wd / "scores.jsonl").read()
  _run(wd, "--config.run.steps=400")
  assert open(wd / "scores.jsonl").read() == before


def test_resume_after_sigkill_continues_the_counters_exactly(tmp_path):
  wd = tmp_path / "run"
  overrides = ["--config.run.steps=30000", "--config.run.log_every=500",
               "--config.run.checkpoint_every=1000", "--config.run.eval_every=10000",
               "--config.run.eval_episodes=2"]
  proc = subprocess.Popen(_cmd(wd, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and not _checkpoint_steps(wd):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(_checkpoint_steps(wd))
  assert killed_at < 30000, "the run finished before it could be killed; make it longer"

  out = _run(wd, *overrides)
  assert f"from agent step {killed_at:,}" in out.stderr
  done = json.load(open(wd / "done.json"))
  assert done["agent_step"] == 30000
  steps = [m["agent_step"] for m in _lines(wd / "metrics.jsonl")]
  assert steps == list(range(500, 30001, 500))      # no gap, no duplicate across the kill
  evals = [s for s in _lines(wd / "scores.jsonl") if s["kind"] == "eval"]
  assert [s["eval_round"] for s in evals] == [0, 0, 1, 1, 2, 2]
  assert [s["agent_step"] for s in evals] == [10000] * 2 + [20000] * 2 + [30000] * 2


def _checkpoint_steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return []
  return [int(d) for d in os.listdir(path) if d.isdigit()]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  wd = tmp_path / "run"
  overrides = ["--config.run.steps=10000000", "--config.run.checkpoint_every=5000000"]
  proc = subprocess.Popen(_cmd(wd, *overrides), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not os.path.exists(wd / "metrics.jsonl"):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr[-2000:]
  assert "SIGTERM: saved a checkpoint at agent step" in stderr
  saved = _checkpoint_steps(wd)
  assert len(saved) == 1 and 0 < saved[0] < 10_000_000
  assert not os.path.exists(wd / "done.json")


def test_resuming_with_a_different_config_is_refused_and_keeps_the_run(tmp_path):
  wd = tmp_path / "run"
  _run(wd, "--config.run.steps=400")
  saved = open(wd / "config.json").read()
  out = _run(wd, "--config.run.steps=400", "--config.seed=7", check=False)
  line = _error_line(out)
  assert "different config (seed: saved 0, given 7)" in line and "new --workdir" in line
  assert open(wd / "config.json").read() == saved


def test_resuming_with_an_edited_protocol_card_is_refused_and_keeps_the_run(tmp_path):
  wd = tmp_path / "run"
  _run(wd, "--config.run.steps=400")
  saved_config = open(wd / "config.json").read()
  edited = json.dumps({**json.load(open(wd / "protocol.json")), "time_limit": 1000})
  (wd / "protocol.json").write_text(edited)
  line = _error_line(_run(wd, "--config.run.steps=800", check=False))
  assert line == (f"error: {wd} holds a run with a different protocol card (time_limit: saved "
                  f"1000, given 500); restore its protocol.json to resume it, or choose a new "
                  f"--workdir.")
  assert (wd / "protocol.json").read_text() == edited
  assert open(wd / "config.json").read() == saved_config   # run.steps=800 not written either


def test_corrupt_checkpoint_is_refused_and_not_overwritten(tmp_path):
  wd = tmp_path / "run"
  _run(wd, "--config.run.steps=1000", "--config.run.checkpoint_every=500")
  latest = wd / "checkpoints" / str(max(_checkpoint_steps(wd)))
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  snapshot = {p: open(os.path.join(r, p), "rb").read() for r, _, fs in os.walk(latest) for p in fs}
  out = _run(wd, "--config.run.steps=2000", check=False)
  line = _error_line(out)
  assert "cannot be read" in line and "move that folder aside" in line
  assert {p: open(os.path.join(r, p), "rb").read()
          for r, _, fs in os.walk(latest) for p in fs} == snapshot


@pytest.mark.parametrize("args, expected", [
    (["--config.env.task=CartPoel-v1"], "did you mean 'CartPole-v1'"),
    (["--config.run.steps=0"], "run.steps=0 must be positive"),
])
def test_bad_input_gives_one_sentence(tmp_path, args, expected):
  line = _error_line(_run(tmp_path / "run", *args, check=False))
  assert line.startswith("error: ") and expected in line
  assert not (tmp_path / "run").exists()   # refused before the workdir is written


@pytest.mark.parametrize("suffix, expected", [
    ("", " is a file, not a directory: choose a directory path."),
    ("/run", "/run cannot be created (Not a directory): choose another path."),
])
def test_workdir_that_is_a_file_gives_one_sentence(tmp_path, suffix, expected):
  path = tmp_path / "file"
  path.write_text("kept")
  line = _error_line(_run(f"{path}{suffix}", check=False))
  assert line == f"error: --workdir {path}{expected}"
  assert path.read_text() == "kept"


@pytest.mark.parametrize("overrides", [[], ["--config.seed=3"]])
def test_missing_config_file_names_the_existing_configs(tmp_path, overrides):
  line = _error_line(_run(tmp_path / "run", *overrides, method="nope", check=False))
  assert line == ("error: --config=experiments/configs/nope.py:debug: experiments/configs/"
                  "nope.py does not exist; the method configs are diamond.py, dreamerv1.py, dreamerv2.py, "
                  "dreamerv3.py, dyna_q.py, iris.py, plan2explore.py, planet.py, random.py, storm.py, "
                  "world_models.py in experiments/configs/ "
                  "(use "
                  "--config=experiments/"
                  "configs/<method>.py:<variant>).")


def test_batch_size_that_does_not_split_over_the_devices_is_refused_at_start_up(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = _run(tmp_path / "run", "--config.run.train_ratio=1", "--config.run.batch_size=12",
             env=env, check=False)
  assert _error_line(out) == ("error: run.batch_size=12 does not split over 8 devices: use a "
                              "multiple of 8.")
  assert not (tmp_path / "run").exists()   # refused before the workdir and the envs


def test_unknown_variant_names_the_valid_ones(tmp_path):
  out = _run(tmp_path / "run", variant="atari100", check=False)
  assert out.returncode != 0
  assert "did you mean 'atari100k'" in out.stderr and "Traceback" not in out.stderr


def test_unknown_config_field_is_refused(tmp_path):
  out = _run(tmp_path / "run", "--config.run.stepz=5", check=False)
  assert out.returncode != 0 and "stepz" in out.stderr and "Traceback" not in out.stderr


# --- The learning path (replay + train-ratio schedule + NaN guard) with a toy agent. -------


def _make_counting_agent(config, spec):
  """A toy learner: its 'loss' is the mean reward of the batch; turns NaN after N updates."""
  def update(state, batch, key):
    del key
    assert batch["vector"].shape == (4, 8, 4) and batch["action"].shape == (4, 8)
    loss = jnp.mean(batch["reward"]) + jnp.where(state["n"] >= config.nan_after, jnp.nan, 0.0)
    return {"n": state["n"] + 1}, {"model_loss": loss}

  def act(state, carry, obs, key, explore):
    return jax.random.randint(key, obs["is_first"].shape, 0, spec.act.num_actions), carry

  return Agent(init=lambda key: {"n": jnp.zeros((), jnp.int32)}, initial_carry=lambda n: (),
               act=act, update=update)


@pytest.fixture
def counting_method(monkeypatch):
  monkeypatch.setitem(agents.BUILDERS, "counting", "tests.test_train:_make_counting_agent")


def _counting_config(nan_after):
  config = random_config.get_config("debug")
  config.method = "counting"
  config.agent.nan_after = nan_after
  config.run.update(dict(steps=400, train_ratio=32.0, batch_size=4, batch_length=8,
                         replay_capacity=1000, learning_starts=100, checkpoint_every=100))
  return config


def test_updates_follow_the_train_ratio(tmp_path, counting_method):
  counters = train(_counting_config(nan_after=10**9), str(tmp_path / "run"), progress=False)
  # 2 envs x 32 replayed steps per env step / (4 x 8) = 2 updates per loop from step 100 on.
  assert counters["updates"] == 2 * (400 - 100) // 2 + 2
  metrics = _lines(tmp_path / "run" / "metrics.jsonl")
  assert metrics[-1]["updates"] == counters["updates"] and "model_loss" in metrics[-1]


def test_nan_loss_stops_with_step_and_term_after_saving_last_good_state(tmp_path,
                                                                        counting_method):
  with pytest.raises(NonFiniteLossError, match=r"'model_loss' became nan at agent step 1[0-9]{2}"):
    train(_counting_config(nan_after=5), str(tmp_path / "run"), progress=False)
  saved = max(_checkpoint_steps(tmp_path / "run"))
  assert 100 <= saved < 400


# --- Seeds stacked in one process (run.num_seeds). ------------------------------------------


def test_vmapped_seeds_equal_single_seed_runs(tmp_path):
  """DreamerV3 with run.num_seeds=2 (seeds 0 and 1, one vmapped act and update) writes one run
  directory per seed; seed 1's episodes equal a single-seed run of seed 1 exactly, its losses to
  float tolerance (a vmapped matmul may sum in another order)."""
  overrides = ["--config.run.steps=400", "--config.run.log_every=200",
               "--config.run.eval_every=200"]
  _run(tmp_path / "stacked", *overrides, "--config.run.num_seeds=2", method="dreamerv3")
  _run(tmp_path / "single", *overrides, "--config.seed=1", method="dreamerv3")
  assert sorted(os.listdir(tmp_path / "stacked")) == ["checkpoints", "seed_0", "seed_1"]
  assert find_run_dirs(str(tmp_path / "stacked")) == [str(tmp_path / "stacked" / "seed_0"),
                                                      str(tmp_path / "stacked" / "seed_1")]
  stacked, single = tmp_path / "stacked" / "seed_1", tmp_path / "single"
  assert json.load(open(stacked / "config.json"))["seed"] == 1

  def episodes(run_dir):
    return [(s["kind"], s["agent_step"], s["return"], s["length"], s.get("eval_round"))
            for s in _lines(run_dir / "scores.jsonl")]
  assert episodes(stacked) == episodes(single)
  assert episodes(stacked) != episodes(tmp_path / "stacked" / "seed_0")
  stacked_metrics = _lines(stacked / "metrics.jsonl")
  single_metrics = _lines(single / "metrics.jsonl")
  assert single_metrics[-1]["updates"] > 0 and len(stacked_metrics) == len(single_metrics)
  compared = 0
  for a, b in zip(stacked_metrics, single_metrics):
    losses = sorted(k for k in b if k.endswith("_loss"))   # none before learning starts
    assert sorted(k for k in a if k.endswith("_loss")) == losses
    np.testing.assert_allclose([a[k] for k in losses], [b[k] for k in losses], rtol=1e-4,
                               atol=1e-6)
    compared += len(losses)
  assert compared >= 3


def test_single_and_stacked_seed_runs_refuse_each_others_workdir(tmp_path):
  _run(tmp_path / "single", "--config.run.steps=200")
  line = _error_line(_run(tmp_path / "single", "--config.run.steps=200",
                          "--config.run.num_seeds=2", check=False))
  assert line.endswith("holds a single-seed run: choose a new --workdir for run.num_seeds=2.")
  _run(tmp_path / "stacked", "--config.run.steps=200", "--config.run.num_seeds=2")
  line = _error_line(_run(tmp_path / "stacked", "--config.run.steps=200", check=False))
  assert line.endswith("holds a run of several seeds (seed_*/): rerun it with its "
                       "run.num_seeds or choose a new --workdir.")
  line = _error_line(_run(tmp_path / "stacked", "--config.run.steps=200",
                          "--config.run.num_seeds=3", check=False))
  assert "run.num_seeds: saved 2, given 3" in line


def test_stacked_seeds_resume_and_follow_the_train_ratio(tmp_path, counting_method):
  config = _counting_config(nan_after=10**9)
  config.run.num_seeds = 3
  config.run.steps = 200
  train(config, str(tmp_path / "run"), progress=False)
  config.run.steps = 400   # a resume may extend the run
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert counters["updates"] == 2 * (400 - 100) // 2 + 2   # as for one seed
  for seed in (0, 1, 2):
    metrics = _lines(tmp_path / "run" / f"seed_{seed}" / "metrics.jsonl")
    assert [m["agent_step"] for m in metrics] == [200, 400]
    assert metrics[-1]["updates"] == counters["updates"] and "model_loss" in metrics[-1]


def test_nan_loss_of_stacked_seeds_names_the_seed(tmp_path, counting_method):
  config = _counting_config(nan_after=5)
  config.run.num_seeds = 2
  config.seed = 4
  with pytest.raises(NonFiniteLossError, match=r"'model_loss' of seed 4 became nan at agent"):
    train(config, str(tmp_path / "run"), progress=False)


# --- On-device collection (run.collect_on_device, pure-JAX envs). ---------------------------


def _make_echo_agent(config, spec):
  """A toy learner on pixels with a recurrent carry: its action depends on the frame, the carry
  (steps since the episode began) and the key; its 'loss' on the replayed frames and rewards."""
  del config
  def act(state, carry, obs, key, explore):
    carry = jnp.where(obs["is_first"], 0, carry + 1)
    brightness = obs["image"].astype(jnp.int32).sum(axis=(1, 2, 3)) // 997
    noise = jax.random.randint(key, carry.shape, 0, 2)
    return ((brightness + carry + noise) % spec.act.num_actions).astype(jnp.int32), carry

  def update(state, batch, key):
    loss = jnp.mean(batch["reward"]) + jnp.mean(batch["image"]) / 255 + jax.random.uniform(key)
    return {"n": state["n"] + 1}, {"model_loss": loss}

  return Agent(init=lambda key: {"n": jnp.zeros((), jnp.int32)},
               initial_carry=lambda n: jnp.zeros(n, jnp.int32), act=act, update=update)


def test_on_device_collection_equals_the_host_loop(tmp_path, monkeypatch):
  """On the sprite env the jitted collection loop (many store -> act -> env step iterations
  per call, updates in between) gives the host loop's episodes, updates and losses."""
  monkeypatch.setitem(agents.BUILDERS, "echo", "tests.test_train:_make_echo_agent")
  config = random_config.get_config("debug")
  config.method = "echo"
  config.env.suite, config.env.task = "sprite", "reach"
  config.run.update(dict(steps=600, train_ratio=6.0, batch_size=4, batch_length=6,
                         replay_capacity=2000, learning_starts=64, log_every=100,
                         eval_every=300, checkpoint_every=300))
  for on_device in (True, False):
    config.run.collect_on_device = on_device
    train(config, str(tmp_path / str(on_device)), progress=False)
  device, host = (_lines(tmp_path / str(d) / "scores.jsonl") for d in (True, False))
  assert len(device) >= 18 and len({s["return"] for s in device}) > 1
  assert [(s["kind"], s["agent_step"], s["return"]) for s in device] == [
      (s["kind"], s["agent_step"], s["return"]) for s in host]
  device, host = (_lines(tmp_path / str(d) / "metrics.jsonl") for d in (True, False))
  assert host[-1]["updates"] == 134   # 269 iterations (agent steps 64..600) x half an update
  assert [(m["updates"], m.get("model_loss")) for m in device] == [
      (m["updates"], m.get("model_loss")) for m in host]


def test_device_collection_stops_where_the_host_loop_must_act():
  run = random_config.get_config("debug").run
  run.update(dict(steps=1000, log_every=100, eval_every=300, checkpoint_every=500,
                  learning_starts=50))
  counters = {"agent_step": 0, "update_credit": 0.0}
  # 2 envs: the log boundary at 100 agent steps comes after 50 iterations.
  assert train_module.iterations_to_next_event(counters, 2, run, 0.0) == 50
  # learning starts at step 50 (iteration 25), then one update every 4 iterations.
  assert train_module.iterations_to_next_event(counters, 2, run, 0.25) == 28
  assert train_module.iterations_to_next_event({"agent_step": 990, "update_credit": 0.0}, 2,
                                               run, 0.0) == 5   # the run ends at 1000
  assert train_module.iterations_to_next_event(counters, 2, run, 0.0, limit=8) == 8
