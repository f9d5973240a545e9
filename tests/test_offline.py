"""Offline world modelling (wm_jax/offline.py, experiments.train_offline): the metrics against
hand-computed values, open-loop evaluation through the WorldModel interface, and the entry
point end to end (train, report, resume, refusals)."""

import json
import os
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax import offline
from wm_jax.agents.base import WorldModel
from wm_jax.core.fid import frechet_distance
from wm_jax.dataset import Dataset, DatasetError, DatasetWriter, dataset_spec
from wm_jax.envs.base import ActionSpec
from wm_jax.errors import RunConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_psnr_and_ssim_match_hand_computed_values():
  real = jnp.full((1, 2, 16, 16, 3), 0.5)
  brighter = real + 0.1                           # MSE 0.01 -> PSNR 20 dB
  metrics = offline.frame_metrics(brighter, real)
  np.testing.assert_allclose(metrics["psnr"], 20.0, rtol=1e-5)
  # Constant images: SSIM's contrast-structure term is c2 / c2 = 1, leaving the luminance term
  # (2 m_x m_y + c1) / (m_x^2 + m_y^2 + c1) with c1 = (0.01 * 1)^2 (Wang et al. 2004, eq. 13).
  c1 = 0.01 ** 2
  np.testing.assert_allclose(metrics["ssim"], (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1),
                             rtol=3e-4)   # float32 Gaussian-filtered moments
  same = offline.frame_metrics(real, real)
  assert np.all(same["psnr"] == offline.PSNR_CAP)   # capped, not inf
  np.testing.assert_allclose(same["ssim"], 1.0, rtol=1e-6)


def _stream(episode_lengths, num_actions=3, seed=0):
  """Episodes of frames that are noise images, as a Dataset."""
  rng = np.random.default_rng(seed)
  S = sum(episode_lengths)
  first, last = np.zeros(S, bool), np.zeros(S, bool)
  starts = np.concatenate([[0], np.cumsum(episode_lengths)])
  first[starts[:-1]], last[starts[1:] - 1] = True, True
  steps = {"image": rng.integers(0, 256, (S, 8, 8, 3), dtype=np.uint8),
           "action": rng.integers(0, num_actions, S).astype(np.int32),
           "reward": rng.choice([-1.0, 0.0, 1.0], S).astype(np.float32),
           "is_first": first, "is_last": last, "is_terminal": last.copy()}
  spec = {"entries": {}, "env": {}, "action": {}}
  return Dataset("toy", spec, {}, steps, starts)


def _copy_last_model(context: int, reward: float = 0.0) -> WorldModel:
  """A WorldModel that repeats the last context frame and predicts `reward` and no end."""
  def reset_from(params, real, key):
    return real["image"][:, -1].astype(jnp.float32) / 255.0

  def step(params, sim, action, key):
    zeros = jnp.zeros(sim.shape[:1])
    return sim, {"image": sim}, zeros + reward, zeros + 1.0
  return WorldModel(init=None, update=None, schedule=None, reset_from=reset_from, step=step,
                    context_length=context)


def test_eval_windows_stay_inside_one_episode():
  data = _stream([10, 3, 12])
  starts = offline.eval_windows(data, [0, 1, 2], context=4, horizon=3, count=100)
  # Episode 1 (3 steps) is too short; episodes 0 and 2 give 10 - 7 + 1 and 12 - 7 + 1 windows.
  assert len(starts) == 4 + 6
  for s in starts:
    episode = np.searchsorted(data.episode_starts, s, side="right") - 1
    assert s + 7 <= data.episode_starts[episode + 1]


