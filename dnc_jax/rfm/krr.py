r"""Kernel ridge regression by Cholesky factorisation.

.. math::
   \alpha = (k(X, X) + \mu I)^{-1} Y, \qquad f(x) = \sum_j \alpha_j k(x_j, x).

``μ = 0`` (ridgeless) works whenever ``k(X, X)`` is positive definite; when it is
not (for instance duplicate rows), the factorisation fails and :class:`SolveError`
says so and suggests a ridge, instead of returning NaN.

References:
  Beaglehole et al., NeurIPS 2024, Algorithm 1 (step 2).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.errors import ConfigError, SolveError

HIGHEST = jax.lax.Precision.HIGHEST


def train_sq_distances(x: jax.Array, M: jax.Array | None = None) -> jax.Array:
  """Squared distances ``[n, n]`` among the rows of ``x``, diagonal exactly 0.

  The expanded form leaves about 1e-7 on the diagonal in float32; the exact
  zero gives the kernel matrix its exact unit diagonal.
  """
  sq = kernels_lib.sq_distances(x, x, M)
  return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, sq)


def cholesky_solve(kmat: jax.Array, y: jax.Array, ridge) -> tuple[jax.Array, jax.Array]:
  """Solves ``(kmat + ridge I) α = y``.

  Args:
    kmat: ``[n, n]`` symmetric kernel matrix; only its lower triangle is read.
    y: ``[n, K]`` targets.
    ridge: ``μ ≥ 0``.

  Returns:
    ``(alpha [n, K], ok)`` where ``ok`` is a boolean scalar, False when the
    factorisation broke down (the matrix is not numerically positive definite).
  """
  alpha, ok, _ = cholesky_fit(kmat, y, ridge)
  return alpha, ok


def cholesky_fit(kmat: jax.Array, y: jax.Array, ridge) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Solves ``(kmat + ridge I) α = y`` and returns the fitted values ``kmat α`` too.

  The fitted values come from the factor, :math:`K\alpha = L(L^\top\alpha) - \mu\alpha`,
  so ``kmat`` is dead once factorised: inside a jit XLA factorises it in place
  and the solve holds one ``[n, n]`` buffer, not three (the matrix, a
  symmetrised copy, the factor). Only the lower triangle of ``kmat`` is read.
  With a ridge far above the kernel's eigenvalues the fitted values lose digits
  (they are then ``≈ y − μα``, a difference of close numbers); at the ridges of
  Deep RFM (``μ ≤ 1e-3``, unit kernel diagonal) they are accurate.

  Args:
    kmat: ``[n, n]`` symmetric kernel matrix.
    y: ``[n, K]`` targets.
    ridge: ``μ ≥ 0``.

  Returns:
    ``(alpha [n, K], ok [], fitted [n, K])``.
  """
  n = kmat.shape[0]
  diag = jnp.arange(n)
  a = kmat.at[diag, diag].add(ridge)
  chol = jax.lax.linalg.cholesky(a, symmetrize_input=False)
  z = jax.lax.linalg.triangular_solve(chol, y, left_side=True, lower=True)
  alpha = jax.lax.linalg.triangular_solve(chol, z, left_side=True, lower=True, transpose_a=True)
  fitted = jnp.matmul(chol, jnp.matmul(chol.T, alpha, precision=HIGHEST),
                      precision=HIGHEST) - ridge * alpha
  ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(alpha))
  return alpha, ok, fitted


def solve_error(ridge: float, n: int, where: str | None = None, *, dtype=None) -> SolveError:
  """The error for a failed factorisation, with the fix; ``where`` prefixes it (e.g. a layer).

  ``dtype`` is the system's float type: float64 is suggested only to a float32 run.
  """
  err = _solve_error(ridge, n, dtype)
  return SolveError(f"{where}: {err}") if where else err


