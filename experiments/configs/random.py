"""Uniform random policy: the baseline of every HNS table and the end-to-end check of the
env -> loop -> logs -> checkpoint -> report path, and the default policy of
experiments.collect. Variants: atari100k, dmc_proprio, dmc_vision, vizdoom, debug."""

from experiments.configs.common import base_config


def get_config(variant: str = "debug"):
  config = base_config("random", variant)
  config.run.train_ratio = 0.0   # nothing to learn: no replay, no updates
  return config
