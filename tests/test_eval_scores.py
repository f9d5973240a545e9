"""Reference table and normalisation: HNS against hand-computed values."""

import numpy as np
import pytest

from wm_jax.envs import ATARI100K_GAMES
from wm_jax.errors import UnknownNameError
from wm_jax.eval import scores


def test_table_has_the_26_atari100k_games_the_envs_run():
  assert scores.atari100k_games() == ATARI100K_GAMES


@pytest.mark.parametrize("game, raw, expected", [
    ("Pong", -20.7, 0.0),                            # random level
    ("Pong", 14.6, 1.0),                             # human level
    ("Pong", 21.0, (21.0 + 20.7) / (14.6 + 20.7)),   # 1.1813...
    ("Breakout", 30.5, 1.0),
    ("Breakout", 1.7 + 28.8 / 2, 0.5),
    ("Alien", 1000.0, (1000.0 - 227.8) / (7127.7 - 227.8)),   # 0.11191...
    ("Freeway", 0.0, 0.0),
])
def test_hns_hand_computed(game, raw, expected):
  assert float(scores.human_normalized(game, raw)) == pytest.approx(expected, abs=1e-12)


def test_hns_is_elementwise_and_accepts_any_spelling():
  got = scores.human_normalized("pong", np.array([[-20.7, 14.6]]))
  np.testing.assert_allclose(got, [[0.0, 1.0]], atol=1e-12)
  assert scores.canonical_game("ms_pacman") == "MsPacman"
  assert scores.canonical_game("Breakout-v5") == "Breakout"


def test_unknown_game_is_one_sentence_with_a_suggestion():
  with pytest.raises(UnknownNameError, match=r"'Pongg' is not one of the 26 .*did you mean 'Pong'"):
    scores.human_normalized("Pongg", 1.0)


def test_dmc_is_score_over_1000_and_classic_has_none():
  name, fn = scores.normalizer("dmc")
  assert name == "score/1000" and fn("cheetah_run", 650.0) == pytest.approx(0.65)
  assert scores.normalizer("dmc_vision")[0] == "score/1000"
  assert scores.normalizer("classic") is None
