"""Errors raised by dnc_jax.

Every error a user can trigger is one of these, raised before any work starts,
with a message that names the problem and the fix.
"""


class DncError(ValueError):
  """Base class of all dnc_jax errors about user input or configuration."""


class DataError(DncError):
  """A dataset could not be found, read or prepared as asked."""


class ConfigError(DncError):
  """An option or combination of options is invalid."""


class SolveError(DncError):
  """A kernel system could not be solved (e.g. singular ridgeless solve)."""
