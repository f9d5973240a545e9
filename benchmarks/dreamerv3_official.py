"""DreamerV3's full update here and in the official code, side by side on this machine.

  # the 2023 release (architecturally ours: stride-2 convolutions, dense GRU, LayerNorm)
  python3.11 -m venv /tmp/dv3venv
  /tmp/dv3venv/bin/pip install jax==0.4.33 jaxlib==0.4.33 optax==0.2.3 chex==0.1.86 \\
      tensorflow-probability==0.24.0 "numpy<2" ruamel.yaml rich cloudpickle decorator gast \\
      dm-tree absl-py
  /tmp/dv3venv/bin/pip install --no-deps dreamerv3==1.5.0
  python -m benchmarks.dreamerv3_official --official_python=/tmp/dv3venv/bin/python \\
      [--size=S|size1m] [--rounds=5] [--updates=3]
  # the current release: a checkout of its repository (danijar/dreamerv3) and a venv with its
  # requirements.txt at jax 0.4.33 on the CPU
  python -m benchmarks.dreamerv3_official --release=current --official_src=CHECKOUT \\
      --official_python=VENV/bin/python [--size=S|size1m]

The 2023 side builds `dreamerv3.Agent` of the `dreamerv3` 1.5.0 package with its `atari100k`
config, which is DreamerV3 size S (deter 512, units 512, 2 layers, CNN depth 32, 32 x 32 latents,
batch 16 x 64, horizon 15), and times `agent.train(data, state)`; the current side builds the
repository's `dreamerv3.agent.Agent` with its `atari100k` config and times `agent.train(carry,
batch)` on batches from its own device stream (`agent.stream`). Both run on the CPU in float32,
in their own venv (imported there, none of their code copied here), on batches already on the
device, as their training loops deliver them. Ours times `update` of wm_jax/agents/dreamer.py on
a batch on the device (our replay samples there).

Same dimensions, per release: `--size=S` is the 2023 atari100k config; `--size=size1m` is the
current release's size1m (deter 512, hidden 64, 32 x 4 latents, CNN depth 4, MLP units 64). The
2023 code has no channel multipliers or kernel setting (each stage doubles, kernel 4, as ours by
default); against the current release, ours takes its CNN multipliers (2, 3, 4, 4), kernel 5 and
layer counts (`our_fields` in the JSON). The current networks still differ in kind (stride-1
convolutions with max-pooling, an upsample-then-conv decoder, a block-diagonal GRU, RMSNorm).

Rounds interleave the two (official, then ours, `--rounds` times), each timing `--updates`
updates after a warm-up; the official process of each round reuses the first round's compiled
program from a persistent compilation cache. The JSON gives every round's seconds per update,
the medians and minima, their ratios, both compile (or first-call) times and parameter counts.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

from absl import app, flags

from benchmarks.official import run_official

FLAGS = flags.FLAGS
flags.DEFINE_string("official_python", None, "Python of a venv with dreamerv3==1.5.0 (docstring)")
flags.DEFINE_integer("rounds", 5, "interleaved rounds (official, ours)")
flags.DEFINE_integer("updates", 3, "timed updates per round and side, after one warm-up")
flags.DEFINE_enum("release", "2023", ["2023", "current"],
                  "2023: the dreamerv3 1.5.0 package; current: a checkout of the repository")
flags.DEFINE_string("official_src", None, "checkout of danijar/dreamerv3 (--release=current)")
flags.DEFINE_enum("size", "S", ["S", "size1m"], "DreamerV3 size S, or the current release's size1m")
flags.DEFINE_integer("batch_size", 16, "B")
flags.DEFINE_integer("batch_length", 64, "T")
flags.DEFINE_integer("actions", 6, "discrete actions")

# Our config fields for the current release's size1m (deter 512 from S).
_SIZE1M = {"rssm.hidden": 64, "rssm.classes": 4, "encoder.cnn_depth": 4, "decoder.cnn_depth": 4,
           **{f"{section}.units": 64 for section in ("encoder", "decoder", "reward_head",
                                                     "cont_head", "actor", "critic")}}
# Our config fields for the current release's layout: its CNN channel multipliers and kernel,
# 3-layer policy and value MLPs, 1-layer reward and continuation heads.
_CURRENT_LAYOUT = {"encoder.cnn_mults": (2, 3, 4, 4), "decoder.cnn_mults": (2, 3, 4, 4),
                   "encoder.cnn_kernel": 5, "decoder.cnn_kernel": 5, "actor.layers": 3,
                   "critic.layers": 3, "reward_head.layers": 1, "cont_head.layers": 1}
RELEASES = {"2023": "dreamerv3 1.5.0 (2023)", "current": "danijar/dreamerv3 repository"}
# (release, size) -> (official config overrides, our agent config fields on top of size S).
SIZES = {
    ("2023", "S"): ({}, {}),   # the release's atari100k config is size S
    ("2023", "size1m"): ({"rssm.units": 64, "rssm.classes": 4, r".*\.cnn_depth": 4,
                          r".*\.units$": 64}, _SIZE1M),
    ("current", "S"): ({r".*\.rssm": {"deter": 512, "hidden": 512, "classes": 32},
                        r".*\.depth": 32, r".*\.units": 512}, _CURRENT_LAYOUT),
    ("current", "size1m"): ({r".*\.rssm": {"deter": 512, "hidden": 64, "classes": 4},
                             r".*\.depth": 4, r".*\.units": 64}, {**_SIZE1M, **_CURRENT_LAYOUT}),
}

# Runs in the official venv: builds the 2023 release's agent and times agent.train.
OFFICIAL = """
import json, sys, time
import numpy as np
import jax
B, T, A, n = (int(x) for x in sys.argv[1:5])
overrides, cache = json.loads(sys.argv[5]), sys.argv[6]
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import dreamerv3
from dreamerv3 import embodied
# The release's atari100k names `actor_eval_sample`, a key its defaults lack (so its own
# `--configs atari100k` stops with a KeyError); it only affects evaluation: left out.
atari100k = {k: v for k, v in dreamerv3.configs["atari100k"].items() if k != "actor_eval_sample"}
config = embodied.Config(dreamerv3.configs["defaults"]).update(atari100k)
config = config.update({"jax.platform": "cpu", "jax.precision": "float32", "jax.prealloc": False,
                        "batch_size": B, "batch_length": T, **overrides})
