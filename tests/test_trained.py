"""wm_jax/trained.py: a run of experiments.train read back, its agent and its world model."""

import jax
import numpy as np
import pytest

from experiments.configs import dreamerv3, diamond, iris, random as random_config, storm
from wm_jax import trained
from wm_jax.agents import make_agent, make_world_model
from wm_jax.checkpoint import Checkpointer
from wm_jax.envs.sprite import SpriteEnv


@pytest.fixture(scope="module")
def spec():
  env = SpriteEnv(1, 0)
  yield env.spec
  env.close()


@pytest.mark.parametrize("module", [dreamerv3, storm, iris, diamond])
def test_an_agents_state_holds_its_world_models_params(module, spec):
  config = module.get_config("debug")
  key = jax.random.PRNGKey(0)
  agent_state = jax.eval_shape(make_agent(config.method, config.agent, spec).init, key)
  wanted = jax.eval_shape(make_world_model(config.method, config.agent, spec).init, key)["params"]
  held = trained.world_model_params(agent_state)
  if "wm" not in agent_state:   # components by name; the actor-critic's are extra
    assert set(wanted) < set(held)
    held = {name: held[name] for name in wanted}
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert jax.tree.structure(held) == jax.tree.structure(wanted)
  assert shapes(held) == shapes(wanted)


def _save_run(run_dir, config, state, counters):
  ckpt = Checkpointer(str(run_dir))
  ckpt.save(counters["agent_step"], {"agent": state, "key": jax.random.PRNGKey(0),
                                     "replay": {"image": np.ones((8, 64, 64, 3), np.uint8)}},
            counters)
  ckpt.close()
  (run_dir / "config.json").write_text(config.to_json_best_effort())


def test_a_runs_world_model_is_read_from_its_latest_checkpoint(tmp_path, spec):
  config = storm.get_config("debug")
  state = make_agent("storm", config.agent, spec).init(jax.random.PRNGKey(3))
  counters = {"agent_step": 400, "updates": 170, "wall_seconds": 12.5}
  _save_run(tmp_path / "run", config, state, counters)
  got_config, world_model, wm_state, got_counters = trained.load_world_model(
      str(tmp_path / "run"), spec)
  assert got_config.method == "storm" and got_counters == counters
  assert world_model.context_length == config.agent.imag_context
  for a, b in zip(jax.tree.leaves(state["wm"]), jax.tree.leaves(wm_state["params"])):
    np.testing.assert_array_equal(a, b)


def test_runs_without_a_world_model_or_a_checkpoint_are_refused(tmp_path, spec):
  config = random_config.get_config("debug")
  _save_run(tmp_path / "random", config, {}, {"agent_step": 8, "updates": 0, "wall_seconds": 1.0})
  with pytest.raises(Exception, match="a random run, which has no world model to evaluate"):
    trained.load_world_model(str(tmp_path / "random"), spec)
  (tmp_path / "fresh").mkdir()
  (tmp_path / "fresh" / "config.json").write_text(storm.get_config("debug").to_json_best_effort())
  with pytest.raises(Exception, match="has no checkpoint yet: train it first"):
    trained.load_world_model(str(tmp_path / "fresh"), spec)
  with pytest.raises(Exception, match="is not a run directory of experiments.train"):
    trained.load_world_model(str(tmp_path / "missing"), spec)
