"""World Models (wm_jax/models/vae_mdnrnn.py, wm_jax/agents/world_models.py,
experiments/world_models.py) as a spec: the MDN log-likelihood by hand, temperature sampling,
the controller's formula, M's batch alignment (three-phase and offline) and its resets at
episode starts, CMA-ES on a known objective, bad input in one
sentence, and the three phases end to end with resume."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import world_models as wm_config
from wm_jax.agents import world_models as wmod
from wm_jax.envs.base import ActionSpec, ArraySpec, EnvSpec
from wm_jax.errors import RunConfigError
from wm_jax.models.vae_mdnrnn import VAENet, make_mdnrnn, mdn_log_prob, mdn_sample, sample_latent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _normal_pdf(x, mean, std):
  return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def test_mdn_log_likelihood_by_hand():
  pi = np.array([0.3, 0.7])
  mu, sigma = np.array([-1.0, 2.0]), np.array([0.5, 1.5])
  x = 0.4
  by_hand = np.log(pi[0] * _normal_pdf(x, mu[0], sigma[0])
                   + pi[1] * _normal_pdf(x, mu[1], sigma[1]))
  got = mdn_log_prob(jnp.log(pi)[None], mu[None], jnp.log(sigma)[None], jnp.array([x]))
  np.testing.assert_allclose(got, [by_hand], rtol=1e-5)


def test_temperature_scales_the_spread_of_samples():
  log_pi = jnp.zeros((20000, 1, 1))
  mu, log_sigma = jnp.full((20000, 1, 1), 1.5), jnp.full((20000, 1, 1), jnp.log(0.4))
  for tau in (0.25, 1.0, 2.0):
    z = mdn_sample(jax.random.PRNGKey(0), log_pi, mu, log_sigma, tau)
    np.testing.assert_allclose(np.mean(z), 1.5, atol=0.02)
    np.testing.assert_allclose(np.std(z), 0.4 * np.sqrt(tau), rtol=0.03)
  # low temperature picks the likeliest component almost always
  two = jnp.log(jnp.array([0.8, 0.2]))[None, None].repeat(5000, 0)
  means = jnp.array([0.0, 10.0])[None, None].repeat(5000, 0)
  z = mdn_sample(jax.random.PRNGKey(1), two, means, jnp.full_like(means, -5.0), 0.05)
  assert np.mean(np.asarray(z) > 5) < 0.001


def test_controller_is_tanh_of_a_linear_map_of_z_and_h():
  z, h = jnp.array([[1.0, -2.0]]), jnp.array([[0.5]])
  w = np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.0]])   # [(Z + U), A]
  b = np.array([0.05, -0.1])
  theta = jnp.concatenate([w.ravel(), b])
  assert wmod.controller_size(2, 1, 2) == theta.shape[0]
  expected = np.tanh(np.array([1.0, -2.0, 0.5]) @ w + b)
  np.testing.assert_allclose(wmod.controller_action(theta, z, h)[0], expected, rtol=1e-6)


def test_clip_dims_reach_the_env_as_clip_at_zero_and_the_rest_unchanged():
  # the env applies (a + 1) / 2; Ha's brake is clip(a, 0, 1), so C's -0.7 is no brake (-1 here)
  output = jnp.array([[-0.7, -0.7, -0.7], [0.4, 0.4, 0.4]])
  np.testing.assert_allclose(wmod.env_action(output, (2,)),
                             [[-0.7, -0.7, -1.0], [0.4, 0.4, -0.2]], atol=1e-6)
  np.testing.assert_allclose((wmod.env_action(output, (2,))[:, 2] + 1) / 2,
                             np.clip(output[:, 2], 0, 1), atol=1e-6)
  np.testing.assert_array_equal(wmod.env_action(output, ()), output)


def test_random_controllers_are_new_each_episode_and_mostly_near_zero():
  agent = wmod.random_controller_agent(4, 8, 3, max_std=0.01, clip_dims=(2,))
  carry = agent.initial_carry(512)
  obs = lambda first: {"image": np.zeros((512, 64, 64, 3), np.uint8),
                       "is_first": np.full(512, first)}
  action, thetas = agent.act({}, carry, obs(True), jax.random.PRNGKey(0), True)
  assert thetas.shape == (512, wmod.controller_size(4, 8, 3))
  # Cauchy x U(0, 0.01): the median |param| is ~0.005 x 1, the tails reach far beyond
  assert 0.001 < float(jnp.median(jnp.abs(thetas))) < 0.005 and float(jnp.max(jnp.abs(thetas))) > 1
  assert float(jnp.median(jnp.abs(action[:, :2]))) < 0.1   # steer ~0, gas ~half
  assert float(jnp.mean(action[:, 2] == -1.0)) > 0.4        # about half never brake
  _, same = agent.act({}, thetas, obs(False), jax.random.PRNGKey(1), True)
  np.testing.assert_array_equal(same, thetas)               # C is kept within an episode
  _, new = agent.act({}, thetas, obs(True), jax.random.PRNGKey(1), True)
  assert np.all(np.asarray(new != thetas).any(-1))


def test_memory_batches_pair_each_latent_with_the_action_taken_there():
  # two episodes of 4 steps; the suite stores the action and reward that *led to* a step
  steps = {"is_first": np.array([1, 0, 0, 0, 1, 0, 0, 0], bool),
           "is_terminal": np.array([0, 0, 0, 1, 0, 0, 0, 0], bool),
           "action": np.arange(8, dtype=np.float32)[:, None],
           "reward": np.arange(8, dtype=np.float32) * 10}
  mu, log_sigma = np.arange(8, dtype=np.float32)[:, None], np.full((8, 1), -30.0, np.float32)
  windows = wmod.sequence_windows(np.array([0, 4, 8]), 3)
  np.testing.assert_array_equal(windows, [0, 1, 4, 5])
  z, action, reward, end = wmod.rnn_batch(steps, mu, log_sigma, np.array([1]), 3,
                                                  np.random.default_rng(0), 1,
                                                  jax.random.PRNGKey(0))
  np.testing.assert_allclose(z[0, :, 0], [1, 2, 3], atol=1e-6)   # frames 1..3
  np.testing.assert_array_equal(action[0, :2, 0], [2, 3])        # taken at 1, at 2
  np.testing.assert_array_equal(reward[0, :2], [20, 30])
  np.testing.assert_array_equal(end[0, :2], [0, 1])              # frame 3 is terminal
  np.testing.assert_array_equal(action[0, 2], [0])               # nothing after the end


def test_memory_loss_resets_at_episode_starts_and_skips_the_transition_across():
  """A [1, 6] sequence with an episode start at step 3 is two sequences of 3: M restarts from
  a zero state at step 3 and the transition 2 -> 3 is in no mean."""
  rnn = make_mdnrnn(ml_collections.ConfigDict(dict(z_size=2, units=8, mixtures=2)))
  params = rnn.init(jax.random.PRNGKey(0), 3)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  z, action = jax.random.normal(k1, (1, 6, 2)), jax.random.normal(k2, (1, 6, 3))
  reward = jax.random.normal(k3, (1, 6))
  end = jnp.array([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
  first = jnp.array([[True, False, False, True, False, False]])
  _, joint = rnn.loss(params, z, action, reward, end, first)
  halves = [rnn.loss(params, z[:, s], action[:, s], reward[:, s], end[:, s])[1]
            for s in (slice(0, 3), slice(3, 6))]
  for name in ("z_nll", "reward_mse", "end_bce"):
    np.testing.assert_allclose(joint[name], (halves[0][name] + halves[1][name]) / 2, rtol=1e-5)


def test_offline_memory_batches_pair_each_latent_with_the_action_taken_there():
  """The offline World Models world model (VisionMemoryModel.rnn_loss) gives M, at frame t, the
  action, reward and end the suite stores at t + 1, as rnn_batch does for the three phases."""
  learner = wmod.WorldModelsLearner(
      wm_config.get_config("debug").agent,
      EnvSpec(obs={"image": ArraySpec((64, 64, 3), "uint8")}, act=ActionSpec(True, 4)))
  model = learner.model
  params = model.init(jax.random.PRNGKey(0))
  batch = {"image": np.asarray(jax.random.randint(jax.random.PRNGKey(1), (1, 4, 64, 64, 3), 0,
                                                  256), np.uint8),
           "action": np.array([[0, 2, 1, 3]], np.int32),
           "reward": np.array([[0.0, 1.0, 0.0, 2.0]], np.float32),
           "is_terminal": np.array([[False, False, False, True]]),
           "is_first": np.array([[True, False, False, False]])}
  key = jax.random.PRNGKey(2)
  _, got = model.rnn_loss(params["rnn"], params["vae"], batch, key)
  z = model.latents(params["vae"], batch["image"], key)
  taken = jax.nn.one_hot(np.array([[2, 1, 3, 0]]), 4)
  _, want = learner.model.rnn.loss(params["rnn"], z, taken, jnp.array([[1.0, 0.0, 2.0, 0.0]]),
                                   jnp.array([[0.0, 0.0, 1.0, 0.0]]))
  for name in ("z_nll", "reward_mse", "end_bce"):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5)


def test_dreams_start_from_first_frames_or_any_frame():
  mu = np.arange(10, dtype=np.float32)[:, None]
  log_sigma = -mu
  starts = np.array([0, 4, 10])
  first_mu, first_log_sigma = wmod.dream_start_latents(mu, log_sigma, starts, "first")
  np.testing.assert_array_equal(first_mu[:, 0], [0, 4])
  np.testing.assert_array_equal(first_log_sigma[:, 0], [0, -4])
  assert all(len(x) == 10 for x in wmod.dream_start_latents(mu, log_sigma, starts, "any"))


def test_v_gives_samples_of_q_z_given_the_frame():
  mu, log_sigma = jnp.array([[1.0, -2.0]]), jnp.log(jnp.array([[0.5, 0.1]]))
  z = jax.vmap(lambda k: sample_latent(mu, log_sigma, k))(
      jax.random.split(jax.random.PRNGKey(0), 20000))[:, 0]
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.01)
  np.testing.assert_allclose(z.std(0), [0.5, 0.1], rtol=0.03)


def test_cma_es_finds_the_optimum_and_resumes(tmp_path):
  class Cfg:
    population, generations, init_std = 16, 40, 1.0
  target = jnp.array([0.5, -1.0, 2.0])
  fitness = lambda pop, key: (-jnp.sum((pop - target) ** 2, -1), 0)
  path = str(tmp_path / "es.pkl")
  half = Cfg()
  half.generations = 20
  wmod.evolve(fitness, 3, half, jax.random.PRNGKey(0), path)
  resumed = wmod.evolve(fitness, 3, Cfg(), jax.random.PRNGKey(0), path)
  assert len(resumed["history"]) == 40
  np.testing.assert_allclose(resumed["mean"], target, atol=0.05)
  (tmp_path / "es.pkl").write_bytes(b"not a pickle")
  with pytest.raises(RunConfigError, match="cannot be read .* move it away"):
    wmod.evolve(fitness, 3, Cfg(), jax.random.PRNGKey(0), path)


def test_the_controller_agent_resets_m_at_episode_starts_and_explores_only_when_asked():
  vae, rnn = VAENet(4, 4), make_mdnrnn(ml_collections.ConfigDict(
      dict(z_size=4, units=8, mixtures=2)))
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  state = {"vae": vae.init(k1, np.zeros((1, 64, 64, 3), np.uint8)), "rnn": rnn.init(k2, 3),
           "theta": jax.random.normal(k3, (wmod.controller_size(4, 8, 3),))}
  agent = wmod.controller_agent(vae, rnn, state, 3, explore_std=0.5, clip_dims=(2,))
  assert agent.init(k4) is state
  images = np.asarray(jax.random.randint(k4, (2, 64, 64, 3), 0, 256), np.uint8)
  first = {"image": images, "is_first": np.array([True, True])}
  action, carry = agent.act(state, agent.initial_carry(2), first, k4, False)
  want_carry, want = wmod.controller_step(vae, state["vae"], rnn, state["rnn"],
                                          jnp.stack([state["theta"]] * 2), rnn.initial(2), images,
                                          (2,), jax.random.split(k4)[0])
  np.testing.assert_allclose(action, want, atol=1e-6)
  np.testing.assert_allclose(carry[1], want_carry[1], atol=1e-6)
  other_carry, _ = wmod.controller_step(vae, state["vae"], rnn, state["rnn"],
                                        jnp.stack([state["theta"]] * 2), rnn.initial(2), images,
                                        (2,), jax.random.PRNGKey(7))
  assert np.abs(other_carry[1] - want_carry[1]).max() > 1e-4   # z is sampled from q(z | frame)
  # env 0 starts a new episode (M reset: the same action again), env 1 goes on from its state
  again, _ = agent.act(state, carry, {"image": images, "is_first": np.array([True, False])},
                       k4, False)
  np.testing.assert_allclose(again[0], action[0], atol=1e-6)
  assert np.abs(again[1] - action[1]).max() > 1e-4
  noisy, noisy_carry = agent.act(state, agent.initial_carry(2), first, k4, True)
  assert np.abs(noisy - action).max() > 0.1 and np.all(np.abs(noisy) <= 1.0)
  assert np.abs(noisy_carry[1] - carry[1]).max() > 0   # M reads the action actually taken


def test_bad_input_gets_one_sentence():
  with pytest.raises(RunConfigError, match="population=30 does not divide over 8 devices: "
                                           "use a multiple of 8"):
    wmod.check_population(30, devices=8)

  class Data:
    directory = "d"
    spec = {"entries": {"image": {"shape": [96, 96, 3], "dtype": "uint8"},
                        "action": {"shape": [3], "dtype": "float32"}}}
  with pytest.raises(RunConfigError, match=r"reads 64 x 64 RGB frames and d holds image "
                                           r"\(96, 96, 3\)"):
    wmod.check_dataset(Data)
  Data.spec = {"entries": {"image": {"shape": [64, 64, 3], "dtype": "uint8"},
                           "action": {"shape": [], "dtype": "int32"}}}
  with pytest.raises(RunConfigError, match="outputs continuous actions"):
    wmod.check_dataset(Data)


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


def test_three_phases_end_to_end_resume_and_a_corrupt_file(tmp_path):
  config = "--config=experiments/configs/world_models.py:debug"
  data, out = str(tmp_path / "data"), str(tmp_path / "out")
  proc = _run("experiments.collect", config, "--steps=200", f"--out={data}", "--noprogress",
              "--policy=random_controller")                     # Ha's random rollouts
  assert proc.returncode == 0, proc.stderr[-2000:]
  proc = _run("experiments.world_models", config, f"--dataset={data}", f"--out={out}",
              "--noprogress", "--config.iterate.rounds=1",
              "--config.controller.real_generations=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("config.json", "vae.msgpack", "rnn.msgpack", "controller_dream.pkl",
               "controller_real.pkl", "frames.png", "evolution.png", "world_models.json",
               "world_models.md", "round1/data/manifest.json", "round1/rnn.msgpack",
               "round1/controller_dream.pkl"):
    assert os.path.exists(os.path.join(out, name)), name
  summary = json.load(open(os.path.join(out, "world_models.json")))
  assert set(summary["real_env_return"]) == {"random", "random controller", "dream-trained C",
                                             "real-trained C", "dream-trained C, round 1"}
  assert summary["dataset"]["policies"] == ["random controllers (params Cauchy x U(0, 0.01))"]
  dream, real = summary["controllers"]["dream"], summary["controllers"]["real"]
  assert (dream["generations"], real["generations"]) == (2, 1)   # real_generations, if set
  assert dream["real_env_steps"] == summary["dataset"]["steps"]   # the dream uses no env step
  assert real["real_env_steps"] > dream["real_env_steps"]
  round1 = json.load(open(os.path.join(out, "round1/data/manifest.json")))["shards"]
  assert "controller_dream.pkl" in round1[0]["policy"]   # collected by round 0's dream C
  assert summary["controllers"]["dream round 1"]["real_env_steps"] == (
      dream["real_env_steps"] + sum(shard["steps"] for shard in round1))
  # experiments.collect acts with any controller file; other files are refused in one sentence
  proc = _run("experiments.collect", config, "--steps=50", f"--out={tmp_path / 'by_c'}",
              "--noprogress", f"--policy={out}/round1/controller_dream.pkl")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with pytest.raises(RunConfigError, match="is not a controller file of experiments.world_models"):
    wmod.load_controller_policy(f"{out}/vae.msgpack", None)   # refused before the spec is read
  vae_bytes = open(os.path.join(out, "vae.msgpack"), "rb").read()
  proc = _run("experiments.world_models", config, f"--dataset={data}", f"--out={out}",
              "--noprogress", "--controllers=dream")            # resumes: nothing retrained
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert open(os.path.join(out, "vae.msgpack"), "rb").read() == vae_bytes
  open(os.path.join(out, "rnn.msgpack"), "wb").write(b"\x00garbage")
  proc = _run("experiments.world_models", config, f"--dataset={data}", f"--out={out}",
              "--noprogress")
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "rnn.msgpack cannot be read" in proc.stderr and "Traceback" not in proc.stderr
  assert open(os.path.join(out, "rnn.msgpack"), "rb").read() == b"\x00garbage"


def test_experiments_train_points_to_the_world_models_entry_point(tmp_path):
  proc = _run("experiments.train", "--config=experiments/configs/world_models.py:debug",
              f"--workdir={tmp_path}")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: world_models trains in the paper's three phases from a dataset of random "
      "rollouts, not through this loop: run python -m experiments.world_models "
      "--config=experiments/configs/world_models.py:<variant> --dataset=DIR --out=DIR.")
