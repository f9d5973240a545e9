"""Host syncs of the run loop: update metrics are fetched once per `run.metrics_every` updates."""

import jax
import pytest

from tests.test_train import _counting_config, counting_method  # noqa: F401 (fixture)
from wm_jax.train import train


@pytest.mark.parametrize("every", [1, 10])
def test_metrics_are_fetched_once_per_n_updates(tmp_path, monkeypatch, counting_method, every):
  fetches = []
  device_get = jax.device_get

  def counting_device_get(tree):
    if isinstance(tree, list) and tree and isinstance(tree[0], dict) and "model_loss" in tree[0]:
      fetches.append(len(tree))
    return device_get(tree)

  monkeypatch.setattr(jax, "device_get", counting_device_get)
  config = _counting_config(nan_after=10**9)
  config.run.metrics_every = every
  counters = train(config, str(tmp_path / "run"), progress=False)
  assert sum(fetches) == counters["updates"] == 302   # every update's metrics, once
  assert max(fetches) == every
  # Full fetches of N, plus the partial ones forced by the 5 log lines and checkpoints.
  assert len(fetches) <= counters["updates"] // every + 10
  if every == 1:
    assert len(fetches) == counters["updates"]
