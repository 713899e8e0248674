r"""The kernel predictor and its derivatives, for its AGOP three ways.

The predictor of kernel ridge regression, evaluated at one row :math:`x`,

.. math::
   f(x) = \sum_{j=1}^N \alpha_j\, k(x_j, x) \in \mathbb{R}^K, \qquad
   k(x_j, x) = \kappa(\|x - x_j\|_M^2),

has the Jacobian

.. math::
   J(x) = \sum_j \alpha_j\, \kappa'(\|x - x_j\|_M^2)\; 2\big(M (x - x_j)\big)^\top
   \in \mathbb{R}^{K \times d},

with :math:`\kappa'(s) = -e^{-\sqrt{s}/L} / (2L\sqrt{s})` (Laplace, 0 at
:math:`s = 0`) and :math:`\kappa'(s) = -e^{-s/(2L^2)} / (2L^2)` (Gaussian). At a
training point :math:`x = x_i` the term :math:`j = i` is dropped (the Laplace
kernel is not differentiable there); it is masked **by index**, since a
distance threshold fails in float32 once points collapse.

Three implementations of its AGOP (:func:`dnc_jax.rfm.agop.kernel_agop`), equal
in exact arithmetic:

* ``"autodiff"``: :func:`autodiff_predictor`, plain ``jnp`` operations
  differentiated by ``vmap(jacrev)``; the reference of the other two.
* ``"rules"``: :func:`kernel_predictor` under ``vmap(jacrev)``, with
  hand-written rules (the Laplace kernel's, :func:`frame_row_sq_distances` and
  ``_contract``) that make reverse mode one pass over each cotangent block.
* ``"closed_form"``: :func:`closed_form_agop_sum`, the Jacobian above as
  matmuls over row blocks, from squared distances that a caller may already
  hold (a Deep RFM layer builds them for its solve).

References:
  Beaglehole et al., NeurIPS 2024, Section 3 and Algorithm 1.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import precision as precision_lib
from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
IMPLEMENTATIONS = ("autodiff", "rules", "closed_form")


def _kernel_and_slope(kfn, sq: jax.Array, bandwidth: jax.Array):
  r"""``(κ(sq), κ'(sq))`` elementwise; the Laplace slope is 0 at ``sq = 0`` (its rule)."""
  return jax.jvp(lambda s: kfn(s, bandwidth), (sq,), (jnp.ones_like(sq),))


def _plain_kernel_from_sq(kernel: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``kernel`` from squared distances in plain ``jnp`` operations (no custom rule)."""
  kernels_lib.kernel_from_sq(kernel)  # validates the name
  if kernel == "laplace":
    return lambda sq, bandwidth: jnp.exp(-kernels_lib.safe_sqrt(sq) / bandwidth)
  return kernels_lib.gaussian_from_sq


def autodiff_predictor(x_train: jax.Array, alpha: jax.Array, *, kernel: str, bandwidth,
                       M: jax.Array | None = None, exclude_self: bool = True):
  """``f(x, i) = Σ_j α_j k(x_j, x)`` written plainly, for automatic differentiation.

  No hand-written rule: distances by :func:`~dnc_jax.rfm.kernels.sq_distances`,
  the kernel as ``exp``/``sqrt``. When ``exclude_self``, the term ``j == i``
  keeps its value and its distance is a constant (``stop_gradient``).

  Args:
    x_train: ``[n, d]`` centres.
    alpha: ``[n, K]`` coefficients.
    kernel, bandwidth, M: the kernel (:mod:`dnc_jax.rfm.kernels`).
    exclude_self: mask the term of row ``i``.

  Returns:
    ``f(x [d], i []) -> [K]``.
  """
  kfn = _plain_kernel_from_sq(kernel)
  n = x_train.shape[0]

  def f(x, i):
    sq = kernels_lib.sq_distances(x[None], x_train, M)[0]
    if exclude_self:
      sq = jnp.where(jnp.arange(n) == i, jax.lax.stop_gradient(sq), sq)
    return jnp.matmul(kfn(sq, bandwidth), alpha, precision=HIGHEST)

  return f


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
  :func:`frame_row_sq_distances` and ``_contract`` (one pass over each
  ``[B, K, N]`` cotangent block); forward mode is not defined for it.
  """
  kfn = kernels_lib.kernel_from_sq(kernel)
  zm = x_train if M is None else jnp.matmul(x_train, M, precision=HIGHEST)
  zz = jnp.sum(zm * x_train, axis=-1)
  n = x_train.shape[0]
  if frame is not None and M is not None:
    raise ConfigError("a centred frame works with the Euclidean kernel only (M=None)")
  if frame is not None:
    row_sq = frame_row_sq_distances(frame, matmul_precision=matmul_precision)
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
    k, dk_dsq = _kernel_and_slope(kfn, sq, bandwidth)
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


def frame_row_sq_distances(frame: kernels_lib.CentredFrame, *, matmul_precision: str = "highest"
                           ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  r"""``sq(x, centre_onehot)``: ONE query's squared distances ``[N]`` to the frame's rows.

  The numbers of :func:`~dnc_jax.rfm.kernels.frame_sq_distances` for a single
  query ``x`` ``[d]`` whose centre class is given one-hot (``[K]``), with
  reverse mode by a hand-written rule. For a cotangent :math:`g \in \mathbb{R}^N`,

  .. math::
     \nabla_x \sum_j g_j \|x - x_j\|^2
       = 2\Big(r \sum_j g_j - \sum_j g_j r_j - \sum_a G_a (\mu_a - \mu_c)\Big),
     \qquad G_a = \sum_{j: c_j = a} g_j,

  from ONE product of ``g`` with the ``[N, d + K]`` matrix of residuals and
  one-hot labels side by side. Same-class mean differences are exactly zero
  here, so a collapsed class keeps its float32 accuracy in the gradient as in
  the distances. Under ``vmap(jacrev)`` ``g`` is the ``[B, K, N]`` cotangent
  block, and this product is the AGOP's Jacobian GEMM: one pass over the block
  instead of the four (two GEMMs, a reduction, a mask) that differentiating
  ``frame_sq_distances`` makes.

  Forward mode is not defined (reverse mode only).
  """
  resid_aug = _resid_aug(frame)                                         # [N, d + K]
  d = frame.resid.shape[1]

  @jax.custom_vjp
  def sq(x, centre_onehot):
    centre = jnp.argmax(centre_onehot).astype(frame.labels.dtype)
    return kernels_lib.frame_sq_distances(frame, x[None], centre[None],
                                          matmul_precision=matmul_precision)[0]

  def fwd(x, centre_onehot):
    return sq(x, centre_onehot), (x, centre_onehot)

  def bwd(res, g):
    x, centre_onehot = res
    mu = jnp.matmul(centre_onehot, frame.means, precision=HIGHEST)     # exact: one-hot
    s = precision_lib.matmul(g, resid_aug, matmul_precision)           # [d + K]
    ga, dmu = s[d:], frame.means - mu[None, :]                           # G_a, μ_a − μ_c
    grad = 2.0 * ((x - mu) * jnp.sum(ga) - s[:d] - jnp.matmul(ga, dmu, precision=HIGHEST))
    return grad, jnp.zeros_like(centre_onehot)

  sq.defvjp(fwd, bwd)
  return sq


def _resid_aug(frame: kernels_lib.CentredFrame) -> jax.Array:
  """``[N, d + K]``: residuals and one-hot labels side by side (one GEMM gives both sums)."""
  return jnp.concatenate([frame.resid, frame.onehot], axis=1)


def _frame_jacobians(frame, s, t, xb, centre, own_resid):
  r"""``[B, K, d]``: :math:`2(s_b r_b - \sum_j C_{bj}\alpha_j r_j - \sum_a G_{ba}(\mu_a - \mu_{c_b}))`.

  ``s`` ``[B, K]`` is :math:`\sum_j C_{bj}\alpha_j`, ``t`` ``[B, K, d + K_c]`` its
  product with residuals and one-hot labels, ``centre`` ``[B]`` the queries'
  classes; ``own_resid`` ``[B, d]`` their residuals (``None``: ``x_b - μ_{c_b}``).
  """
  d = xb.shape[1]
  mu = frame.means[centre]                                                     # [B, d]
  r = xb - mu if own_resid is None else own_resid
  dmu = frame.means[None] - mu[:, None]                                        # [B, K_c, d]
  cls = jnp.einsum("bka,bad->bkd", t[..., d:], dmu, precision=HIGHEST)
  return 2.0 * (s[..., None] * r[:, None, :] - t[..., :d] - cls)


def closed_form_agop_sum(x_train: jax.Array, alpha: jax.Array, x: jax.Array | None = None, *,
                         kernel: str, bandwidth, batch_size: int, M: jax.Array | None = None,
                         frame: kernels_lib.CentredFrame | None = None,
                         sq_distances: jax.Array | None = None,
                         matmul_precision: str = "highest") -> jax.Array:
  r"""Sum over query rows of ``JᵀJ`` of the kernel predictor, from the closed-form Jacobian.

  For query row :math:`x_b` (a block of ``B`` rows at a time) with
  :math:`C_{bj} = \kappa'(\|x_b - x_j\|_M^2)` (0 for :math:`j = b` when
  ``x is None``),

  .. math::
     J_b = 2\Big(\big(\textstyle\sum_j C_{bj}\alpha_j\big)\, (M x_b)^\top
       - \textstyle\sum_j C_{bj}\,\alpha_j (M x_j)^\top\Big),

  both sums one ``[B, N] × [N, K (d + 1)]`` product of the block's
  :math:`C_{bj}` with the rows :math:`\alpha_{jk} (M x_j, 1)` built once
  (``[N, K (d + K)]`` with a frame: residuals and one-hot classes); then
  ``Σ_b J_bᵀJ_b``.
  With a centred ``frame`` the differences :math:`x_b - x_j` are taken as
  residuals and class-mean differences (as in :func:`frame_row_sq_distances`), so
  collapsed classes keep their float32 accuracy. Memory: the ``[N, K (d + K)]``
  weighted rows, and ``[B, N]``, ``[B, K, d + K]`` and (with a frame) ``[B, K, d]``
  per block; traceable (no ``jit`` here).

  Args:
    x_train: ``[N, d]`` centres ``x_j``.
    alpha: ``[N, K]`` coefficients.
    x: ``[m, d]`` query rows; ``None``: the training rows, each one's own term
      dropped (by index).
    kernel, bandwidth: the kernel (:mod:`dnc_jax.rfm.kernels`).
    batch_size: query rows per block (static).
    M: optional symmetric ``[d, d]`` Mahalanobis matrix (not with ``frame``).
    frame: optional :class:`~dnc_jax.rfm.kernels.CentredFrame` of ``x_train``;
      queries are centred on their class (``x is None``) or on the nearest mean.
    sq_distances: optional ``[m, N]`` (``[N, N]`` when ``x is None``) squared
      distances :math:`\|x_b - x_j\|_M^2` already computed (e.g. the matrix of
      the kernel solve; its diagonal is not read when ``x is None``); ``None``
      computes them block by block.
    matmul_precision: precision of the Jacobian and ``JᵀJ`` products and of
      the frame's distances (:mod:`dnc_jax.rfm.precision`).

  Returns:
    ``[d, d]``: :math:`\sum_b J_b^\top J_b` (divide by ``m`` for the AGOP).
  """
  if frame is not None and M is not None:
    raise ConfigError("a centred frame works with the Euclidean kernel only (M=None)")
  exclude_self = x is None
  queries = x_train if x is None else x
  (n, d), m = x_train.shape, queries.shape[0]
  if sq_distances is not None and sq_distances.shape != (m, n):
    raise ConfigError(f"sq_distances must have shape [m, N] = [{m}, {n}] (query rows × "
                      f"training rows), got {sq_distances.shape}; pass None to compute them")
  kfn = kernels_lib.kernel_from_sq(kernel)
  bw = jnp.asarray(bandwidth, x_train.dtype)
  b = max(1, min(int(batch_size), m))
  nb = -(-m // b)
  if frame is None:
    # (M x_j) as rows and a column of ones (its product gives Σ_j C_bj α_j); the AGOP's M is
    # symmetric, so ∇ ‖x - x_j‖²_M = 2 M (x - x_j).
    xm = x_train if M is None else jnp.matmul(x_train, M, precision=HIGHEST)     # [N, d]
    aug = jnp.concatenate([xm, jnp.ones((n, 1), xm.dtype)], axis=1)              # [N, d + 1]
    y_query = queries if M is None else jnp.matmul(queries, M, precision=HIGHEST)
  else:
    aug = _resid_aug(frame)                                                      # [N, d + K_c]
    centres = frame.labels if exclude_self else kernels_lib.nearest_centre(frame, queries)
  e, k = aug.shape[1], alpha.shape[1]
  # α_jk aug_j for every class k side by side, built once: a block's Jacobian terms are then
  # one [B, N] × [N, K e] product of its slopes, with no [B, K, N] intermediate.
  weighted = (alpha[:, :, None] * aug[:, None, :]).reshape(n, k * e)             # [N, K e]

  def block_sq(rows, xb):
    if sq_distances is not None:
      return sq_distances[rows]
    if frame is not None:
      return kernels_lib.frame_sq_distances(frame, xb, centres[rows],
                                            matmul_precision=matmul_precision)
    return kernels_lib.sq_distances(xb, x_train, M)

  def body(acc, idx):
    rows = jnp.minimum(idx, m - 1)        # padding rows repeat the last one, with C = 0
    xb = queries[rows]
    _, slope = _kernel_and_slope(kfn, block_sq(rows, xb), bw)                    # [B, N]
    drop = (idx >= m)[:, None]
    if exclude_self:
      drop = drop | (idx[:, None] == jnp.arange(n)[None, :])
    c = jnp.where(drop, 0.0, slope)
    t = precision_lib.matmul(c, weighted, matmul_precision).reshape(b, k, e)     # [B, K, e]
    if frame is None:
      jac = 2.0 * (t[..., -1:] * y_query[rows][:, None, :] - t[..., :d])
    else:
      s = jnp.sum(t[..., d:], axis=-1)                                           # [B, K]
      # A training row's own residual, not x − μ again: the frame's residuals may come
      # from a mean rounded differently (XLA multiplies by 1/count), and r_b − r_j must
      # be the exact difference of the same residuals.
      own = frame.resid[rows] if exclude_self else None
      jac = _frame_jacobians(frame, s, t, xb, centres[rows], own)
    return acc + precision_lib.einsum("bkd,bke->de", jac, jac, matmul_precision), None

  idx = jnp.arange(nb * b).reshape(nb, b)
  acc, _ = jax.lax.scan(body, jnp.zeros((d, d), x_train.dtype), idx)
  return acc
