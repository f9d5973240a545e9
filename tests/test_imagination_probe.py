"""benchmarks/imagination_probe.py: a sprite run's world model under the goal walker and random
actions, and an actor-critic trained in it frozen; runs of other tasks refused in one sentence."""

import json
import os
import subprocess
import sys

import jax
import pytest

from experiments.configs import diamond, iris, storm
from wm_jax.agents import make_agent
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs.sprite import SpriteEnv, SpriteProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save_untrained_run(run_dir, config):
  spec = SpriteEnv(1, 0, SpriteProtocol(**dict(config.env.protocol))).spec
  state = make_agent(config.method, config.agent, spec).init(jax.random.PRNGKey(0))
  ckpt = Checkpointer(str(run_dir))
  ckpt.save(100, {"agent": state}, {"agent_step": 100, "updates": 7, "wall_seconds": 1.0})
  ckpt.close()
  (run_dir / "config.json").write_text(config.to_json_best_effort())


def _probe(*flags):
  return subprocess.run([sys.executable, "-m", "benchmarks.imagination_probe", *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow   # 57 s of the 15-minute `make test` (measured); `make test-all` runs it
def test_probe_reports_both_policies_and_an_actor_critic_curve(tmp_path):
  _save_untrained_run(tmp_path / "iris", iris.get_config("debug"))
  done = _probe(f"--run={tmp_path / 'iris'}", "--starts=16", "--horizon=8", "--ac_updates=2",
                "--ac_starts=2", "--eval_episodes=2")
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout)
  assert (out["method"], out["agent_step"], out["updates"]) == ("iris", 100, 7)
  rewards = out["reward_per_step"]
  # Real env: within 8 steps the walker reaches every goal (at most 6 cells away), so it earns
  # at least 1/8 per step; random actions earn far less.
  assert rewards["goal_walker"]["real"] >= 0.125 > rewards["random"]["real"]
  for policy in rewards.values():
    assert -1.0 <= policy["imagined"] <= 1.0   # IRIS rewards are signs
  curve = out["actor_critic_in_frozen_model"]["eval_curve"]
  assert [p["updates"] for p in curve] == [0, 1, 2]
  assert all(0.0 <= p["mean_return"] <= 50.0 for p in curve)


@pytest.mark.slow   # 55 s of the 14.5-minute `make test` (measured); `make test-all` runs it
def test_probe_reads_a_32x32_diamond_run(tmp_path):
  """DIAMOND's debug runs are on 32x32 frames: the probe's env, walker and fresh actor-critic
  take the run's frame size."""
  _save_untrained_run(tmp_path / "diamond", diamond.get_config("debug"))
  done = _probe(f"--run={tmp_path / 'diamond'}", "--starts=4", "--horizon=3", "--ac_updates=1",
                "--ac_starts=2", "--eval_episodes=2")
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout)
  assert out["method"] == "diamond"
  for policy in out["reward_per_step"].values():
    kept = policy["imagined_goal_kept"]
    assert kept is None or 0.0 <= kept <= 1.0
  assert [p["updates"] for p in out["actor_critic_in_frozen_model"]["eval_curve"]] == [0, 1]


def test_runs_of_other_tasks_are_refused_in_one_sentence(tmp_path):
  config = storm.get_config("debug")
  config.env.update(suite="classic", task="CartPole-v1")
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  done = _probe(f"--run={tmp_path}")
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert "trained on classic/CartPole-v1" in done.stderr and "sprite_reach" in done.stderr
