"""DIAMOND's denoiser update and sampling here and in the official PyTorch code, side by side.

  git clone <DIAMOND's public repository (eloialonso/diamond)> /tmp/diamond_src
  python3 -m venv /tmp/torch_venv && /tmp/torch_venv/bin/pip install torch==2.13.0
  python -m benchmarks.diamond_official --official_python=/tmp/torch_venv/bin/python \\
      --official_src=/tmp/diamond_src [--rounds=3] [--updates=3] [--frames=8] [--device=cpu|cuda]

The official side imports `Denoiser` and `DiffusionSampler` from --official_src/src/models/
diffusion (none of their code copied here; the package's training-only imports `data.Batch`
and `utils.LossAndLogs` are satisfied by loading `data/batch.py` and a one-line stand-in), in
float32 on `--device` (ours on JAX's default device: run both on the GPU of a GPU machine, or
both on the CPU), at DIAMOND's Atari config (config/agent/default.yaml: U-Net channels
[64, 64, 64, 64], depths [2, 2, 2, 2], cond 256, 4 conditioning frames; trainer.yaml: AdamW
lr 1e-4, weight decay 1e-2 on weights (its configure_opt), eps 1e-8, grad-norm clip 1), and
times (a) one denoiser update (Denoiser.forward on a batch of `--batch_size` segments of 5
frames, backward, clip, AdamW step) and (b) sampling next frames at batch 1 with
`--euler_steps` Euler steps (DiffusionSampler.sample, DIAMOND's imagination step without the
reward/end model). Ours runs the same two things with wm_jax's frame-stack denoiser
(`DiamondLearner.train_denoiser`, and `edm.sample` of `DiamondModel.guided_denoiser`). Rounds
interleave the two (official, then ours, `--rounds` times). The JSON gives every round's
figures, the medians and the speed-ups.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from benchmarks.official import run_official

FLAGS = flags.FLAGS
flags.DEFINE_string("official_python", None, "Python of a venv with torch")
flags.DEFINE_string("official_src", None, "checkout of DIAMOND's repository")
flags.DEFINE_integer("rounds", 3, "interleaved rounds (official, ours)")
flags.DEFINE_integer("updates", 3, "timed denoiser updates per round and side, after one warm-up")
flags.DEFINE_integer("frames", 8, "timed sampled frames per round and side, after one warm-up")
flags.DEFINE_integer("batch_size", 8, "denoiser update batch")
flags.DEFINE_integer("euler_steps", 3, "Euler steps per sampled frame (DIAMOND's 3)")
flags.DEFINE_integer("actions", 6, "discrete actions")
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "the official side's torch device")

# Runs in the official venv: DIAMOND's Denoiser at its Atari config, an update and sampling.
OFFICIAL = """
import importlib.util, json, os, sys, time, types
src = os.path.join(sys.argv[1], "src")
B, A, n_updates, n_frames, steps = (int(x) for x in sys.argv[2:7])
device = sys.argv[7]
def load(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module
import torch
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
data = types.ModuleType("data"); data.__path__ = [os.path.join(src, "data")]
sys.modules["data"] = data
load("data.segment", os.path.join(src, "data", "segment.py"))
data.Batch = load("data.batch", os.path.join(src, "data", "batch.py")).Batch
utils = types.ModuleType("utils"); utils.LossAndLogs = tuple; sys.modules["utils"] = utils
models = types.ModuleType("models"); models.__path__ = [os.path.join(src, "models")]
sys.modules["models"] = models
from models.diffusion import (Denoiser, DenoiserConfig, DiffusionSampler, DiffusionSamplerConfig,
                              InnerModelConfig, SigmaDistributionConfig)
torch.manual_seed(0)
H = 4
inner = InnerModelConfig(img_channels=3, num_steps_conditioning=H, cond_channels=256,
                         depths=[2, 2, 2, 2], channels=[64, 64, 64, 64],
                         attn_depths=[0, 0, 0, 0], num_actions=A)
denoiser = Denoiser(DenoiserConfig(inner_model=inner, sigma_data=0.5, sigma_offset_noise=0.3))
denoiser = denoiser.to(device)
denoiser.setup_training(SigmaDistributionConfig(loc=-0.4, scale=1.2, sigma_min=2e-3, sigma_max=20))
decay = [p for n, p in denoiser.named_parameters() if n.endswith("weight") and p.ndim > 1
         and "emb" not in n]
rest = [p for n, p in denoiser.named_parameters() if not (n.endswith("weight") and p.ndim > 1
        and "emb" not in n)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-2},
                         {"params": rest, "weight_decay": 0.0}], lr=1e-4, eps=1e-8)
batch = data.Batch(obs=torch.rand(B, H + 1, 3, 64, 64, device=device) * 2 - 1,
                   act=torch.randint(0, A, (B, H + 1), device=device),
                   rew=torch.zeros(B, H + 1, device=device),
                   end=torch.zeros(B, H + 1, dtype=torch.long, device=device),
                   trunc=torch.zeros(B, H + 1, dtype=torch.long, device=device),
                   mask_padding=torch.ones(B, H + 1, dtype=torch.bool, device=device),
                   info=[{}] * B,
                   segment_ids=[None] * B)
def update():
  opt.zero_grad()
  loss, _ = denoiser(batch)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
  opt.step()