def _solve_error(ridge: float, n: int, dtype=None) -> SolveError:
  in64 = dtype is not None and jnp.dtype(dtype) == jnp.float64
  if ridge == 0:
    return SolveError(
        f"the ridgeless kernel system (n = {n}) is singular: the kernel matrix is not "
        "numerically positive definite (duplicate or nearly collapsed points?). "
        "Use a ridge, e.g. --ridge 1e-3 (the reference preset)"
        + (", even in float64." if in64 else ", or float64 (--precision float64)."))
  return SolveError(
      f"the kernel system (n = {n}, ridge = {ridge:g}) could not be factorised; "
      "increase the ridge (e.g. --ridge 1e-2)"
      + (", even in float64." if in64 else " or use float64 (--precision float64)."))


def check_ridge(ridge) -> None:
  if isinstance(ridge, jax.core.Tracer):
    return
  r = float(ridge)
  if not (r >= 0.0 and r < float("inf")):
    raise ConfigError(f"ridge must be a finite number ≥ 0, got {ridge}; "
                      "use 0 for ridgeless or e.g. 1e-3")


@functools.partial(jax.jit, static_argnames=("kernel",))
def _fit(x, y, bandwidth, ridge, M, kernel):
  kmat = kernels_lib.kernel_from_sq(kernel)(train_sq_distances(x, M), bandwidth)
  return cholesky_solve(kmat, y, ridge)


def krr_fit(x: jax.Array, y: jax.Array, *, kernel: str = "laplace", bandwidth=2.0,
            ridge=0.0, M: jax.Array | None = None) -> jax.Array:
  r"""Fits kernel ridge regression.

  Args:
    x: ``[n, d]`` training rows.
    y: ``[n, K]`` targets.
    kernel: ``"laplace"`` or ``"gaussian"``.
    bandwidth: kernel bandwidth ``L > 0``.
    ridge: ``μ ≥ 0``.
    M: optional ``[d, d]`` Mahalanobis matrix.

  Returns:
    ``alpha``: ``[n, K]`` coefficients.

  Raises:
    SolveError: the system is singular (says so, suggests a ridge).
  """
  from dnc_jax import validate
  kernels_lib.kernel_from_sq(kernel)
  kernels_lib.check_bandwidth(bandwidth)
  check_ridge(ridge)
  validate.rows(x, "x")
  if getattr(y, "ndim", None) != 2 or y.shape[0] != x.shape[0]:
    raise ConfigError(f"y must have shape [n, K] = [{x.shape[0]}, K], got "
                      f"{getattr(y, 'shape', None)}; one-hot targets, e.g. data.one_hot_pm1")
  validate.finite(x, "x")
  validate.finite(y, "y")
  alpha, ok = _fit(x, y, bandwidth, ridge, M, kernel)
  if not bool(ok):
    raise solve_error(float(ridge), x.shape[0], dtype=x.dtype)
  return alpha


@functools.partial(jax.jit, static_argnames=("kernel",))
def _predict(x_train, alpha, x, bandwidth, M, kernel):
  kfn = kernels_lib.get_kernel(kernel).__wrapped__
  return jnp.matmul(kfn(x, x_train, bandwidth=bandwidth, M=M), alpha, precision=HIGHEST)


def krr_predict(x_train: jax.Array, alpha: jax.Array, x: jax.Array, *, kernel: str = "laplace",
                bandwidth=2.0, M: jax.Array | None = None) -> jax.Array:
  """Predictions ``[m, K]`` of the fitted predictor at rows ``x`` ``[m, d]``."""
  from dnc_jax import validate
  kernels_lib.check_bandwidth(bandwidth)
  validate.rows(x_train, "x_train")
  validate.rows(x, "x", dim=x_train.shape[1])
  if getattr(alpha, "ndim", None) != 2 or alpha.shape[0] != x_train.shape[0]:
    raise ConfigError(f"alpha must have shape [n, K] with n = {x_train.shape[0]} (the rows of "
                      f"x_train), got {getattr(alpha, 'shape', None)}")
  validate.finite(x, "x")
  return _predict(x_train, alpha, x, bandwidth, M, kernel)
