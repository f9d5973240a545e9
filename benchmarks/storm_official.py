"""STORM's world-model update here and in the official PyTorch code, side by side on this machine.

  git clone <STORM's public repository (weipu-zhang/STORM)> /tmp/storm_src
  python3 -m venv /tmp/storm_venv
  /tmp/storm_venv/bin/pip install torch==2.13.0 einops numpy tensorboardX yacs
  python -m benchmarks.storm_official --official_python=/tmp/storm_venv/bin/python \\
      --official_src=/tmp/storm_src [--rounds=5] [--updates=3] [--device=cpu|cuda]
      [--precision=float32|bfloat16]

The official side runs `WorldModel.update` (sub_models/world_models.py, imported from
--official_src, none of its code copied here) in its own venv, on `--device`. Ours runs
`world_model_step` of wm_jax/models/storm.py at the same dimensions on JAX's default device
(run both on the GPU of a GPU machine, or both on the CPU): the paper config (32 x 32 latents,
CNN 32-256 channels, Transformer 2 x 512 x 8 heads), batch 16 x 64 of 64 x 64 RGB frames, 6
actions. `--precision=float32` switches the official autocast off (STORM's own default on a GPU
is bfloat16 autocast with its GradScaler; both are CUDA-only and switch themselves off on the
CPU); `bfloat16` keeps the official autocast and runs ours with `precision=bfloat16`. Rounds
interleave the two (official, then ours, `--rounds` times, each timing `--updates` updates
after a warm-up), and the JSON gives every round's seconds per update, the medians and their
ratio.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from benchmarks.official import run_official

FLAGS = flags.FLAGS
flags.DEFINE_string("official_python", None, "Python of a venv with torch, einops, tensorboardX, yacs")
flags.DEFINE_string("official_src", None, "checkout of STORM's repository")
flags.DEFINE_integer("rounds", 5, "interleaved rounds (official, ours)")
flags.DEFINE_integer("updates", 3, "timed updates per round and side, after one warm-up")
flags.DEFINE_integer("batch_size", 16, "B")
flags.DEFINE_integer("batch_length", 64, "T")
flags.DEFINE_integer("actions", 6, "discrete actions")
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "the official side's torch device")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "float32 on both sides, or the official bfloat16 autocast against ours in "
                  "bfloat16 (only on a GPU)")

# Runs in the official venv: builds STORM's WorldModel at the paper config and times update().
OFFICIAL = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from sub_models.world_models import WorldModel
B, T, A, n = (int(x) for x in sys.argv[2:6])
device, amp = sys.argv[6], sys.argv[7] == "bfloat16"
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
torch.manual_seed(0)
model = WorldModel(in_channels=3, action_dim=A, transformer_max_length=64,
                   transformer_hidden_dim=512, transformer_num_layers=2,
                   transformer_num_heads=8).to(device)
model.use_amp = amp
obs = torch.rand(B, T, 3, 64, 64, device=device)
action = torch.randint(0, A, (B, T), device=device)
reward = torch.randn(B, T, device=device)
termination = torch.zeros(B, T, device=device)
model.update(obs, action, reward, termination)
sync()
t0 = time.perf_counter()
for _ in range(n):
  model.update(obs, action, reward, termination)
sync()
print(json.dumps({"update_s": (time.perf_counter() - t0) / n, "torch": torch.__version__,
                  "threads": torch.get_num_threads(),
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def official_round() -> dict:
  return run_official(FLAGS.official_python, OFFICIAL,
                      [FLAGS.official_src, FLAGS.batch_size, FLAGS.batch_length, FLAGS.actions,
                       FLAGS.updates, FLAGS.device, FLAGS.precision], "STORM")


def our_update():
  """(jitted world-model step, its arguments) of wm_jax's STORM at the paper config in --precision."""
  import jax

  from benchmarks.batches import fake_batch
  from experiments.configs import storm
  from wm_jax.agents.actor_critic import make_optimizer
  from wm_jax.agents.dreamer import world_model_step
  from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
  from wm_jax.models.storm import make_storm_model

  spec = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                 act=ActionSpec(True, num_actions=FLAGS.actions))
  cfg = storm.get_config("atari100k").agent
  cfg.precision = FLAGS.precision
  wm = make_storm_model(cfg, spec)
  opt = make_optimizer(cfg.model_opt)
  params = jax.jit(wm.init)(jax.random.key(0))
  args = (params, opt.init(params), fake_batch(spec, FLAGS.batch_size, FLAGS.batch_length),
          jax.random.key(1))
  t0 = time.perf_counter()
  step = jax.jit(lambda p, o, b, k: world_model_step(wm, opt, p, o, b, k)[:3])
  step = step.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(step(*args))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  return step, args, compile_s, int(n_params)


def main(_):
  if not FLAGS.official_python or not FLAGS.official_src:
    raise app.UsageError("Give --official_python and --official_src (see the module docstring).")
  if FLAGS.precision == "bfloat16" and FLAGS.device == "cpu":
    raise app.UsageError("STORM's bfloat16 autocast runs on CUDA only: pass --device=cuda on a "
                         "GPU machine, or --precision=float32.")
  import jax
  import numpy as np
  step, args, compile_s, n_params = our_update()
  official, ours = [], []
  for _ in range(FLAGS.rounds):
    official.append(official_round())
    t0 = time.perf_counter()
    for _ in range(FLAGS.updates):
      out = step(*args)
    jax.block_until_ready(out)
    ours.append((time.perf_counter() - t0) / FLAGS.updates)
  off_s = [r["update_s"] for r in official]
  print(json.dumps({
      "what": f"STORM world-model update (loss, gradients, Adam step), {FLAGS.precision}",
      "official_device": FLAGS.device, "precision": FLAGS.precision,
      "batch": [FLAGS.batch_size, FLAGS.batch_length], "actions": FLAGS.actions,
      "official": {"seconds_per_update": [round(s, 3) for s in off_s],
                   "median": round(float(np.median(off_s)), 3), "torch": official[0]["torch"],
                   "threads": official[0]["threads"], "params": official[0]["params"]},
      "wm_jax": {"seconds_per_update": [round(s, 3) for s in ours],
                 "median": round(float(np.median(ours)), 3), "compile_s": round(compile_s, 1),
                 "jax": jax.__version__, "params": n_params},
      "speedup_median": round(float(np.median(off_s) / np.median(ours)), 2),
      "device": jax.devices()[0].device_kind}, indent=1))


if __name__ == "__main__":
  app.run(main)
