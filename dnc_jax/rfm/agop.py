r"""Average gradient outer product (AGOP).

For a per-example function :math:`f: \mathbb{R}^d \to \mathbb{R}^K` and rows
:math:`x_1, \dots, x_N`,

.. math::
   \mathrm{AGOP}(f, X) = \frac{1}{N} \sum_{i=1}^N J(x_i)^\top J(x_i), \qquad
   J = \partial f / \partial x \in \mathbb{R}^{K \times d}.

Jacobians come from ``jax.vmap(jax.jacrev(f))`` over blocks of rows; each block's
``JᵀJ`` is added to a ``[d, d]`` accumulator inside a ``lax.scan``, so memory is
bounded by the block size, not by ``N``.

The kernel predictor's AGOP, :func:`kernel_agop`, has three implementations
(automatic differentiation, hand-written rules, closed form), all in
:mod:`dnc_jax.rfm.predictor`.

References:
  Beaglehole et al., NeurIPS 2024, Section 3 and Algorithm 1.
  Radhakrishnan et al. Mechanism for feature learning in neural networks and
  backpropagation-free machine learning models. Science, 2024.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax.rfm import precision as precision_lib
from dnc_jax.rfm import predictor as predictor_lib
from dnc_jax.errors import ConfigError
# Re-exported: callers import the predictor from here.
from dnc_jax.rfm.predictor import kernel_predictor  # noqa: F401

_DEFAULT_BLOCK_BYTES = 512 * 2**20
_MAX_BLOCK_ROWS = memory_lib.MAX_BLOCK_ROWS["cpu"]


def default_batch_size(n: int, per_row_floats: int, *, itemsize: int = 4,
                       budget_bytes: int = _DEFAULT_BLOCK_BYTES,
                       max_rows: int = _MAX_BLOCK_ROWS) -> int:
  """Rows per block: intermediates within ``budget_bytes``, at most ``max_rows``."""
  rows = budget_bytes // max(1, per_row_floats * itemsize)
  return int(max(1, min(n, rows, max_rows)))


def agop_sum(fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, *,
             batch_size: int, matmul_precision: str = "highest") -> jax.Array:
  """Sum over rows of ``JᵀJ`` for ``fn(x_row, row_index)``; traceable helper.

  Args:
    fn: per-example function of one row ``[...]`` and its integer index ``[]``;
      derivatives are taken w.r.t. the row only.
    x: ``[n, ...]`` rows.
    batch_size: rows per block (static).
    matmul_precision: precision of the ``JᵀJ`` products (:mod:`dnc_jax.rfm.precision`).

  Returns:
    ``[p, p]`` with ``p = prod(x.shape[1:])``.
  """
  n = x.shape[0]
  p = math.prod(x.shape[1:])
  b = max(1, min(int(batch_size), n))
  nb = -(-n // b)
  pad = nb * b - n
  # Padding repeats the last row (any fn is defined there) with weight 0.
  xp = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
  idx = jnp.arange(nb * b)
  w = (idx < n).astype(x.dtype)
  jac = jax.vmap(jax.jacrev(fn))

  def body(acc, blk):
    xb, ib, wb = blk
    jb = jac(xb, ib).reshape(b, -1, p)
    jb = jnp.where(wb[:, None, None] > 0, jb, 0.0)
    return acc + precision_lib.einsum("bkd,bke->de", jb, jb, matmul_precision), None

  blocks = (xp.reshape((nb, b) + x.shape[1:]), idx.reshape(nb, b), w.reshape(nb, b))
  acc, _ = jax.lax.scan(body, jnp.zeros((p, p), x.dtype), blocks)
  return acc


@functools.partial(jax.jit, static_argnames=("fn", "batch_size"))
def _agop(fn, x, batch_size):
  return agop_sum(lambda xi, _: fn(xi), x, batch_size=batch_size) / x.shape[0]


def _check_rows(x, name="x"):
  if getattr(x, "ndim", 0) < 2:
    raise ConfigError(f"{name} must be rows of shape [n, d] (n ≥ 1), got shape "
                      f"{getattr(x, 'shape', None)}; reshape a single example with x[None]")
  if x.shape[0] < 1:
    raise ConfigError(f"{name} has no rows (shape {x.shape}); pass at least one example")


def agop(fn: Callable[[jax.Array], jax.Array], x: jax.Array, *,
         batch_size: int | None = None) -> jax.Array:
  r"""AGOP of a per-example function over the rows of ``x``.

  .. math:: \frac{1}{N}\sum_i J(x_i)^\top J(x_i).

  Args:
    fn: function of ONE example ``[d]`` (or ``[...]``) returning any array
      (flattened to ``K`` outputs). Must be hashable (a plain function or
      ``functools.partial``); it is a static argument of the jitted computation.
    x: ``[n, d]`` (or ``[n, ...]``) rows.
    batch_size: rows per block; ``None``: at most 256 rows within a 512 MiB budget.

  Returns:
    ``[d, d]`` (``d = prod(x.shape[1:])``) symmetric PSD matrix.
  """
  _check_rows(x)
  if batch_size is not None and int(batch_size) < 1:
    raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
  from dnc_jax import validate
  validate.finite(x, "x")
  if batch_size is None:
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    k = max(1, int(np.prod(out.shape)))
    batch_size = default_batch_size(x.shape[0], k * math.prod(x.shape[1:]) * 4)
  return _agop(fn, x, int(batch_size))


@functools.partial(jax.jit, static_argnames=("kernel", "implementation", "batch_size"))
def _kernel_agop(x_train, alpha, x, sq_distances, bandwidth, M, kernel, implementation,
                 batch_size):
  rows = x_train if x is None else x
  if implementation == "closed_form":
    total = predictor_lib.closed_form_agop_sum(
        x_train, alpha, x, kernel=kernel, bandwidth=bandwidth, M=M, sq_distances=sq_distances,
        batch_size=batch_size)
    return total / rows.shape[0]
  predictor = (predictor_lib.kernel_predictor if implementation == "rules"
               else predictor_lib.autodiff_predictor)
  f = predictor(x_train, alpha, kernel=kernel, bandwidth=bandwidth, M=M, exclude_self=x is None)
  return agop_sum(f, rows, batch_size=batch_size) / rows.shape[0]


def kernel_agop(x_train: jax.Array, alpha: jax.Array, *, kernel: str = "laplace", bandwidth=2.0,
                M: jax.Array | None = None, x: jax.Array | None = None,
                batch_size: int | None = None, implementation: str = "rules",
                sq_distances: jax.Array | None = None) -> jax.Array:
  r"""AGOP of the kernel predictor :math:`f(x) = \sum_j \alpha_j k(x_j, x)`.

  Args:
    x_train: ``[n, d]`` centres ``x_j``.
    alpha: ``[n, K]`` coefficients.
    kernel: ``"laplace"`` or ``"gaussian"``.
    bandwidth: ``L > 0``.
    M: optional symmetric ``[d, d]`` Mahalanobis matrix of the kernel.
    x: ``[m, d]`` rows to average over; ``None`` means the training rows, with
      each point's own term masked by index.
    batch_size: rows per block; ``None``: at most 256 rows within a 512 MiB budget.
    implementation: ``"rules"`` (``vmap(jacrev)`` with hand-written derivative
      rules), ``"autodiff"`` (``vmap(jacrev)`` of the plain predictor) or
      ``"closed_form"`` (the analytic Jacobian as matmuls); see
      :mod:`dnc_jax.rfm.predictor`.
    sq_distances: with ``"closed_form"`` only: the ``[m, n]`` squared distances
      :math:`\|x_b - x_j\|_M^2` (``[n, n]`` when ``x`` is ``None``) if already
      computed; ``None`` computes them.

  Returns:
    ``[d, d]`` AGOP.
  """
  from dnc_jax import validate
  validate.rows(x_train, "x_train")
  kernels_lib.check_bandwidth(bandwidth)
  if implementation not in predictor_lib.IMPLEMENTATIONS:
    raise ConfigError(f"unknown implementation {implementation!r}; choose one of "
                      f"{', '.join(predictor_lib.IMPLEMENTATIONS)} (default: rules)")
  if getattr(alpha, "ndim", None) != 2 or alpha.shape[0] != x_train.shape[0]:
    raise ConfigError(f"alpha must have shape [n, K] with n = {x_train.shape[0]} (the rows of "
                      f"x_train), got {getattr(alpha, 'shape', None)}")
  if x is not None:
    validate.rows(x, "x", dim=x_train.shape[1])
  if M is not None:
    validate.square(M, "M", x_train.shape[1])
  if sq_distances is not None and implementation != "closed_form":
    raise ConfigError("sq_distances is read by implementation='closed_form' only; pass "
                      "implementation='closed_form' or drop sq_distances")
  validate.finite(x_train, "x_train")
  validate.finite(alpha, "alpha")
  if sq_distances is not None:
    validate.finite(sq_distances, "sq_distances")
  rows = x_train if x is None else x
  if batch_size is None:
    batch_size = default_batch_size(rows.shape[0], x_train.shape[0] * (alpha.shape[1] + 2))
  return _kernel_agop(x_train, alpha, x, sq_distances, bandwidth, M, kernel, implementation,
                      int(batch_size))