update()
sync()
t0 = time.perf_counter()
for _ in range(n_updates):
  update()
sync()
update_s = (time.perf_counter() - t0) / n_updates
sampler = DiffusionSampler(denoiser, DiffusionSamplerConfig(num_steps_denoising=steps))
prev_obs = torch.rand(1, H, 3, 64, 64, device=device) * 2 - 1
prev_act = torch.randint(0, A, (1, H), device=device)
sampler.sample(prev_obs, prev_act)
sync()
t0 = time.perf_counter()
for _ in range(n_frames):
  sampler.sample(prev_obs, prev_act)
sync()
print(json.dumps({"update_s": update_s, "frames_per_s": n_frames / (time.perf_counter() - t0),
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "params": sum(p.numel() for p in denoiser.parameters())}))
"""


def official_round() -> dict:
  return run_official(FLAGS.official_python, OFFICIAL,
                      [FLAGS.official_src, FLAGS.batch_size, FLAGS.actions, FLAGS.updates,
                       FLAGS.frames, FLAGS.euler_steps, FLAGS.device], "DIAMOND")


def ours():
  """(compiled denoiser update, its arguments, compiled one-frame sampler, its arguments, compile seconds, params) of wm_jax's DIAMOND at the Atari config, float32."""
  import jax
  import jax.numpy as jnp

  from benchmarks.batches import fake_batch
  from experiments.configs import diamond
  from wm_jax.agents.diamond import DiamondLearner
  from wm_jax.core import edm
  from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
  from wm_jax.models.diamond import sampler_config

  spec = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                 act=ActionSpec(True, num_actions=FLAGS.actions))
  cfg = diamond.get_config("atari100k").agent
  cfg.precision = "float32"
  cfg.denoiser.sampler.num_steps = FLAGS.euler_steps
  learner = DiamondLearner(cfg, spec)
  model, H = learner.model, cfg.denoiser.num_cond_frames
  params = jax.jit(model.init)(jax.random.key(0))
  opt = {"denoiser": learner.opts["denoiser"].init(params["denoiser"])}
  update_args = (params, opt, fake_batch(spec, FLAGS.batch_size, H + 1), jax.random.key(1))

  def one_frame(params, prev_frames, prev_actions, key):
    denoiser = model.guided_denoiser(params["denoiser"], prev_frames, prev_actions)
    return edm.sample(denoiser, key, (1, 64, 64, 3), sampler_config(cfg))

  sample_args = (params, jnp.zeros((1, H, 64, 64, 3)), jnp.zeros((1, H), jnp.int32),
                 jax.random.key(2))
  t0 = time.perf_counter()
  update = jax.jit(learner.train_denoiser).lower(*update_args).compile()
  sample = jax.jit(one_frame).lower(*sample_args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready((update(*update_args), sample(*sample_args)))
  n_params = int(sum(x.size for x in jax.tree.leaves(params["denoiser"])))
  return update, update_args, sample, sample_args, compile_s, n_params


def main(_):
  if not FLAGS.official_python or not FLAGS.official_src:
    raise app.UsageError("Give --official_python and --official_src (see the module docstring).")
  import jax
  import numpy as np
  update, update_args, sample, sample_args, compile_s, n_params = ours()
  official, our_update, our_frames = [], [], []
  for _ in range(FLAGS.rounds):
    official.append(official_round())
    t0 = time.perf_counter()
    for _ in range(FLAGS.updates):
      out = update(*update_args)
    jax.block_until_ready(out)
    our_update.append((time.perf_counter() - t0) / FLAGS.updates)
    t0 = time.perf_counter()
    for _ in range(FLAGS.frames):
      out = sample(*sample_args)
    jax.block_until_ready(out)
    our_frames.append(FLAGS.frames / (time.perf_counter() - t0))
  off_update = [r["update_s"] for r in official]
  off_frames = [r["frames_per_s"] for r in official]
  med = lambda xs: round(float(np.median(xs)), 3)
  print(json.dumps({
      "what": "DIAMOND denoiser update (EDM loss, gradients, clip, AdamW) and next-frame "
              "sampling, float32, Atari config",
      "official_device": FLAGS.device,
      "update_batch": FLAGS.batch_size, "sampling_batch": 1, "euler_steps": FLAGS.euler_steps,
      "actions": FLAGS.actions,
      "official": {"seconds_per_update": [round(s, 3) for s in off_update],
                   "frames_per_s": [round(f, 2) for f in off_frames],
                   "median_update_s": med(off_update), "median_frames_per_s": med(off_frames),
                   "torch": official[0]["torch"], "threads": official[0]["threads"],
                   "params": official[0]["params"]},
      "wm_jax": {"seconds_per_update": [round(s, 3) for s in our_update],
                 "frames_per_s": [round(f, 2) for f in our_frames],
                 "median_update_s": med(our_update), "median_frames_per_s": med(our_frames),
                 "compile_s": round(compile_s, 1), "jax": jax.__version__, "params": n_params},
      "update_speedup_median": round(float(np.median(off_update) / np.median(our_update)), 2),
      "sampling_speedup_median": round(float(np.median(our_frames) / np.median(off_frames)), 2),
      "device": jax.devices()[0].device_kind}, indent=1))


if __name__ == "__main__":
  app.run(main)
