r"""Average gradient outer product (AGOP).

For a per-example function :math:`f: \mathbb{R}^d \to \mathbb{R}^K` and rows
:math:`x_1, \dots, x_N`,

.. math::
   \mathrm{AGOP}(f, X) = \frac{1}{N} \sum_{i=1}^N J(x_i)^\top J(x_i), \qquad
   J = \partial f / \partial x \in \mathbb{R}^{K \times d}.

Jacobians come from ``jax.vmap(jax.jacrev(f))`` over blocks of rows; each block's
``JᵀJ`` is added to a ``[d, d]`` accumulator inside a ``lax.scan``, so memory is
bounded by the block size, not by ``N``.

For the kernel predictor :math:`f(x) = \sum_j \alpha_j k(x_j, x)` evaluated at a
training point :math:`x_i`, the Laplace kernel is not differentiable at
:math:`x = x_i`; the term of point ``i`` is defined to contribute 0 and is masked
**by index** (a distance threshold fails in float32 once points collapse).

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
from jax.custom_derivatives import SymbolicZero

from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax.rfm import precision as precision_lib
from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
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


def kernel_predictor(x_train: jax.Array, alpha: jax.Array, *, kernel: str, bandwidth,
                     M: jax.Array | None = None, exclude_self: bool = True,
                     frame: kernels_lib.CentredFrame | None = None,
                     matmul_precision: str = "highest"):
  """The per-example predictor ``f(x, i) = Σ_j α_j k(x_j, x)`` with masked self term.

  When ``exclude_self``, the term ``j == i`` keeps its value but carries no
  gradient (``i`` is the row's index in ``x_train``; pass ``-1`` or any index
  ``≥ n`` for a point that is not a training point).

  With a :class:`~dnc_jax.rfm.kernels.CentredFrame` of ``x_train`` (and ``M=None``),
  distances are computed relative to class means, which keeps float32 accurate
  when classes have collapsed; row ``i``'s centre is its class mean, other
  queries use the nearest class mean; ``matmul_precision`` applies to its
  distance products (and so to the Jacobian products of reverse mode). This
  predictor is differentiated in reverse mode by the rules of
  :func:`~dnc_jax.rfm.kernels.frame_row_sq_distances` and ``_contract`` (one pass
  over each ``[B, K, N]`` cotangent block); forward mode is not defined for it.
  """
  kfn = kernels_lib.kernel_from_sq(kernel)
  zm = x_train if M is None else jnp.matmul(x_train, M, precision=HIGHEST)
  zz = jnp.sum(zm * x_train, axis=-1)
  n = x_train.shape[0]
  if frame is not None and M is not None:
    raise ConfigError("a centred frame works with the Euclidean kernel only (M=None)")
  if frame is not None:
    row_sq = kernels_lib.frame_row_sq_distances(frame, matmul_precision=matmul_precision)
    num_classes = frame.means.shape[0]

    def f(x, i):
      centre = jnp.where(i < n, frame.labels[jnp.minimum(i, n - 1)],
                         kernels_lib.nearest_centre(frame, x[None])[0].astype(frame.labels.dtype))
      sq = row_sq(x, jax.nn.one_hot(centre, num_classes, dtype=x.dtype))
      keep = (jnp.arange(n) != i) if exclude_self else jnp.ones((n,), bool)
      return _contract(sq, alpha, jnp.asarray(bandwidth, x.dtype), keep.astype(x.dtype), kfn)

    return f

  def f(x, i):
    xm = x if M is None else jnp.matmul(x, M, precision=HIGHEST)
    sq = jnp.sum(xm * x) + zz - 2.0 * jnp.matmul(zm, x, precision=HIGHEST)
    sq = jnp.maximum(sq, 0.0)
    if exclude_self:
      self_term = jnp.arange(n) == i
      sq = jnp.where(self_term, jax.lax.stop_gradient(sq), sq)
    return jnp.matmul(kfn(sq, bandwidth), alpha, precision=HIGHEST)

  return f


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _contract(sq, alpha, bandwidth, keep, kfn):
  """``kfn(sq, bandwidth) @ alpha`` for one query; ``sq`` ``[n]``, ``alpha`` ``[n, K]``.

  Its derivative in ``sq`` is weighted by ``keep`` ``[n]`` (0 drops a term's
  gradient, not its value: the masked self term). One rule for the whole
  contraction, so reverse mode makes the ``[K, n]`` cotangent in one pass
  (``α`` times the kernel's derivative) instead of replaying the kernel
  elementwise and masking afterwards.
  """
  return jnp.matmul(kfn(sq, bandwidth), alpha, precision=HIGHEST)


def _contract_jvp(kfn, primals, tangents):
  sq, alpha, bandwidth, keep = primals
  dsq, dalpha, dbandwidth, _ = tangents
  zero = lambda t: isinstance(t, SymbolicZero)  # noqa: E731
  if zero(dsq):
    k = kfn(sq, bandwidth)
  else:
    k, dk_dsq = jax.jvp(lambda s: kfn(s, bandwidth), (sq,), (jnp.ones_like(sq),))
  out = jnp.matmul(k, alpha, precision=HIGHEST)
  # Only the tangents that are not symbolically zero cost anything (the AGOP has dsq only).
  tangent = jnp.zeros_like(out)
  if not zero(dsq):
    tangent = tangent + jnp.matmul(dk_dsq * keep * dsq, alpha, precision=HIGHEST)
  if not zero(dalpha):
    tangent = tangent + jnp.matmul(k, dalpha, precision=HIGHEST)
  if not zero(dbandwidth):
    _, dk_dbw = jax.jvp(lambda b: kfn(sq, b), (bandwidth,), (jnp.ones_like(bandwidth),))
    tangent = tangent + jnp.matmul(dk_dbw * dbandwidth, alpha, precision=HIGHEST)
  return out, tangent


_contract.defjvp(_contract_jvp, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("kernel", "exclude_self", "batch_size"))
def _kernel_agop(x_train, alpha, x, bandwidth, M, kernel, exclude_self, batch_size):
  f = kernel_predictor(x_train, alpha, kernel=kernel, bandwidth=bandwidth, M=M,
                       exclude_self=exclude_self)
  return agop_sum(f, x, batch_size=batch_size) / x.shape[0]


def kernel_agop(x_train: jax.Array, alpha: jax.Array, *, kernel: str = "laplace", bandwidth=2.0,
                M: jax.Array | None = None, x: jax.Array | None = None,
                batch_size: int | None = None) -> jax.Array:
  r"""AGOP of the kernel predictor :math:`f(x) = \sum_j \alpha_j k(x_j, x)`.

  Args:
    x_train: ``[n, d]`` centres ``x_j``.
    alpha: ``[n, K]`` coefficients.
    kernel: ``"laplace"`` or ``"gaussian"``.
    bandwidth: ``L > 0``.
    M: optional ``[d, d]`` Mahalanobis matrix of the kernel.
    x: ``[m, d]`` rows to average over; ``None`` means the training rows, with
      each point's own term masked by index.
    batch_size: rows per block; ``None``: at most 256 rows within a 512 MiB budget.

  Returns:
    ``[d, d]`` AGOP.
  """
  from dnc_jax import validate
  validate.rows(x_train, "x_train")
  kernels_lib.check_bandwidth(bandwidth)
  if getattr(alpha, "ndim", None) != 2 or alpha.shape[0] != x_train.shape[0]:
    raise ConfigError(f"alpha must have shape [n, K] with n = {x_train.shape[0]} (the rows of "
                      f"x_train), got {getattr(alpha, 'shape', None)}")
  if x is not None:
    validate.rows(x, "x", dim=x_train.shape[1])
  if M is not None:
    validate.square(M, "M", x_train.shape[1])
  validate.finite(x_train, "x_train")
  validate.finite(alpha, "alpha")
  exclude_self = x is None
  x = x_train if x is None else x
  if batch_size is None:
    batch_size = default_batch_size(x.shape[0], x_train.shape[0] * (alpha.shape[1] + 2))
  return _kernel_agop(x_train, alpha, x, bandwidth, M, kernel, exclude_self, int(batch_size))
