"""Input checks for the public entry points.

Each check raises :class:`~dnc_jax.errors.ConfigError` with a message that names
the argument, the problem and the fix. Checks run only on concrete arrays: under
``jit`` (tracers) they are skipped, so they cost nothing inside compiled code.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError


def is_traced(*xs) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def rows(x, name: str = "x", *, dim: int | None = None):
  """``x`` must be a floating ``[n, d]`` array with n ≥ 1 (and d == ``dim``)."""
  shape = getattr(x, "shape", None)
  if shape is None:
    x = np.asarray(x)
    shape = x.shape
  if len(shape) != 2:
    raise ConfigError(f"{name} must have shape [n, d] (rows are examples), got shape {tuple(shape)}; "
                      "reshape a single example with x[None] or flatten images with "
                      "x.reshape(len(x), -1)")
  if shape[0] < 1:
    raise ConfigError(f"{name} has no rows (shape {tuple(shape)}); pass at least one example")
  if dim is not None and shape[1] != dim:
    raise ConfigError(f"{name} has {shape[1]} features per row but {dim} were expected "
                      "(the other argument's width); use the same feature dimension")
  dt = getattr(x, "dtype", None)
  if dt is not None and not jnp.issubdtype(dt, jnp.floating):
    raise ConfigError(f"{name} must be floating point, got dtype {dt}; convert with "
                      f"{name}.astype(np.float32)")
  return x


def finite(x, name: str = "x") -> None:
  """Raises when a concrete ``x`` holds NaN or Inf."""
  if is_traced(x):
    return
  if not bool(jnp.all(jnp.isfinite(jnp.asarray(x)))):
    raise ConfigError(f"{name} contains NaN or Inf values; clean or impute them first")


def square(m, name: str, dim: int | None = None) -> None:
  shape = getattr(m, "shape", np.shape(m))
  if len(shape) != 2 or shape[0] != shape[1] or (dim is not None and shape[0] != dim):
    want = f"[{dim}, {dim}]" if dim is not None else "[d, d]"
    raise ConfigError(f"{name} must be a square matrix of shape {want}, got {tuple(shape)}")