def test_open_loop_of_a_copying_model_equals_the_copy_last_baseline():
  data = _stream([20, 20])
  starts = offline.eval_windows(data, [0, 1], context=2, horizon=4, count=8)
  windows = offline.gather_windows(data.steps, starts, 6)
  out = offline.open_loop(offline.make_rollout(_copy_last_model(2), 2), None, windows, 2,
                          jax.random.PRNGKey(0), np.full((8, 8, 3), 0.5, np.float32), batch=3,
                          act=ActionSpec(True, num_actions=3))
  np.testing.assert_allclose(out["model"]["psnr"], out["copy_last"]["psnr"], rtol=1e-6)
  np.testing.assert_allclose(out["model"]["ssim"], out["copy_last"]["ssim"], rtol=1e-6)
  assert len(out["model"]["psnr"]) == 4 and out["generated"] == 8 * 4
  for bound in ("mean", "low", "high"):   # no gain over copy-last, and no doubt about it
    np.testing.assert_allclose(out["psnr_gain"][bound], 0.0, atol=1e-5)
  # Noise frames: copying one to the next is ~7.8 dB (uniform bytes); not the cap.
  assert 5 < out["copy_last"]["psnr"][0] < 12
  real_zero = (windows["reward"][:, 2:] == 0).mean(0)
  np.testing.assert_allclose(out["reward_accuracy"], real_zero, rtol=1e-6)
  # It never predicts a reward, so it finds none of the real ones.
  assert out["reward_events"] == np.sum(windows["reward"][:, 2:] != 0) > 0
  assert out["reward_recall"] == 0.0
  # The model never predicts an end: right except where a window reaches its episode's end.
  np.testing.assert_allclose(out["end_accuracy"], 1.0 - windows["is_terminal"][:, 2:].mean(0),
                             rtol=1e-6)
  np.testing.assert_allclose(out["reward_mse"], np.square(windows["reward"][:, 2:]).mean(0),
                             rtol=1e-6)
  # It ignores its actions: generating under other actions changes nothing.
  assert out["action_sensitivity"] == [0.0] * 4


def test_reward_recall_counts_the_real_rewards_whose_sign_the_model_predicts():
  data = _stream([20, 20])
  starts = offline.eval_windows(data, [0, 1], context=2, horizon=4, count=8)
  windows = offline.gather_windows(data.steps, starts, 6)
  real = windows["reward"][:, 2:]
  # 0.7 is class +1: right on every +1 step, wrong on every -1 step and on the 0 steps
  out = offline.open_loop(offline.make_rollout(_copy_last_model(2, reward=0.7), 2), None,
                          windows, 2, jax.random.PRNGKey(0), np.full((8, 8, 3), 0.5, np.float32),
                          batch=3, act=ActionSpec(True, num_actions=3))
  np.testing.assert_allclose(out["reward_recall"], np.sum(real == 1) / np.sum(real != 0))
  np.testing.assert_allclose(out["reward_accuracy"], (real == 1).mean(0), rtol=1e-6)
  no_rewards = dict(windows, reward=np.zeros_like(windows["reward"]))
  out = offline.open_loop(offline.make_rollout(_copy_last_model(2, reward=0.7), 2), None,
                          no_rewards, 2, jax.random.PRNGKey(0),
                          np.full((8, 8, 3), 0.5, np.float32), batch=3,
                          act=ActionSpec(True, num_actions=3))
  assert out["reward_recall"] is None and out["reward_events"] == 0


def test_perceptual_metrics_are_reported_for_the_model_and_both_baselines():
  data = _stream([20, 20])
  starts = offline.eval_windows(data, [0, 1], context=2, horizon=4, count=8)
  windows = offline.gather_windows(data.steps, starts, 6)
  mean_abs = lambda x, y: jnp.abs(x - y).mean((1, 2, 3))   # stands in for LPIPS
  colour = lambda images: np.asarray(images).mean((1, 2))   # stands in for Inception: [M, 3]
  perceptual = offline.PerceptualMetrics("l.npz", "f.npz", mean_abs, colour)
  out = offline.open_loop(offline.make_rollout(_copy_last_model(2), 2), None, windows, 2,
                          jax.random.PRNGKey(0), np.full((8, 8, 3), 0.5, np.float32), batch=3,
                          act=ActionSpec(True, num_actions=3), perceptual=perceptual)
  real = windows["image"][:, 2:] / 255.0
  last = np.repeat(windows["image"][:, 1:2] / 255.0, 4, 1)
  np.testing.assert_allclose(out["copy_last"]["lpips"], np.abs(real - last).mean((0, 2, 3, 4)),
                             rtol=1e-5)
  np.testing.assert_allclose(out["model"]["lpips"], out["copy_last"]["lpips"], rtol=1e-6)
  np.testing.assert_allclose(out["mean_frame"]["lpips"], np.abs(real - 0.5).mean((0, 2, 3, 4)),
                             rtol=1e-5)
  # FID over all 8 x 4 frames, in the order of the real ones (it does not depend on it)
  flat = lambda x: x.reshape(-1, 8, 8, 3)
  want = frechet_distance(colour(flat(last)), colour(flat(real)))
  np.testing.assert_allclose(out["copy_last"]["fid"], want, rtol=1e-5)
  np.testing.assert_allclose(out["model"]["fid"], want, rtol=1e-5)
  assert offline.frame_metric_names(out) == ("psnr", "ssim", "lpips")
  said = offline.metric_gap(perceptual)
  assert "LPIPS is the VGG16 variant" in said and "weights in f.npz" in said
  assert "FVD is not reported: pass --fvd" in said
  assert offline.metric_gap(offline.PerceptualMetrics()).startswith(
      "FID and LPIPS are not reported")