Space = embodied.Space
obs_space = {"image": Space(np.uint8, (64, 64, 3)), "reward": Space(np.float32),
             "is_first": Space(bool), "is_last": Space(bool), "is_terminal": Space(bool)}
action = Space(np.float32, (A,), 0, 1)
action._discrete = True   # what the release's OneHotAction wrapper gives a discrete env
agent = dreamerv3.Agent(obs_space, {"action": action, "reset": Space(bool)}, embodied.Counter(),
                        config)
rng = np.random.default_rng(0)
is_first = np.zeros((B, T), bool)
is_first[:, 0] = True
data = {"image": rng.integers(0, 255, (B, T, 64, 64, 3)).astype(np.uint8),
        "reward": rng.normal(size=(B, T)).astype(np.float32), "is_first": is_first,
        "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool),
        "action": np.eye(A, dtype=np.float32)[rng.integers(0, A, (B, T))]}
# On the device, as the release's loader delivers batches (agent.dataset's prefetching workers).
data = agent._convert_inps(data, agent.train_devices)
t0 = time.perf_counter()
_, state, _ = agent.train(data)
compile_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(n):
  _, state, _ = agent.train(data, state)
jax.block_until_ready(state)
params = sum(dreamerv3.jaxutils.Optimizer.PARAM_COUNTS.values())
print(json.dumps({"update_s": (time.perf_counter() - t0) / n, "first_call_s": compile_s,
                  "jax": jax.__version__, "params": int(params)}))
"""


# Runs in the current release's venv: builds its agent from --official_src and times agent.train
# on batches from its own device stream (agent.stream), as its training loop does.
OFFICIAL_CURRENT = """
import json, sys, tempfile, time
import numpy as np
src, B, T, A, n = sys.argv[1], *(int(x) for x in sys.argv[2:6])
overrides, cache = json.loads(sys.argv[6]), sys.argv[7]
sys.path[:0] = [src]
import jax
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import elements, ruamel.yaml as yaml
from dreamerv3.agent import Agent
configs = yaml.YAML(typ="safe").load(elements.Path(src + "/dreamerv3/configs.yaml").read())
config = elements.Config(configs["defaults"]).update(configs["atari100k"])
config = config.update({"jax.platform": "cpu", "jax.compute_dtype": "float32",
                        "jax.prealloc": False, "batch_size": B, "batch_length": T, **overrides})
Space = elements.Space
obs_space = {"image": Space(np.uint8, (64, 64, 3)), "reward": Space(np.float32),
             "is_first": Space(bool), "is_last": Space(bool), "is_terminal": Space(bool)}
agent = Agent(obs_space, {"action": Space(np.int32, (), 0, A)}, elements.Config(
    **config.agent, logdir=tempfile.mkdtemp(), seed=0, jax=config.jax, batch_size=B,
    batch_length=T, replay_context=config.replay_context, report_length=config.report_length,
    replica=0, replicas=1))
