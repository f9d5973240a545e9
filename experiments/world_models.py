"""World Models (Ha & Schmidhuber 2018) in its three phases, from a dataset of random rollouts:

  python -m experiments.collect --config=experiments/configs/world_models.py:cpu \\
      --policy=random_controller --steps=240000 --out=data/carracing_rc  # 1. random rollouts
  python -m experiments.world_models --config=experiments/configs/world_models.py:cpu \\
      --dataset=data/carracing_rc --out=runs/world_models          # 2. V, M; 3. C

trains V (the VAE) and M (the MDN-RNN) on the dataset, then evolves the controller C with
CMA-ES twice, entirely inside M's dream and in the real env, and scores both, uniform random
actions and Ha's random controllers in the real env (`eval_episodes` full episodes each).
Writes into --out: config.json,
vae.msgpack, rnn.msgpack, controller_{dream,real}.pkl (CMA-ES state after each generation),
and the report world_models.json / world_models.md with the real env steps each controller
used, the CMA-ES generations per second, evolution.png (fitness per generation) and frames.png
(a strip of real vs V-reconstructed vs dreamed frames under the real actions).

`--config.iterate.rounds=R` adds R rounds of the paper's iterative training procedure (sec. 5):
round r collects `iterate.steps` real steps with round r-1's dream-trained C (plus
`controller.explore_std` action noise) into --out/round<r>/data, trains M further on all the
data so far, and evolves C in the new dream from the last C; V stays the one trained on the
random rollouts. Every round's C is scored in the real env.

Rerunning the command resumes: finished phases are loaded, an evolution goes on from its last
generation, a round's collection from its last shard. A file that cannot be read is reported in
one sentence and never overwritten."""

from __future__ import annotations

import json
import os
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from experiments.config_files import parse_flags
from wm_jax import jit_cache
from wm_jax.agents import world_models as wmod
from wm_jax.agents.random_agent import make_random
from wm_jax.dataset import DatasetWriter, collect_episodes, concatenate_datasets, load_dataset
from wm_jax.envs import make_env
from wm_jax.errors import RunConfigError, UserError
from wm_jax.models.vae_mdnrnn import VAENet, make_mdnrnn

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiments/configs/world_models.py:<variant>", lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Dataset of random rollouts "
                               "(python -m experiments.collect).")
_OUT = flags.DEFINE_string("out", None, "Output folder (created, or resumed).")
_CONTROLLERS = flags.DEFINE_list("controllers", ["dream", "real"],
                                 "Where C is evolved: dream, real or both.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars on stderr.")
flags.mark_flags_as_required(["config", "dataset", "out"])


def _progress(desc: str):
  return lambda it: tqdm(it, desc=desc, disable=not _PROGRESS.value, dynamic_ncols=True)


