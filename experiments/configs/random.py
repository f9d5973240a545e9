"""Uniform random policy: the baseline of every HNS table and the end-to-end check of the
env -> loop -> logs -> checkpoint -> report path. Variants: atari100k, dmc_proprio,
dmc_vision, debug."""

from experiments.configs.common import base_config


def get_config(variant: str = "debug"):
  config = base_config("random", variant)
  config.run.train_ratio = 0.0   # nothing to learn: no replay, no updates
  return config