def test_fvd_compares_the_first_16_generated_frames_of_every_window_with_the_real_ones():
  data = _stream([30, 30])
  starts = offline.eval_windows(data, [0, 1], context=2, horizon=18, count=8)
  windows = offline.gather_windows(data.steps, starts, 20)
  colours = lambda clips: np.asarray(clips).mean((2, 3))   # stands in for I3D: [M, 16 x 3]
  video = lambda x: x.reshape(len(x), -1)
  perceptual = offline.PerceptualMetrics(fvd_features=lambda clips: video(colours(clips)))
  out = offline.open_loop(offline.make_rollout(_copy_last_model(2), 2), None, windows, 2,
                          jax.random.PRNGKey(0), np.full((8, 8, 3), 0.5, np.float32), batch=3,
                          act=ActionSpec(True, num_actions=3), perceptual=perceptual)
  real = windows["image"][:, 2:18] / 255.0      # steps 17 and 18 are not in the clips
  last = np.repeat(windows["image"][:, 1:2] / 255.0, 16, 1)
  want = frechet_distance(video(colours(last)), video(colours(real)))
  np.testing.assert_allclose(out["copy_last"]["fvd"], want, rtol=1e-5)
  np.testing.assert_allclose(out["model"]["fvd"], want, rtol=1e-5)
  mean_clips = np.full((len(starts), 16 * 3), 0.5)
  np.testing.assert_allclose(out["mean_frame"]["fvd"], frechet_distance(mean_clips,
                                                                       video(colours(real))),
                             rtol=1e-5)
  assert out["model"]["fvd"] > 0 and "fid" not in out["model"]
  assert offline.distribution_metric_names(out) == ["fvd"]
  said = offline.metric_gap(perceptual)
  assert "FVD is over the first 16 generated vs real frames" in said
  assert "FID and LPIPS are not reported" in said and "FVD is not reported" not in said


def test_fvd_with_a_horizon_under_16_frames_is_one_sentence():
  with pytest.raises(RunConfigError, match=r"FVD compares clips of the first 16 "
                     r"generated frames, but --horizon=15: pass --horizon=16 or more, or drop "
                     r"--fvd\."):
    offline.load_perceptual(None, None, with_fvd=True, horizon=15)


def _action_painting_model(num_actions: int) -> WorldModel:
  """A WorldModel whose next frame is gray level action / (num_actions - 1) everywhere."""
  def step(params, sim, action, key):
    level = action.astype(jnp.float32) / (num_actions - 1)
    frame = jnp.broadcast_to(level[:, None, None, None], sim.shape)
    zeros = jnp.zeros(sim.shape[:1])
    return frame, {"image": frame}, zeros, zeros + 1.0
  return _copy_last_model(2)._replace(step=step)


def test_action_sensitivity_is_the_pixel_change_that_other_actions_cause():
  data = _stream([20, 20], num_actions=3)
  starts = offline.eval_windows(data, [0, 1], context=2, horizon=4, count=8)
  windows = offline.gather_windows(data.steps, starts, 6)
  act = ActionSpec(True, num_actions=3)
  out = offline.open_loop(offline.make_rollout(_action_painting_model(3), 2), None, windows, 2,
                          jax.random.PRNGKey(0), np.zeros((8, 8, 3), np.float32), batch=3,
                          act=act)
  other = offline.other_actions(windows["action"][:, 2:], act)
  by_hand = np.abs(windows["action"][:, 2:] - other).mean(0) / 2
  np.testing.assert_allclose(out["action_sensitivity"], by_hand, rtol=1e-6)
  assert min(out["action_sensitivity"]) > 0


