"""wm_jax/agents/components.py (the staged agents' shared pieces), the loop's metric averaging
over the updates that computed a metric, and saved configs read with fields added since."""

import json

import ml_collections
import pytest

from experiments.configs import (diamond as diamond_config, dreamerv3 as dreamerv3_config,
                                iris as iris_config)
from wm_jax import offline, trained
from wm_jax.agents import diamond, iris
from wm_jax.agents.components import check_schedule, schedule_phase
from wm_jax.errors import RunConfigError
from wm_jax.logger import mean_metrics
from wm_jax.train import check_workdir


def test_schedule_phase_starts_each_component_then_runs_it_every_k_updates():
  schedule = ml_collections.ConfigDict(dict(a_start=0, b_start=3, b_every=4))
  phase = schedule_phase(schedule, ("a", "b"))
  assert [phase(u)[1] for u in range(12)] == [False, False, False, True, False, False, False,
                                             True, False, False, False, True]
  assert all(phase(u)[0] for u in range(12))


@pytest.mark.parametrize("field, value, expected", [
    ("actor_critic_start", -1, "must be >= 0"),
    ("actor_critic_every", 0, "must be >= 1")])
def test_a_bad_schedule_gives_one_sentence(field, value, expected):
  schedule = iris_config.get_config("debug").agent.schedule
  schedule[field] = value
  with pytest.raises(RunConfigError, match=expected):
    check_schedule(schedule)


def test_metrics_are_averaged_over_the_updates_that_computed_them():
  updates = [{"wm_loss": 1.0}, {"wm_loss": 3.0, "ac_loss": 5.0}, {"wm_loss": 2.0}]
  assert mean_metrics(updates) == {"wm_loss": 2.0, "ac_loss": 5.0}


@pytest.mark.parametrize("module, check", [(iris_config, iris.check_agent_config),
                                           (diamond_config, diamond.check_agent_config)])
def test_a_world_model_batch_larger_than_the_replay_batch_is_refused(module, check):
  config = module.get_config("debug")
  config.agent.world_model_batch_size = config.run.batch_size
  check(config.agent, config.run)
  config.agent.world_model_batch_size = config.run.batch_size + 1
  with pytest.raises(RunConfigError, match="world_model_batch_size=33 exceeds run.batch_size=32"):
    check(config.agent, config.run)
  config.agent.world_model_batch_size = 0
  with pytest.raises(RunConfigError, match="world_model_batch_size=0 must be None"):
    check(config.agent)


def test_a_run_saved_before_a_field_existed_reads_and_resumes_with_its_old_behaviour(tmp_path):
  """A config.json without agent.world_model_batch_size, schedule.actor_critic_every and
  tokenizer.microbatches reads as the values those runs trained with (None, 1, 1); another
  value is refused on resume, except for the microbatches (memory only)."""
  config = iris_config.get_config("debug")
  config.agent.world_model_batch_size = None
  config.agent.schedule.actor_critic_every = 1
  old = json.loads(config.to_json_best_effort())
  del old["agent"]["world_model_batch_size"], old["agent"]["schedule"]["actor_critic_every"]
  del old["agent"]["tokenizer"]["microbatches"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert check_workdir(str(tmp_path), config, {})
  config.agent.schedule.actor_critic_every = 8
  with pytest.raises(RunConfigError, match="agent.schedule.actor_critic_every: saved 1, given 8"):
    check_workdir(str(tmp_path), config, {})
  read = trained.run_config(str(tmp_path))
  assert read.agent.world_model_batch_size is None
  assert read.agent.schedule.actor_critic_every == 1
  assert read.agent.tokenizer.microbatches == 1
  config.agent.schedule.actor_critic_every = 1
  config.agent.tokenizer.microbatches = 2   # memory only: a resume may change it
  assert check_workdir(str(tmp_path), config, {})


def test_a_diamond_run_saved_before_its_own_actor_critic_net_resumes_with_iriss(tmp_path):
  """DIAMOND runs saved before agent.actor_critic.net existed trained IRIS's net: they read as
  net='iris', resume with that override, and are refused with DIAMOND's default."""
  config = diamond_config.get_config("debug")
  old = json.loads(config.to_json_best_effort())
  del old["agent"]["actor_critic"]["net"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert trained.run_config(str(tmp_path)).agent.actor_critic.net == "iris"
  with pytest.raises(RunConfigError, match="agent.actor_critic.net: saved 'iris', given 'diamond'"):
    check_workdir(str(tmp_path), config, {})
  config.agent.actor_critic.net = "iris"
  assert check_workdir(str(tmp_path), config, {})


def test_a_diamond_run_saved_before_per_pixel_cross_attention_resumes_without_it(tmp_path):
  """DIAMOND runs saved before agent.denoiser.per_pixel_cross_attn_depths existed had none:
  they resume with the default (None) and are refused with per-pixel levels switched on."""
  config = diamond_config.get_config("atari100k_cross_attention")
  old = json.loads(config.to_json_best_effort())
  del old["agent"]["denoiser"]["per_pixel_cross_attn_depths"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert check_workdir(str(tmp_path), config, {})
  assert trained.run_config(str(tmp_path)).agent.denoiser.per_pixel_cross_attn_depths is None
  config.agent.denoiser.per_pixel_cross_attn_depths = (False, True, False, False)
  with pytest.raises(RunConfigError, match="agent.denoiser.per_pixel_cross_attn_depths: saved "
                                           "None"):
    check_workdir(str(tmp_path), config, {})


def test_offline_training_samples_the_world_models_batch():
  """Offline, only the world model trains: it samples agent.world_model_batch_size sequences
  where the config sets one (the debug variants: 4 or 16 of 32), else run.batch_size."""
  assert offline.world_model_batch_size(diamond_config.get_config("debug")) == 16
  config = dreamerv3_config.get_config("debug")
  assert offline.world_model_batch_size(config) == config.run.batch_size