def load_or_train(path: str, template, train_fn):
  """Params saved at `path` (flax msgpack), or train_fn() -> (params, history) saved there with its history as JSON; an unreadable file is one sentence, never overwritten."""
  if os.path.exists(path):
    return wmod.read_params(path, template)
  params, history = train_fn()
  with open(path + ".tmp", "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  os.replace(path + ".tmp", path)
  with open(path.replace(".msgpack", "_history.json"), "w") as f:
    json.dump(history, f)
  return params


def agent_returns(env, agent, max_steps: int, seed: int) -> np.ndarray:
  """Returns [N] of a parameter-free `Agent` (the random baselines) in the real env: the first
  episode of each of env's N envs, at most max_steps steps."""
  act = jax.jit(lambda carry, obs, key: agent.act({}, carry, obs, key, True))
  key, step, carry = jax.random.PRNGKey(seed), env.reset(), agent.initial_carry(env.num_envs)
  total, done = np.zeros(env.num_envs), np.zeros(env.num_envs, bool)
  for t in range(max_steps):
    action, carry = act(carry, {k: step[k] for k in ("image", "is_first")},
                        jax.random.fold_in(key, t))
    step = env.step(np.asarray(action))
    total += np.where(done, 0.0, step["reward"])
    done |= step["is_last"]
    if done.all():
      break
  return total


def frame_strip(vae, vae_params, rnn, rnn_params, episode: dict, start: int, length: int,
                temperature: float, key, path: str) -> None:
  """PNG rows: real frames t .. t+L-1 of `episode`, V's reconstructions, and M's dream from the real frame t under the real actions (decoded by V)."""
  from PIL import Image
  length = min(length, len(episode["image"]))
  start = min(start, len(episode["image"]) - length)
  frames = episode["image"][start:start + length]
  mu, _ = vae.apply(vae_params, frames, method=VAENet.encode)
  recon = vae.apply(vae_params, mu, method=VAENet.decode)
  actions = episode["action"][start + 1:start + length]   # action taken at frame t (led to t+1)
  carry, z, dreamed = rnn.initial(1), mu[:1], [mu[0]]
  for t, action in enumerate(actions):
    carry, z, _, _ = rnn.dream_step(rnn_params, carry, z, jnp.asarray(action)[None],
                                    jax.random.fold_in(key, t), temperature)
    dreamed.append(z[0])
  dream = vae.apply(vae_params, jnp.stack(dreamed), method=VAENet.decode)
  to_uint8 = lambda x: np.clip((np.asarray(x) + 0.5) * 255, 0, 255).astype(np.uint8)
  rows = [np.concatenate(list(r), 1) for r in (frames, to_uint8(recon), to_uint8(dream))]
  Image.fromarray(np.concatenate(rows, 0)).save(path)


def evolution_plot(results: dict, path: str) -> None:
  """PNG: the population's mean and best fitness per CMA-ES generation, one panel per controller."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
  for ax, (name, res) in zip(axes[0], results.items()):
    gens = [h["generation"] for h in res["history"]]
    ax.plot(gens, [h["mean"] for h in res["history"]], label="population mean")
    ax.plot(gens, [h["best"] for h in res["history"]], label="best")
    ax.set(title=f"CMA-ES in the {name}", xlabel="generation",
           ylabel=f"{'dreamed' if name.startswith('dream') else 'real'} return")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def policy_name(label: str) -> str:
  """'dream' -> 'dream-trained C'; 'dream round 2' -> 'dream-trained C, round 2'."""
  where, _, round_ = label.partition(" ")
  return f"{where}-trained C" + (f", {round_}" if round_ else "")


def collect_round(config, controller_file: str, folder: str, spec: dict, seed: int):
  """The real rollouts of one round of the iterative procedure (sec. 5, step 2): the previous
  round's dream-trained C, with `controller.explore_std` action noise, for `iterate.steps`
  steps into folder/data (resumed if a run was stopped); returns that dataset."""
  data_dir = os.path.join(folder, "data")
  writer = DatasetWriter(data_dir, spec, config.iterate.steps)
  if writer.steps < config.iterate.steps:
    env = make_env(config.env.suite, config.env.task, config.env.num_envs, seed,
                   **dict(config.env.protocol))
    try:
      agent, state, name = wmod.load_controller_policy(controller_file, env.spec)
      collect_episodes(env, agent, state, writer, config.iterate.steps, seed, name, True,
                       _PROGRESS.value)
    finally:
      env.close()
  return load_dataset(data_dir)


def run(config, dataset_dir: str, out: str, controllers: list[str]) -> dict:
  """The three phases (loading what `out` already holds), `iterate.rounds` rounds of the
  iterative procedure, the real-env scores and the report."""
  for name in controllers:
    if name not in ("dream", "real"):
      raise RunConfigError(f"--controllers={name} is not one of dream, real.")
  wmod.check_population(config.controller.population)
  if config.controller.dream_start not in ("first", "any"):
    raise RunConfigError(f"controller.dream_start={config.controller.dream_start!r} is not one "
                         f"of first, any.")
  if config.iterate.rounds and "dream" not in controllers:
    raise RunConfigError(f"iterate.rounds={config.iterate.rounds} collects with the "
                         f"dream-trained C: add dream to --controllers or set "
                         f"--config.iterate.rounds=0.")
  dataset = load_dataset(dataset_dir)
  action_size = wmod.check_dataset(dataset)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, wmod.CONFIG_FILE + ".tmp"), "w") as f:
    f.write(config.to_json(indent=1))
  os.replace(os.path.join(out, wmod.CONFIG_FILE + ".tmp"), os.path.join(out, wmod.CONFIG_FILE))
  key = jax.random.PRNGKey(config.seed)
  vae = VAENet(config.agent.vae.z_size, config.agent.vae.depth)
  vae_template = vae.init(key, dataset.steps["image"][:1])
  vae_params = load_or_train(
      os.path.join(out, "vae.msgpack"), vae_template,
      lambda: wmod.train_vae(vae, vae_template, dataset.steps["image"], config.agent.vae,
                             jax.random.fold_in(key, 1), _progress("V (VAE)")))
  rnn = make_mdnrnn(config.agent.rnn)
  rnn_params = rnn.init(key, action_size)
  c = config.controller
  dim = wmod.controller_size(config.agent.vae.z_size, config.agent.rnn.units, action_size)
  env_kwargs = dict(config.env.protocol)
  results, datasets, memory, data_steps = {}, [dataset], {}, {}
  for round_ in range(config.iterate.rounds + 1):
    folder = os.path.join(out, f"round{round_}") if round_ else out
    suffix = f" round {round_}" if round_ else ""
    if round_:   # step 2: real rollouts of the last dream-trained C; M goes on from its params
      previous = os.path.join(out, f"round{round_ - 1}") if round_ > 1 else out
      datasets.append(collect_round(config, os.path.join(previous, "controller_dream.pkl"),
                                    folder, dataset.spec, config.seed + 3000 * round_))
    data = concatenate_datasets(datasets)
    mu, log_sigma = wmod.encode_frames(vae, vae_params, data.steps["image"])
    start_params = rnn_params
    rnn_params = load_or_train(
        os.path.join(folder, "rnn.msgpack"), start_params,
        lambda: wmod.train_rnn(rnn, start_params, data.steps, mu, log_sigma, data.episode_starts,
                               config.agent.rnn, jax.random.fold_in(key, 2 + 10 * round_),
                               _progress(f"M (MDN-RNN){suffix}")))
    for name in controllers if not round_ else ["dream"]:
      if name == "dream":
        starts = wmod.dream_start_latents(mu, log_sigma, data.episode_starts, c.dream_start)
        fitness = wmod.make_dream_fitness(rnn, rnn_params, starts, c,
                                          config.agent.rnn.temperature)
      else:
        env = make_env(config.env.suite, config.env.task, c.population * c.rollouts,
                       config.seed + 1000, **env_kwargs)
        fitness = wmod.make_real_fitness(vae, vae_params, rnn, rnn_params, env, c)
      label = name + suffix
      start = results[f"dream round {round_ - 1}" if round_ > 1 else "dream"]["mean"] \
          if round_ else None
      results[label] = wmod.evolve(
          fitness, dim, c, jax.random.fold_in(key, (3 if name == "dream" else 4) + 10 * round_),
          os.path.join(folder, f"controller_{name}.pkl"), _progress(f"C in the {label}"), start,
          c.generations if name == "dream" else c.real_generations or c.generations)
      memory[label], data_steps[label] = rnn_params, len(data.steps["is_first"])
      if name == "real":
        env.close()

  episodes = config.eval_episodes
  env = make_env(config.env.suite, config.env.task, episodes, config.seed + 2000, **env_kwargs)
  limit = env.protocol.time_limit
  baselines = {"random": make_random(None, env.spec),
               "random controller": wmod.random_controller_agent(
                   config.agent.vae.z_size, config.agent.rnn.units, action_size, c.random_std,
                   tuple(c.clip_dims))}
  scores = {name: agent_returns(env, agent, limit, config.seed)
            for name, agent in baselines.items()}
  for label, res in results.items():
    thetas = np.repeat(res["mean"][None], episodes, 0)
    scores[policy_name(label)] = wmod.real_returns(vae, vae_params, rnn, memory[label], thetas,
                                                   env, limit, tuple(c.clip_dims),
                                                   jax.random.fold_in(key, 6))[0]
  env.close()
  frame_strip(vae, vae_params, rnn, rnn_params,
              dataset.episodes([dataset.num_episodes - 1]), 50, 10, config.agent.rnn.temperature,
              jax.random.fold_in(key, 5), os.path.join(out, "frames.png"))
  if results:
    evolution_plot(results, os.path.join(out, "evolution.png"))
  return report(config, dataset, scores, results, data_steps, out)


def report(config, dataset, scores: dict, results: dict, data_steps: dict, out: str) -> dict:
  """world_models.json and world_models.md in `out`: real-env returns per policy, and per controller its CMA-ES run and the real env steps it used (those of the data its M learned from, plus its evolution's)."""
  def gens_per_second(history):
    timed = [h["seconds"] for h in history[1:]]   # the first generation compiles
    return round(len(timed) / sum(timed), 3) if timed else None

  c = config.controller
  summary = {
      "variant": config.variant, "env": f"{config.env.suite}/{config.env.task}",
      "hardware": f"{jax.devices()[0].platform} ({os.cpu_count()} cores)",
      "dataset": {"directory": dataset.directory, "episodes": dataset.num_episodes,
                  "steps": int(len(dataset.steps["is_first"])),
                  "policies": sorted({s["policy"] for s in dataset.manifest["shards"]})},
      "eval_episodes": config.eval_episodes,
      "real_env_return": {k: {"mean": round(float(np.mean(v)), 1),
                              "std": round(float(np.std(v)), 1),
                              "episodes": [round(float(x), 1) for x in v]}
                          for k, v in scores.items()},
      "controllers": {name: {
          "generations": len(res["history"]), "population": c.population,
          "rollouts_per_candidate": c.rollouts,
          "final_population_mean_fitness": res["history"][-1]["mean"] if res["history"] else None,
          "generations_per_second": gens_per_second(res["history"]),
          "real_env_steps": int(data_steps[name]) + sum(h["env_steps"] for h in res["history"]),
      } for name, res in results.items()},
      "iterative_rounds": config.iterate.rounds,
      "files": {k: os.path.join(out, k) for k in ("frames.png", "evolution.png")}}
  with open(os.path.join(out, "world_models.json"), "w") as f:
    json.dump(summary, f, indent=1)
  lines = [f"# World Models on {summary['env']} ({config.variant}), {summary['hardware']}", "",
           f"Dataset: {summary['dataset']['episodes']} episodes, "
           f"{summary['dataset']['steps']:,} steps, of "
           f"{' and '.join(summary['dataset']['policies'])}; {config.iterate.rounds} rounds of the "
           f"iterative procedure ({config.iterate.steps:,} steps of the last dream-trained C "
           f"each). Real-env return over {config.eval_episodes} full episodes:", "",
           "| policy | mean return | std | real env steps used |", "|---|---|---|---|"]
  used = {policy_name(name): ctl["real_env_steps"] for name, ctl in summary["controllers"].items()}
  for name, r in summary["real_env_return"].items():
    lines.append(f"| {name} | {r['mean']} | {r['std']} | {used.get(name, 0):,} |")
  for name, ctl in summary["controllers"].items():
    lines.append(f"\nC in the {'real env' if name == 'real' else name}: {ctl['generations']} CMA-ES generations, population "
                 f"{ctl['population']} x {ctl['rollouts_per_candidate']} rollouts, "
                 f"{ctl['generations_per_second']} generations/s.")
  with open(os.path.join(out, "world_models.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return summary


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  jit_cache.enable()
  try:
    summary = run(_CONFIG.value, _DATASET.value, _OUT.value, _CONTROLLERS.value)
    print(json.dumps(summary, indent=1))
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