def test_other_actions_differ_at_every_step_and_stay_in_range():
  actions = np.random.default_rng(1).integers(0, 4, (50, 7)).astype(np.int32)
  other = offline.other_actions(actions, ActionSpec(True, num_actions=4))
  assert other.dtype == actions.dtype and np.all(other != actions)
  assert other.min() >= 0 and other.max() <= 3
  assert len(np.unique(other - actions)) > 2   # not one fixed shift
  continuous = offline.other_actions(np.zeros((5, 3, 2), np.float32),
                                     ActionSpec(False, dim=2, low=-1.0, high=1.0))
  assert continuous.shape == (5, 3, 2) and np.all(np.abs(continuous) <= 1.0)
  with pytest.raises(DatasetError, match="at least 2 actions"):
    offline.other_actions(actions, ActionSpec(True, num_actions=1))


def test_reward_class_counts_small_predictions_as_no_reward():
  np.testing.assert_array_equal(offline.reward_class(np.array([-2.0, -0.6, -0.4, 0.003, 0.5, 4.0])),
                                [-1, -1, 0, 0, 1, 1])


def test_gain_note_names_the_steps_whose_interval_is_above_zero():
  gain = {"mean": [1.0, 0.6, 0.2, 0.5, 0.4], "low": [0.5, 0.1, -0.1, 0.2, 0.05],
          "high": [1.5, 1.1, 0.5, 0.8, 0.7]}
  note = offline.gain_note(gain, [1, 5], episodes=11)
  assert "bootstrap over the 11 held-out episodes" in note
  assert "step 1 +1.00 [+0.50, +1.50]; step 5 +0.40 [+0.05, +0.70]" in note
  assert note.endswith("the CI is above 0 at 4 of 5 steps (1-2, 4-5).")
  assert offline.format_steps([1, 2, 3, 5, 7, 8, 12]) == "1-3, 5, 7-8, 12"
  below = dict(gain, low=[-1.0] * 5)
  assert offline.gain_note(below, [1], 3).endswith("the CI is above 0 at 0 of 5 steps.")


def test_compiled_memory_counts_arguments_outputs_and_temporaries():
  x = jnp.zeros((256, 256), jnp.float32)   # 256 KiB
  size = offline.compiled_memory(lambda a: (a @ a).sum(), x)
  assert size >= x.nbytes


def _tiny_sprite_dataset(directory, image_size=64):
  """About four 12-step episodes of the real sprite env, written as a dataset."""
  from wm_jax.agents import make_agent
  from wm_jax.dataset import collect_episodes
  from wm_jax.envs import make_env, protocol_card
  env = make_env("sprite", "reach", 2, 0, episode_length=11, image_size=image_size)
  writer = DatasetWriter(str(directory), dataset_spec(protocol_card(env), env.spec), 1000)
  collect_episodes(env, make_agent("random", None, env.spec), {}, writer, 40, 0, "random", True,
                   progress=False)
  env.close()


