"""Reading run directories: scoring modes, torn lines, missing files, protocol checks.

`write_run` builds run directories in the format wm_jax/train.py writes; test_report.py and
test_sweep.py reuse it.
"""

import json
import os

import pytest

from wm_jax.eval import runs

ATARI_CARD = dict(suite="atari", variant="atari100k", frames_per_step=4, image_size=64,
                  frame_skip=4, sticky_prob=0.0, noop_max=30, life_loss_terminal=False,
                  max_episode_frames=108_000)


def write_run(root, method="random", game="Pong", seed=0, eval_returns=(-20.0, -21.0),
              train_returns=(-21.0, -20.0, -19.0), steps=20_000, done=True, card=None,
              suite="atari"):
  """A run directory under root/method/game/seed<k> with the files of a real run: train
  episodes spread over `steps` agent steps, one earlier and one final eval round."""
  path = os.path.join(str(root), method, game, f"seed{seed}")
  os.makedirs(path, exist_ok=True)
  full_card = {**ATARI_CARD, "suite": suite, **(card or {}), "task": game, "method": method}
  config = {"method": method, "variant": full_card["variant"], "seed": seed,
            "env": {"suite": suite, "task": game}, "run": {"steps": steps, "eval_episodes": 2}}
  with open(os.path.join(path, "protocol.json"), "w") as f:
    json.dump(full_card, f)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  base = {"suite": suite, "task": game, "seed": seed, "time": 0.0}
  lines = []
  for i, ret in enumerate(train_returns):
    step = (i + 1) * steps // len(train_returns)
    lines.append({"kind": "train", "agent_step": step, "env_frame": 4 * step, "return": ret,
                  "length": 100, **base})
  for rnd, step in enumerate((steps // 2, steps)):
    for ret in (eval_returns if step == steps else (-21.0,)):
      lines.append({"kind": "eval", "agent_step": step, "env_frame": 4 * step, "return": ret,
                    "length": 100, "eval_round": rnd, **base})
  with open(os.path.join(path, "scores.jsonl"), "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)
  if done:
    with open(os.path.join(path, "done.json"), "w") as f:
      json.dump({"agent_step": steps}, f)
  return path


def test_eval_mode_uses_the_last_round_and_train_mode_the_window(tmp_path):
  path = write_run(tmp_path, eval_returns=(-10.0, -12.0), train_returns=(-21, -20, -19, -15),
                   steps=40_000)
  run, warnings = runs.load_run(path)
  assert warnings == [] and run.done and run.task == "Pong" and run.seed == 0
  assert runs.final_score(run, "eval") == (-11.0, 2)
  # Train episodes end at 10k, 20k, 30k, 40k: the last 10k steps hold only the 40k one.
  assert runs.final_score(run, "train", window=10_000) == (-15.0, 1)
  assert runs.final_score(run, "train", window=15_000) == (-17.0, 2)


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
  path = write_run(tmp_path)
  with open(os.path.join(path, "scores.jsonl"), "a") as f:
    f.write('{"kind": "eval", "agent_st')
  run, warnings = runs.load_run(path)
  assert run is not None and len(run.records) == 6
  assert len(warnings) == 1
  assert "scores.jsonl: the last line is cut off" in warnings[0] and "Rerun" in warnings[0]


def test_missing_scores_and_unfinished_runs_are_left_out_with_the_fix(tmp_path):
  empty = tmp_path / "random" / "Pong" / "seed1"
  empty.mkdir(parents=True)
  (empty / "train.log").write_text("error: something\n")
  run, warnings = runs.load_run(str(empty))
  assert run is None and "has no scores.jsonl" in warnings[0] and "train.log" in warnings[0]

  path = write_run(tmp_path, seed=2, done=False)
  run, warnings = runs.load_run(path)
  assert run is None and "has not finished" in warnings[0]
  assert "--include_unfinished" in warnings[0]
  run, warnings = runs.load_run(path, include_unfinished=True)
  assert run is not None and not run.done


def test_find_run_dirs_does_not_descend_into_runs(tmp_path):
  a = write_run(tmp_path, game="Pong")
  b = write_run(tmp_path, game="Breakout")
  os.makedirs(os.path.join(a, "checkpoints", "100"))
  (tmp_path / "notes").mkdir()
  assert runs.find_run_dirs(str(tmp_path)) == sorted([a, b])


def test_protocol_mismatch_is_refused_unless_forced(tmp_path):
  same = [runs.load_run(write_run(tmp_path, game=g, method=m))[0]
          for g in ("Pong", "Breakout") for m in ("random", "other")]
  assert runs.check_protocols(same, force=False) is None   # task and method may differ
  sticky = runs.load_run(write_run(tmp_path / "b", card={"sticky_prob": 0.25}))[0]
  with pytest.raises(runs.ProtocolMismatchError,
                     match=r"sticky_prob: 0.0 in 4 runs, 0.25 in 1 run.*--force_mixed_protocols"):
    runs.check_protocols(same + [sticky], force=False)
  assert "2 different protocols" in runs.check_protocols(same + [sticky], force=True)
  longer = runs.load_run(write_run(tmp_path / "c", steps=100_000))[0]
  with pytest.raises(runs.ProtocolMismatchError, match="run.steps"):
    runs.check_protocols(same + [longer], force=False)


def test_learning_curve_axes_are_env_frames(tmp_path):
  run, _ = runs.load_run(write_run(tmp_path, steps=20_000))
  x, y = runs.learning_curve(run, "eval")
  assert list(x) == [40_000, 80_000] and list(y) == [-21.0, -20.5]
  x, y = runs.learning_curve(run, "train", bins=3)
  assert x.max() == 80_000 and len(y) == 3
