"""The cross-family comparison (wm_jax/quality.py, benchmarks.wm_quality): every family's world
model through the offline WorldModel interface, the rows and overrides, the tables, and the
benchmark end to end (report, resume, refusals)."""

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wm_jax import quality
from wm_jax.agents import make_world_model
from wm_jax.dataset import DatasetWriter
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
               act=ActionSpec(True, num_actions=4))


def _batch(B: int, T: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  first = np.zeros((B, T), bool)
  first[:, 0] = True
  return {"image": rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8),
          "action": np.where(first, 0, rng.integers(0, 4, (B, T))).astype(np.int32),
          "reward": rng.choice([0.0, 1.0], (B, T)).astype(np.float32), "is_first": first,
          "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}


@pytest.mark.parametrize("method", ["dreamerv3", "storm", "iris", "world_models"])
def test_each_family_trains_offline_and_runs_as_an_env(method):
  """The world models new to offline training (DIAMOND's is covered in test_offline.py):
  one update, then reset on the context and two open-loop steps of valid frames."""
  config = importlib.import_module(f"experiments.configs.{method}").get_config("debug")
  world_model = make_world_model(method, config.agent, SPEC)
  state = world_model.init(jax.random.key(0))
  T = max(world_model.context_length + 1, 5)
  update = jax.jit(world_model.update, static_argnums=3)
  state, metrics = update(state, _batch(2, T), jax.random.key(1), world_model.schedule(10**6))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  context = {k: v[:, :T - 1] for k, v in _batch(3, T, seed=1).items()}
  sim = world_model.reset_from(state["params"], context, jax.random.key(2))
  for t in range(2):
    sim, obs, reward, cont = world_model.step(state["params"], sim, jnp.array([0, 1, 3]),
                                              jax.random.key(3 + t))
    assert obs["image"].shape == (3, 64, 64, 3) and obs["image"].dtype == jnp.float32
    assert float(obs["image"].min()) >= 0.0 and float(obs["image"].max()) <= 1.0
    assert reward.shape == (3,) and cont.shape == (3,)
    assert np.all(np.isin(np.asarray(cont), [0.0, 1.0]))


def test_rssm_reset_from_filters_the_context_like_observe():
  """The RSSM's reset_from is the posterior at the context's last frame, filtered from the
  initial state (the same scan as the world-model loss)."""
  config = importlib.import_module("experiments.configs.dreamerv3").get_config("debug")
  world_model = make_world_model("dreamerv3", config.agent, SPEC)
  state = world_model.init(jax.random.key(0))
  from wm_jax.agents.dreamer import resolve_agent_config
  from wm_jax.models.rssm import make_world_model as make_rssm
  rssm = make_rssm(resolve_agent_config(config.agent), SPEC)
  batch = _batch(2, 6)
  params, key = state["params"], jax.random.key(5)
  sim = world_model.reset_from(params, batch, key)
  post, _ = rssm.observe(params, rssm.initial(params, 2), rssm.embed(params, batch),
                         rssm.encode_action(batch["action"]), batch["is_first"], key)
  np.testing.assert_allclose(sim["state"]["deter"], post["deter"][:, -1], rtol=1e-5)


def test_overrides_set_nested_fields_and_name_unknown_ones():
  config = ml_collections.ConfigDict({"method": "x", "agent": {"size": "S", "opt": {"lr": 1.0},
                                                                "channels": (1, 2)}})
  quality.apply_override(config, "agent.opt.lr=3e-4")
  quality.apply_override(config, "agent.size='XS'")
  quality.apply_override(config, "agent.channels=(8, 8)")
  assert config.agent.opt.lr == 3e-4 and config.agent.size == "XS"
  assert config.agent.channels == (8, 8)
  with pytest.raises(RunConfigError, match="has no field agent.opt.lrr"):
    quality.apply_override(config, "agent.opt.lrr=1")
  with pytest.raises(RunConfigError, match="is not field=value"):
    quality.apply_override(config, "agent.size")


def test_sampling_ablations_share_a_training_run_and_others_do_not():
  rows = quality.make_rows(
      ["dreamerv3", "diamond"], ["diamond:agent.denoiser.opt.lr=1e-3"],
      ["diamond:agent.denoiser.sampler.num_steps=1,10",
       "diamond:agent.denoiser.architecture=frame_stack,cross_attention"])
  labels = [r.label for r in rows]
  assert labels == ["dreamerv3", "diamond", "diamond denoiser.sampler.num_steps=1",
                    "diamond denoiser.sampler.num_steps=10",
                    "diamond denoiser.architecture=frame_stack",
                    "diamond denoiser.architecture=cross_attention"]
  assert rows[2].overrides == ("agent.denoiser.opt.lr=1e-3",
                               "agent.denoiser.sampler.num_steps=1")
  runs = [r.train_name for r in rows]
  assert runs[1] == runs[2] == runs[3]          # steps change sampling only
  assert len({runs[0], runs[1], runs[4], runs[5]}) == 4
  # A sampling field set for every row keeps the training run and applies before the ablation.
  heun = quality.make_rows(["diamond"], ["diamond:agent.denoiser.sampler.num_steps=10"],
                           ["diamond:agent.denoiser.sampler.order=2"])
  assert [r.label for r in heun] == ["diamond", "diamond denoiser.sampler.order=2"]
  assert heun[0].train_name == heun[1].train_name == quality.make_rows(["diamond"], [], [])[0].train_name
  assert heun[1].sampling == ("agent.denoiser.sampler.num_steps=10", "agent.denoiser.sampler.order=2")
  # World Models has no Atari variant: its rows default to the paper's sizes, and M's
  # temperature changes sampling only.
  wm_rows = quality.make_rows(["world_models", "world_models:cpu"], [],
                              ["world_models:agent.rnn.temperature=0.5"])
  assert [(r.variant, r.label) for r in wm_rows] == [
      ("carracing", "world_models"), ("carracing", "world_models rnn.temperature=0.5"),
      ("cpu", "world_models:cpu"), ("cpu", "world_models:cpu rnn.temperature=0.5")]
  assert wm_rows[0].train_name == wm_rows[1].train_name
  with pytest.raises(RunConfigError, match="has no offline world model"):
    quality.make_rows(["random"], [], [])
  with pytest.raises(RunConfigError, match="must start with one of the methods"):
    quality.make_rows(["storm"], ["iris:agent.tokens_per_frame=64"], [])


def test_cpu_budget_lets_a_method_replace_a_common_field():
  overrides = quality.budget_overrides("iris", "cpu")
  assert "run.batch_length=20" in overrides and "run.batch_length=32" not in overrides
  assert "run.batch_size=16" in overrides
  assert quality.budget_overrides("iris", "paper") == ()


def _result(label: str, psnr: float) -> dict:
  per_step = lambda v: [v] * 3
  return {"label": label, "params": {"total": 1234}, "updates": 10, "train_seconds": 90.0,
          "horizon": 3, "batch": 2, "windows": 4, "context": 2,
          "model": {"psnr": per_step(psnr), "ssim": per_step(0.5)},
          "copy_last": {"psnr": per_step(30.0), "ssim": per_step(0.9)},
          "mean_frame": {"psnr": per_step(20.0), "ssim": per_step(0.4)},
          "reward_accuracy": per_step(1.0), "reward_recall": 0.25, "reward_mse": per_step(0.0),
          "end_accuracy": per_step(1.0), "action_sensitivity": per_step(2 / 255),
          "hz_batch1": 10.0, "hz_batch": 15.0, "update_bytes": 2**20, "rollout_bytes": -1}


def test_table_has_every_model_then_the_two_baselines():
  headers, raw = quality.table_rows([_result("a", 25.0), _result("b", 26.0)])
  assert [r[0] for r in raw] == ["a", "b", "copy last frame", "mean frame"]
  assert headers[4:7] == ["PSNR@1", "PSNR@3", "SSIM@1"]
  rows = quality.formatted(headers, raw)
  assert rows[0][:5] == ["a", "1,234", "10", "1.5", "25.00"]
  by_name = dict(zip(headers, rows[0]))
  assert by_name["action sens."] == "2.00" and by_name["update MiB"] == "1.0"
  assert by_name["reward recall"] == "0.250" and by_name["reward sign acc."] == "1.000"
  assert by_name["rollout MiB"] == "–"            # the backend did not report it
  assert rows[2][1] == "–" and rows[2][4] == "30.00"
  tex = quality.latex(headers, rows)
  assert tex.startswith("\\begin{tabular}") and "copy last frame" in tex
  perceptual = [_result("a", 25.0)]
  for key, fid in (("model", 50.0), ("copy_last", 40.0), ("mean_frame", 300.0)):
    perceptual[0][key].update(lpips=[0.1, 0.2, 0.3], fid=fid, fvd=fid * 10)
  headers, raw = quality.table_rows(perceptual)
  assert headers[4:12] == ["PSNR@1", "PSNR@3", "SSIM@1", "SSIM@3", "LPIPS@1", "LPIPS@3",
                           "FID (all steps)", "FVD (first 16 steps)"]
  assert raw[0][8:12] == [0.1, 0.3, 50.0, 500.0] and raw[1][8:12] == [0.1, 0.3, 40.0, 400.0]


def _write_dataset(directory, size: int, episodes: int = 4, length: int = 14):
  """Episodes of moving-square frames (size x size RGB, 4 actions), as experiments.collect
  writes them."""
  spec = {"env": {"suite": "toy", "task": "square"},
          "entries": {"image": {"shape": [size, size, 3], "dtype": "uint8"},
                      "action": {"shape": [], "dtype": "int32"},
                      "reward": {"shape": [], "dtype": "float32"},
                      "is_first": {"shape": [], "dtype": "bool"},
                      "is_last": {"shape": [], "dtype": "bool"},
                      "is_terminal": {"shape": [], "dtype": "bool"}},
          "action": {"discrete": True, "num_actions": 4, "dim": 0, "low": -1.0, "high": 1.0}}
  writer = DatasetWriter(str(directory), spec, 1000)
  rng = np.random.default_rng(0)
  for _ in range(episodes):
    actions = rng.integers(0, 4, length).astype(np.int32)
    actions[0] = 0
    position = np.cumsum(actions) % (size - 8)
    image = np.zeros((length, size, size, 3), np.uint8)
    for t, p in enumerate(position):
      image[t, p:p + 8, p:p + 8] = 255
    last = np.arange(length) == length - 1
    writer.add_episode({"image": image, "action": actions,
                        "reward": (actions == 3).astype(np.float32),
                        "is_first": np.arange(length) == 0, "is_last": last,
                        "is_terminal": last}, policy="random", seed=0)
  writer.flush("random", 0)


def _benchmark(*flags):
  return subprocess.run([sys.executable, "-m", "benchmarks.wm_quality", "--noprogress", *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow   # 134 s of the 16-minute `make test` (measured); `make test-all` runs it
def test_benchmark_writes_the_table_resumes_and_refuses_other_frames(tmp_path):
  _write_dataset(tmp_path / "squares", 64)
  _write_dataset(tmp_path / "small", 32)
  out = tmp_path / "out"
  flags = [f"--datasets={tmp_path / 'squares'}", f"--out={out}", "--budget=paper",
           "--methods=diamond:debug", "--minutes=0", "--updates=2",
           "--horizon=3", "--context=8", "--eval_windows=4", "--eval_batch=2",
           "--holdout=0.25", "--ablate=diamond:agent.denoiser.sampler.num_steps=1,2",
           "--set=diamond:run.batch_length=8"]
  run = _benchmark(*flags)
  assert run.returncode == 0, run.stderr[-3000:]
  folder = out / "squares"
  for name in ("table.md", "table.csv", "table.tex", "per_step.csv", "psnr.png", "strip.png"):
    assert (folder / name).stat().st_size > 0, name
  table = (folder / "table.md").read_text()
  for row in ("| diamond:debug |",
              "| diamond:debug denoiser.sampler.num_steps=1 |", "| copy last frame |",
              "| mean frame |"):
    assert row in table, row
  assert "FID and LPIPS are not reported" in table and "FVD is not reported" in table
  # The sampling ablation reused DIAMOND's one training run.
  assert os.listdir(folder / "runs") == ["diamond__debug__run.batch_length=8"]
  results = json.loads((out / "results.json").read_text())["datasets"]["squares"]
  assert [r["updates"] for r in results] == [2, 2, 2]
  assert all(r["context"] == 8 and len(r["model"]["psnr"]) == 3 for r in results)
  # A rerun trains nothing and evaluates nothing: it loads the results.
  again = _benchmark(*flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (folder / "table.md").read_text() == table
  # Frames of another shape: one sentence, nothing written.
  refused = _benchmark(f"--datasets={tmp_path / 'small'}", f"--out={tmp_path / 'out2'}",
                       "--methods=diamond:debug")
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines()[-1].startswith("error: Dataset ")
  assert "32x32" in refused.stderr or "(32, 32, 3)" in refused.stderr
  assert "Traceback" not in refused.stderr and not (tmp_path / "out2").exists()


def _storm_run(directory, spec: dict, task: str = "square"):
  """A run directory of experiments.train whose STORM agent (untrained) acts in the toy env."""
  from experiments.configs import storm
  from wm_jax.agents import make_agent
  from wm_jax.checkpoint import Checkpointer
  from wm_jax.dataset import env_spec
  config = storm.get_config("debug")
  config.env.update(suite="toy", task=task)
  state = make_agent("storm", config.agent, env_spec(spec)).init(jax.random.PRNGKey(0))
  ckpt = Checkpointer(str(directory))
  ckpt.save(64, {"agent": state}, {"agent_step": 64, "updates": 3, "wall_seconds": 6.0})
  ckpt.close()
  (directory / "config.json").write_text(config.to_json_best_effort())


def test_runs_of_another_env_or_no_model_at_all_are_refused_in_one_sentence(tmp_path):
  _write_dataset(tmp_path / "squares", 64)
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(
      '{"method": "storm", "env": {"suite": "toy", "task": "circle"}, "agent": {}}')
  (tmp_path / "small").mkdir()
  (tmp_path / "small" / "config.json").write_text(
      '{"method": "diamond", "env": {"suite": "sprite", "task": "reach", '
      '"protocol": {"image_size": 32}}, "agent": {}}')
  for flags, said in (([f"--runs={tmp_path / 'run'}"], "trained on toy/circle, and no "
                                                       "--datasets holds that env"),
                      ([f"--runs={tmp_path / 'small'}"], "trained on 32x32 frames, and the "
                                                         "table compares world models on 64x64"),
                      (["--methods="], "would have no model to compare")):
    refused = _benchmark(f"--datasets={tmp_path / 'squares'}", f"--out={tmp_path / 'out'}",
                         *flags)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert said in refused.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow   # a STORM rollout compiles in a subprocess; `make test-all` runs it
def test_a_runs_online_world_model_is_a_row_of_its_envs_table(tmp_path):
  _write_dataset(tmp_path / "squares", 64)
  spec = json.loads((tmp_path / "squares" / "manifest.json").read_text())["spec"]
  _storm_run(tmp_path / "storm_run", spec)
  run = _benchmark(f"--datasets={tmp_path / 'squares'}", f"--out={tmp_path / 'out'}",
                   "--methods=", f"--runs={tmp_path / 'storm_run'}", "--horizon=2",
                   "--eval_windows=2", "--eval_batch=2", "--holdout=0.25")
  assert run.returncode == 0, run.stderr[-3000:]
  table = (tmp_path / "out" / "squares" / "table.md").read_text()
  assert "| storm (online run storm_run) | " in table and "| copy last frame |" in table
  assert "no offline training" in table and "(64 agent steps), not on this dataset" in table
  results = json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["squares"]
  assert results[0]["updates"] == 3 and results[0]["update_bytes"] == -1
  assert len(results[0]["model"]["psnr"]) == 2