rng, L = np.random.default_rng(0), T + config.replay_context
data = {k: np.zeros((B, L, *v.shape), v.dtype) for k, v in agent.spaces.items()}
data["image"] = rng.integers(0, 255, (B, L, 64, 64, 3)).astype(np.uint8)
data["reward"] = rng.normal(size=(B, L)).astype(np.float32)
data["action"] = rng.integers(0, A, (B, L)).astype(np.int32)
data["is_first"][:, 0] = True
stream = iter(agent.stream(iter(lambda: dict(data), None)))
t0 = time.perf_counter()
carry = agent.init_train(B)
carry, _, _ = agent.train(carry, next(stream))
jax.block_until_ready(agent.params)
first_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(n):
  carry, _, mets = agent.train(carry, next(stream))
jax.block_until_ready(agent.params)
params = sum(float(v) for k, v in mets.items() if k.endswith("param_count"))
print(json.dumps({"update_s": (time.perf_counter() - t0) / n, "first_call_s": first_s,
                  "jax": jax.__version__, "params": int(params)}))
"""


def official_round(cache_dir: str) -> dict:
  official, _ = SIZES[(FLAGS.release, FLAGS.size)]
  args = [FLAGS.batch_size, FLAGS.batch_length, FLAGS.actions, FLAGS.updates,
          json.dumps(official), cache_dir]
  if FLAGS.release == "2023":
    return run_official(FLAGS.official_python, OFFICIAL, args, "DreamerV3 1.5.0")
  return run_official(FLAGS.official_python, OFFICIAL_CURRENT, [FLAGS.official_src, *args],
                      "DreamerV3 (current)")


def our_update():
  """(compiled update, its arguments, compile seconds, parameter count) of wm_jax's DreamerV3."""
  import jax

  from benchmarks.batches import fake_batch
  from experiments.configs import dreamerv3
  from wm_jax.agents.dreamer import make_dreamer
  from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec

  cfg = dreamerv3.get_config("atari100k").agent
  cfg.precision = "float32"
  for field, value in SIZES[(FLAGS.release, FLAGS.size)][1].items():
    section, name = field.split(".")
    cfg[section][name] = value
  spec = EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")},
                 act=ActionSpec(True, num_actions=FLAGS.actions))
  agent = make_dreamer(cfg, spec)
  state = agent.init(jax.random.key(0))
  args = (state, fake_batch(spec, FLAGS.batch_size, FLAGS.batch_length),
          jax.random.key(1))
  t0 = time.perf_counter()
  update = jax.jit(agent.update).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(update(*args))
  params = sum(x.size for x in jax.tree.leaves((state["wm"], state["ac"]["actor"],
                                                state["ac"]["critic"])))
  return update, args, compile_s, int(params)


def summary(seconds: list) -> dict:
  return {"seconds_per_update": [round(s, 3) for s in seconds],
          "median": round(statistics.median(seconds), 3), "min": round(min(seconds), 3)}


def main(_):
  if not FLAGS.official_python or (FLAGS.release == "current" and not FLAGS.official_src):
    raise app.UsageError("Give --official_python (and --official_src for --release=current): "
                         "see the module docstring.")
  import jax
  update, args, compile_s, params = our_update()
  cache_dir = tempfile.mkdtemp(prefix="dreamerv3_official_jit_")
  official, ours = [], []
  for _ in range(FLAGS.rounds):
    official.append(official_round(cache_dir))
    state, batch, key = args
    t0 = time.perf_counter()
    for i in range(FLAGS.updates):
      state, metrics = update(state, batch, jax.random.key(i))
    jax.block_until_ready(metrics)
    ours.append((time.perf_counter() - t0) / FLAGS.updates)
  off = [r["update_s"] for r in official]
  print(json.dumps({
      "what": f"DreamerV3 full update (world model + actor-critic), size {FLAGS.size}, float32",
      "our_fields": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in SIZES[(FLAGS.release, FLAGS.size)][1].items()},
      "batch": [FLAGS.batch_size, FLAGS.batch_length], "actions": FLAGS.actions,
      "official": {**summary(off), "release": RELEASES[FLAGS.release], "jax": official[0]["jax"],
                   "first_call_s": round(official[0]["first_call_s"], 1),
                   "params": official[0]["params"]},
      "wm_jax": {**summary(ours), "jax": jax.__version__, "compile_s": round(compile_s, 1),
                 "params": params},
      "speedup_median": round(statistics.median(off) / statistics.median(ours), 2),
      "speedup_min": round(min(off) / min(ours), 2),
      "device": jax.devices()[0].device_kind}, indent=1))


if __name__ == "__main__":
  app.run(main)