def _train_offline(dataset, workdir, *flags):
  return subprocess.run(
      [sys.executable, "-m", "experiments.train_offline",
       "--config=experiments/configs/diamond.py:debug", f"--dataset={dataset}",
       f"--workdir={workdir}", "--noprogress", "--horizon=3", "--eval_windows=4",
       "--eval_batch=2", "--log_every=2", "--holdout=0.25", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow   # 109 s of the 16-minute `make test` (measured); `make test-all` runs it
def test_train_offline_reports_resumes_and_never_overwrites(tmp_path):
  _tiny_sprite_dataset(tmp_path / "data", image_size=32)   # DIAMOND debug: 32x32
  # A wall-clock budget of 0.6 s ends training after its first (compiling) update.
  run = _train_offline(tmp_path / "data", tmp_path / "run", "--updates=100", "--max_minutes=0.01")
  assert run.returncode == 0, run.stderr[-3000:]
  report = tmp_path / "run" / "eval" / "update_1"
  for name in ("table.md", "table.csv", "per_step.csv", "results.json", "psnr.png",
               "strip.png"):
    assert (report / name).exists(), name
  results = json.load(open(report / "results.json"))
  assert results["horizon"] == 3 and len(results["model"]["psnr"]) == 3
  params = results["params"]
  assert params["total"] == params["denoiser"] + params["reward_end"] > 0
  assert results["hz_batch1"] > 0 and results["updates"] == 1
  table = (report / "table.md").read_text()
  assert "copy last frame" in table and "FID and LPIPS are not reported" in table
  assert "FVD is not reported: pass --fvd" in table
  assert "PSNR gain over copy-last-frame, dB (mean [95% CI], bootstrap over the" in table
  assert len(results["psnr_gain"]["low"]) == 3
  assert "psnr_gain_low" in (report / "per_step.csv").read_text().splitlines()[0]
  again = _train_offline(tmp_path / "data", tmp_path / "run", "--updates=100",
                         "--max_minutes=0.01")
  assert again.returncode != 0 and "Traceback" not in again.stderr
  assert "already holds the report" in again.stderr.strip().splitlines()[-1]
  more = _train_offline(tmp_path / "data", tmp_path / "run", "--updates=3")
  assert more.returncode == 0 and "resuming" in more.stderr, more.stderr[-3000:]
  assert [json.loads(l)["update"] for l in open(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
  assert (tmp_path / "run" / "eval" / "update_3" / "table.md").exists()
  assert (report / "table.md").read_text() == table


@pytest.mark.parametrize("problem", ["missing", "image_size"])
def test_train_offline_bad_dataset_is_one_sentence(tmp_path, problem):
  if problem == "missing":
    out = _train_offline(tmp_path / "nothing", tmp_path / "run")
    expected = "does not exist: write one with `python -m experiments.collect"
  else:
    _tiny_sprite_dataset(tmp_path / "data", image_size=32)
    out = _train_offline(tmp_path / "data", tmp_path / "run",
                         "--config=experiments/configs/diamond.py:atari100k")
    expected = "holds 32x32 frames but the config's env.protocol.image_size is 64: pass"
  assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert expected in out.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "run").exists()


def test_a_wall_clock_budget_always_checkpoints_the_last_update(tmp_path, monkeypatch):
  """The budget runs out while an update computes (dispatch is asynchronous): training must stop
  *and* save that update, with its wall clock, not stop unsaved at the next check."""
  from experiments.configs import diamond
  from wm_jax.checkpoint import Checkpointer
  config = diamond.get_config("debug")
  data = _stream([20, 20])
  data.spec.update(entries={"image": {"shape": [8, 8, 3], "dtype": "uint8"}},
                   action={"discrete": True, "num_actions": 3})
  with config.unlocked():
    config.env.protocol = {}
    config.run.batch_size, config.run.batch_length = 2, 4
  counting = WorldModel(init=lambda key: {"count": jnp.zeros(())}, schedule=lambda n: None,
                        update=lambda s, b, k, p: ({"count": s["count"] + 1},
                                                   {"count_loss": s["count"]}),
                        reset_from=None, step=None, context_length=1)
  monkeypatch.setattr(offline, "make_world_model", lambda *args: counting)
  clock = iter(range(0, 10_000, 10))   # every reading of the clock by offline is 10 s later
  monkeypatch.setattr(offline, "time", types.SimpleNamespace(
      time=lambda: float(next(clock)), perf_counter=time.perf_counter))
  _, state, counters, _, finished = offline.train(config, data, str(tmp_path / "run"),
                                                  updates=1000, holdout=0.5,
                                                  checkpoint_every=1000, log_every=1000,
                                                  progress=False, max_minutes=0.5)
  assert finished and 1 <= counters["updates"] < 5 and counters["wall_seconds"] >= 30
  ckpt = Checkpointer(str(tmp_path / "run"))
  assert ckpt.latest_step() == counters["updates"] == int(state["count"])
  ckpt.close()
