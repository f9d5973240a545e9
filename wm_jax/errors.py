"""Errors a user can cause. Each carries one sentence that names the fix; entry points print
that sentence instead of a traceback (anything else is a bug and keeps its traceback)."""

import json


class UserError(Exception):
  """Base class: bad input, config or run directory."""


class UnknownNameError(UserError, ValueError):
  """A game, task, suite, method, size or variant name that does not exist."""


class RunConfigError(UserError, ValueError):
  """A config or workdir that cannot be run as given (impossible settings, mismatched resume)."""


class CorruptCheckpointError(UserError, RuntimeError):
  """The latest checkpoint of a workdir cannot be read back."""


class NonFiniteLossError(UserError, FloatingPointError):
  """A loss term became NaN or inf; the last good state was checkpointed."""


class MissingDependencyError(UserError, RuntimeError):
  """A system library or package needed for the requested feature is not installed."""


def read_json(path: str, error: type[UserError], fix: str):
  """The JSON value stored in `path`, or `error` with one sentence naming the file and `fix`."""
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError:
    raise error(f"{path} is not valid JSON: {fix}.") from None
