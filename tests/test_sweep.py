"""The sweep: job expansion, skip/resume, failures, concurrency limit, local pool and Ray.

Runs use a stub train module (written per test) that writes a run directory in the real
format with `test_eval_runs.write_run`, so the report can read the sweep's output.
"""

import os
import subprocess
import sys

import pytest

from experiments import sweep
from wm_jax.errors import UnknownNameError, UserError

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
RANDOM_CONFIG = "experiments/configs/random.py:atari100k"

STUB = '''
import os, sys, time
sys.path.insert(0, {tests!r})
from test_eval_runs import write_run
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
path, game, seed = args["workdir"], args["config.env.task"], int(args["config.seed"])
state = os.path.join({state!r})
open(os.path.join(state, "calls.txt"), "a").write(f"{{game}}/{{seed}} {{args.get('config.run.steps')}}\\n")
marker = os.path.join(state, "running", f"{{game}}-{{seed}}")
open(marker, "w").close()
live = len(os.listdir(os.path.join(state, "running")))
open(os.path.join(state, "live.txt"), "a").write(f"{{live}}\\n")
time.sleep(0.3)
os.remove(marker)
if game == "Boxing" and not os.path.exists(os.path.join(state, "fixed")):
    sys.exit("error: Boxing is broken today")
root = os.path.dirname(os.path.dirname(os.path.dirname(path)))
write_run(root, method=os.path.basename(os.path.dirname(os.path.dirname(path))), game=game,
          seed=seed)
print("finished")
'''


@pytest.fixture
def stub(tmp_path):
  """(env for the sweep subprocess, state dir) with the stub train module on PYTHONPATH."""
  state = tmp_path / "state"
  (state / "running").mkdir(parents=True)
  (tmp_path / "stub_train.py").write_text(STUB.format(tests=TESTS, state=str(state)))
  env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
  return env, state


def _sweep(env, workdir, *extra, games="Pong,Breakout,Boxing", seeds=2):
  return subprocess.run(
      [sys.executable, "-m", "experiments.sweep", f"--config={RANDOM_CONFIG}",
       f"--games={games}", f"--seeds={seeds}", f"--workdir={workdir}",
       "--train_module=stub_train", *extra],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_make_jobs_expands_methods_games_seeds(tmp_path):
  jobs = sweep.make_jobs([RANDOM_CONFIG], "atari100k", 2, str(tmp_path), ["--config.run.steps=9"],
                         "experiments.train")
  assert len(jobs) == 52 and jobs[0].name == "random/Alien/seed0"
  assert jobs[1].path == os.path.join(str(tmp_path), "random", "Alien", "seed1")
  assert jobs[0].command[-3:] == ("--config.env.task=Alien", "--config.seed=0",
                                  "--config.run.steps=9")
  assert [j.game for j in sweep.make_jobs([RANDOM_CONFIG], "pong,ms_pacman", 1, str(tmp_path),
                                          [], "m")] == ["Pong", "MsPacman"]


def test_user_errors_are_one_sentence(tmp_path):
  with pytest.raises(UnknownNameError, match="did you mean 'Breakout'"):
    sweep.make_jobs([RANDOM_CONFIG], "Brekout", 1, str(tmp_path), [], "m")
  with pytest.raises(UserError, match="does not exist"):
    sweep.make_jobs(["experiments/configs/nope.py:atari100k"], "Pong", 1, str(tmp_path), [], "m")
  with pytest.raises(UserError, match="Atari preset but this config runs suite 'classic'"):
    sweep.make_jobs(["experiments/configs/random.py:debug"], "atari100k", 1, str(tmp_path), [],
                    "m")
  with pytest.raises(UserError, match="both write runs of method 'random'"):
    sweep.make_jobs([RANDOM_CONFIG, "experiments/configs/random.py:debug"], "Pong", 1,
                    str(tmp_path), [], "m")
  with pytest.raises(UserError, match=r"--config.x=y \(with '='\)"):
    sweep.split_passthrough(["sweep", "--config.seed", "3"])


@pytest.mark.parametrize("config, expected", [
    (RANDOM_CONFIG, "error: Game 'Tetris' is not one of the 26 Atari-100k games (did you mean "
                    "'Asterix'?)"),
    ("experiments/configs/random.py:debug", "error: Unknown classic-control task 'Pong': "
                                            "choose one of Acrobot-v1, CartPole-v0"),
])
def test_games_outside_the_suite_are_refused_before_any_run(tmp_path, config, expected):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", f"--config={config}", "--games=Pong,Tetris",
       f"--workdir={tmp_path / 'runs'}", "--dry_run"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(expected)


def test_local_pool_runs_skips_retries_and_reports(stub, tmp_path):
  env, state = stub
  workdir = tmp_path / "runs"
  result = _sweep(env, workdir, "--concurrency=2", "--config.run.steps=123")
  assert result.returncode == 1, result.stderr
  out = result.stdout
  assert "6 runs (1 method(s) x 3 games x 2 seeds)" in out
  assert "FAILED random/Boxing/seed0 (exit 1): error: Boxing is broken today" in out
  assert "4/6 done, 0 running, 2 failed, 0 pending" in out
  assert "rerun the same command to retry them" in result.stderr
  calls = (state / "calls.txt").read_text().split("\n")
  assert sorted(c for c in calls if c) == sorted(
      f"{g}/{s} 123" for g in ("Pong", "Breakout", "Boxing") for s in (0, 1))
  live = [int(x) for x in (state / "live.txt").read_text().split()]
  assert 1 <= max(live) <= 2                      # the concurrency limit holds

  (state / "fixed").touch()                       # rerun: finished runs are skipped
  result = _sweep(env, workdir, "--concurrency=2", "--config.run.steps=123")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "6/6 done (4 already finished), 0 running, 0 failed, 0 pending" in result.stdout
  assert len([c for c in (state / "calls.txt").read_text().split("\n") if c]) == 8
  log = (workdir / "random" / "Boxing" / "seed0" / "train.log").read_text()
  assert "Boxing is broken today" in log and "finished" in log

  from benchmarks import report                   # the sweep's output is a valid report input
  warnings = []
  report.run_report(str(workdir), str(tmp_path / "report"), ["IRIS"], warnings, reps=50)
  assert warnings == []
  assert (tmp_path / "report" / "per_game.csv").read_text().count("this project") == 3


@pytest.mark.slow
def test_ray_launcher_on_a_local_ray_instance(stub, tmp_path):
  env, state = stub
  (state / "fixed").touch()
  result = _sweep(env, tmp_path / "runs", "--launcher=ray", "--ray_address=local",
                  "--concurrency=2", games="Pong,Breakout", seeds=1)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "2/2 done, 0 running, 0 failed, 0 pending" in result.stdout
  assert all((tmp_path / "runs" / "random" / g / "seed0" / "done.json").exists()
             for g in ("Pong", "Breakout"))
