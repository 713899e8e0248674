r"""Kernel ridge regression solvers: Cholesky, and matrix-free conjugate gradients.

The Deep RFM system at every layer is

.. math::
   (K + \mu I)\,\alpha = Y, \qquad K_{ij} = k(x_i, x_j), \quad
   K \in \mathbb{R}^{N\times N},\ Y \in \mathbb{R}^{N\times C}.

Cholesky needs the whole ``[N, N]`` matrix (and its factor) in one device's
memory: ``N = 100,000`` float32 is already 40 GB. Conjugate gradients (CG) only
needs products :math:`v \mapsto (K + \mu I) v`, which are computed from kernel
**row blocks** ``[b, N]`` recomputed on the fly (or kept, when a device's rows
fit in its memory budget), so no device ever holds ``[N, N]``.

CG on a Laplace kernel converges slowly: the condition number
:math:`(\lambda_1 + \mu)/\mu` is about ``N/μ``. The **Nyström preconditioner**
removes the top of the spectrum. With ``s`` landmark rows ``S`` (evenly spaced,
hence stratified when rows are grouped by class), ``C = K[:, S]`` ``[N, s]`` and
``W = K[S, S]`` ``[s, s]``, the Nyström approximation
:math:`\hat K = C W^{-1} C^\top = U \hat\Lambda U^\top` (``U`` ``[N, r]``
orthonormal, computed stably as ``B = C L^{-\top}`` with ``W + νI = L L^\top``,
``B^\top B = Q \Sigma^2 Q^\top``, ``U = B Q \Sigma^{-1}``) gives

.. math::
   P^{-1} = (\hat\lambda_r + \mu)\, U (\hat\Lambda + \mu I)^{-1} U^\top + (I - U U^\top),

an SPD matrix whose preconditioned system has condition number about
:math:`(\lambda_{r+1} + \mu)/(\hat\lambda_r + \mu)` instead of
:math:`(\lambda_1 + \mu)/\mu`. This is the spectral idea of EigenPro (damping
the top Nyström eigen-directions of the kernel) used as a CG preconditioner.

Everything here works on one device (``axis_name=None``) or inside
``shard_map`` over a 1-D mesh whose axis ``axis_name`` shards the rows: inner
products and ``Uᵀ v`` are then ``psum``-reduced, and each product gathers the
``[N, C]`` search direction once (see :mod:`dnc_jax.rfm.sharded`).

Distances use the class-centred frame of :mod:`dnc_jax.rfm.kernels` (exactly the
formula of the Cholesky path in :mod:`dnc_jax.rfm.driver`), so float32 stays
accurate when classes collapse.

References:
  Hestenes, Stiefel. Methods of conjugate gradients for solving linear systems.
  J. Res. NBS, 1952.
  Ma, Belkin. Diving into the shallows: a computational perspective on
  large-scale shallow learning (EigenPro). NeurIPS 2017.
  Frangella, Tropp, Udell. Randomized Nyström preconditioning. SIAM J. Matrix
  Anal. Appl., 2023.
  Williams, Seeger. Using the Nyström method to speed up kernel machines.
  NeurIPS 2001.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError, SolveError
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax.rfm.config import PRECONDITIONERS, SOLVERS

HIGHEST = jax.lax.Precision.HIGHEST
log = logging.getLogger(__name__)


# -- reductions that work on one device or inside shard_map -----------------------

def _psum(v, axis_name):
  return v if axis_name is None else jax.lax.psum(v, axis_name)


def _gather(v, axis_name):
  """Row-sharded ``[n_loc, ...]`` → all rows ``[N, ...]`` (identity on one device)."""
  return v if axis_name is None else jax.lax.all_gather(v, axis_name, axis=0, tiled=True)


def _col_dot(a, b, axis_name):
  """Column-wise inner products ``[C]`` of row-sharded ``[n, C]`` arrays."""
  return _psum(jnp.sum(a * b, axis=0), axis_name)


# -- conjugate gradients ---------------------------------------------------------

class CGResult(NamedTuple):
  """Result of :func:`conjugate_gradient`.

  Attributes:
    x: ``[n, C]`` solution (this device's rows when sharded).
    iterations: ``[]`` iterations run.
    residual: ``[]`` final true relative residual ``max_c ‖b_c - A x_c‖/‖b_c‖``.
    residuals: ``[max_iter + 1]`` recurrence residual after each iteration
      (entry 0 is the start, 1.0); NaN after the last iteration.
    converged: ``[]`` bool, the recurrence residual reached ``tol``.
  """
  x: jax.Array
  iterations: jax.Array
  residual: jax.Array
  residuals: jax.Array
  converged: jax.Array


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *,
                       tol: float, max_iter: int,
                       precond: Callable[[jax.Array], jax.Array] | None = None,
                       axis_name: str | None = None) -> CGResult:
  r"""(Preconditioned) conjugate gradients for ``A X = B`` with ``C`` right-hand sides.

  Each column runs its own CG recurrence (step sizes are per column),
  vectorised over columns; a column stops updating once its relative residual
  :math:`\|r_c\|/\|b_c\|` is at most ``tol``, and the loop stops when every
  column has. Traceable (a ``lax.while_loop``); starts from ``x = 0``.

  Args:
    matvec: ``v [n, C] -> A v [n, C]`` for a symmetric positive definite ``A``.
    b: ``[n, C]`` right-hand sides (this device's rows when sharded).
    tol: relative residual at which a column stops.
    max_iter: iteration cap (static).
    precond: ``r -> P^{-1} r``, SPD; ``None`` for plain CG.
    axis_name: mesh axis sharding the rows (inside ``shard_map``), else ``None``.

  Returns:
    :class:`CGResult`.
  """
  precond = precond or (lambda r: r)
  dtype = b.dtype
  bnorm = jnp.sqrt(_col_dot(b, b, axis_name))
  bnorm = jnp.where(bnorm > 0, bnorm, 1.0)
  x = jnp.zeros_like(b)
  r = b
  z = precond(r)
  p = z
  rz = _col_dot(r, z, axis_name)
  res = jnp.sqrt(_col_dot(r, r, axis_name)) / bnorm
  log0 = jnp.full((max_iter + 1,), jnp.nan, dtype).at[0].set(jnp.max(res))
  tol = jnp.asarray(tol, dtype)

  def cond(state):
    it, _, _, _, _, res, _ = state
    return (it < max_iter) & (jnp.max(res) > tol)

  def body(state):
    it, x, r, p, rz, res, hist = state
    active = res > tol
    ap = matvec(p)
    pap = _col_dot(p, ap, axis_name)
    a = jnp.where(active & (pap > 0), rz / jnp.where(pap > 0, pap, 1.0), 0.0)
    x = x + a * p
    r = r - a * ap
    z = precond(r)
    rz_new = _col_dot(r, z, axis_name)
    beta = jnp.where(active & (rz > 0), rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
    p = jnp.where(active, z + beta * p, p)
    rz = jnp.where(active, rz_new, rz)
    res = jnp.where(active, jnp.sqrt(_col_dot(r, r, axis_name)) / bnorm, res)
    hist = hist.at[it + 1].set(jnp.max(res))
    return it + 1, x, r, p, rz, res, hist

  state = (jnp.asarray(0, jnp.int32), x, r, p, rz, res, log0)
  it, x, r, p, rz, res, hist = jax.lax.while_loop(cond, body, state)
  # The recurrence residual drifts from the true one in finite precision.
  true_r = b - matvec(x)
  true_res = jnp.max(jnp.sqrt(_col_dot(true_r, true_r, axis_name)) / bnorm)
  return CGResult(x, it, true_res, hist, jnp.max(res) <= tol)


# -- kernel blocks in the centred frame ------------------------------------------

def subframe(frame: kernels_lib.CentredFrame, idx: jax.Array) -> kernels_lib.CentredFrame:
  """The frame of rows ``idx`` ``[s]`` (same class means: still an exact frame)."""
  return kernels_lib.CentredFrame(
      frame.labels[idx], frame.means, frame.resid[idx], frame.resid_means[idx],
      frame.own_const[idx], frame.row_mean_sq_dist[idx], frame.onehot[idx])


def kernel_rows(frame: kernels_lib.CentredFrame, q: jax.Array, centre: jax.Array,
                row_index: jax.Array | None, *, kernel: str, bandwidth,
                col_index: jax.Array | None = None) -> jax.Array:
  r"""Kernel block ``[m, n]`` between queries ``q`` ``[m, d]`` and the frame's rows.

  Args:
    frame: :class:`~dnc_jax.rfm.kernels.CentredFrame` of the ``n`` columns.
    q: ``[m, d]`` query rows; ``centre`` ``[m]`` their centre classes.
    row_index: ``[m]`` global training index of each query (its own column
      gets distance exactly 0, as on the diagonal of the Cholesky path), or
      ``None`` for queries that are not training rows.
    col_index: ``[n]`` global index of each column (default ``0..n-1``).
  """
  sq = kernels_lib.frame_sq_distances(frame, q, centre)
  if row_index is not None:
    cols = (jnp.arange(sq.shape[1], dtype=row_index.dtype) if col_index is None
            else col_index.astype(row_index.dtype))
    sq = jnp.where(row_index[:, None] == cols[None, :], 0.0, sq)
  return kernels_lib.kernel_from_sq(kernel)(sq, bandwidth)


def _row_blocks(fn: Callable[..., jax.Array], block: int, *arrays: jax.Array) -> jax.Array:
  """``fn`` applied to row blocks of ``arrays`` (all ``[m, ...]``), concatenated.

  Only one ``[block, N]`` kernel block is alive at a time.
  """
  m = arrays[0].shape[0]
  b = max(1, min(int(block), m))
  nb = -(-m // b)
  pad = nb * b - m
  padded = [jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            for a in arrays]
  out = jax.lax.map(lambda blk: fn(*blk), tuple(a.reshape((nb, b) + a.shape[1:])
                                                  for a in padded))
  return out.reshape((nb * b,) + out.shape[2:])[:m]


def kernel_matvec(frame, q, centre, row_index, v, *, kernel: str, bandwidth,
                  block_rows: int) -> jax.Array:
  """``k(q, X) v`` ``[m, C]`` for ``v`` ``[n, C]``, by recomputed row blocks."""
  if row_index is None:
    row_index = jnp.full((q.shape[0],), -1, jnp.int32)

  def one(qb, cb, ib):
    kb = kernel_rows(frame, qb, cb, ib, kernel=kernel, bandwidth=bandwidth)
    return jnp.matmul(kb, v, precision=HIGHEST)

  return _row_blocks(one, block_rows, q, centre, row_index)


# -- Nyström preconditioner ------------------------------------------------------

class NystromPreconditioner(NamedTuple):
  r"""``P^{-1} v = v + U (c ⊙ Uᵀ v)`` with ``c_i = (λ̂_r + μ)/(λ̂_i + μ) - 1``.

  Attributes:
    u: ``[n, r]`` orthonormal Nyström eigenvectors (this device's rows).
    coef: ``[r]`` coefficients ``c`` (0 for dropped directions).
    eigenvalues: ``[r]`` Nyström eigenvalues ``λ̂`` (0 for dropped ones).
  """
  u: jax.Array
  coef: jax.Array
  eigenvalues: jax.Array


def landmark_indices(n: int, size: int) -> np.ndarray:
  """``size`` evenly spaced row indices in ``0..n-1`` (stratified for grouped rows)."""
  size = max(1, min(int(size), int(n)))
  return (np.arange(size, dtype=np.int64) * n // size).astype(np.int32)


def nystrom_preconditioner(c: jax.Array, w: jax.Array, ridge, *,
                           axis_name: str | None = None) -> NystromPreconditioner:
  r"""Builds :class:`NystromPreconditioner` from ``C = K[:, S]`` and ``W = K[S, S]``.

  Args:
    c: ``[n, s]`` kernel between (this device's) rows and the landmarks; rows
      that are padding must be zero.
    w: ``[s, s]`` kernel among the landmarks (replicated).
    ridge: ``μ``.
    axis_name: mesh axis sharding the rows of ``c``, or ``None``.
  """
  s = w.shape[0]
  dtype = w.dtype
  eps = jnp.finfo(dtype).eps
  w = 0.5 * (w + w.T)
  # A tiny shift makes the Cholesky of W succeed for duplicate landmarks.
  nu = s * eps * jnp.maximum(jnp.max(jnp.diag(w)), 1.0)
  chol = jnp.linalg.cholesky(w + nu * jnp.eye(s, dtype=dtype))
  bt = jax.scipy.linalg.solve_triangular(chol, c.T, lower=True)      # [s, n]  (C L^-T)^T
  gram = _psum(jnp.matmul(bt, bt.T, precision=HIGHEST), axis_name)  # [s, s]  BᵀB
  sig2, q = jnp.linalg.eigh(0.5 * (gram + gram.T))
  lam = jnp.maximum(sig2 - nu, 0.0)
  # BᵀB squares the singular values: directions below √eps of the top are noise.
  keep = (lam > jnp.sqrt(eps) * jnp.max(lam)) & (lam > 0)
  inv_sig = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, sig2, 1.0)), 0.0)
  u = jnp.matmul(bt.T, q * inv_sig[None, :], precision=HIGHEST)     # [n, s]
  lam_r = jnp.min(jnp.where(keep, lam, jnp.inf))
  coef = jnp.where(keep, (lam_r + ridge) / (lam + ridge) - 1.0, 0.0)
  return NystromPreconditioner(u, coef, jnp.where(keep, lam, 0.0))


def apply_nystrom(pre: NystromPreconditioner, v: jax.Array, *,
                  axis_name: str | None = None) -> jax.Array:
  """``P^{-1} v`` for ``v`` ``[n, C]``."""
  utv = _psum(jnp.matmul(pre.u.T, v, precision=HIGHEST), axis_name)   # [r, C]
  return v + jnp.matmul(pre.u, pre.coef[:, None] * utv, precision=HIGHEST)


# -- the KRR system solved by CG on (a shard of) the rows ---------------------------

class CGOptions(NamedTuple):
  """Static options of the CG solver (hashable, for ``jit``)."""
  tol: float = 1e-6
  max_iter: int = 2000
  preconditioner: str = "nystrom"
  rank: int = 1000
  block_rows: int = 1024
  cache: bool = True


def cg_local(frame: kernels_lib.CentredFrame, x_full: jax.Array, x_loc: jax.Array,
             lab_loc: jax.Array, row0, valid_loc: jax.Array, valid_full: jax.Array, y_loc: jax.Array, *,
             kernel: str, bandwidth, ridge, n_valid: int, options: CGOptions,
             axis_name: str | None = None):
  r"""Solves :math:`(K + \mu I)\alpha = Y` by CG for this device's rows.

  Traceable; runs on one device (``axis_name=None``, ``row0 = 0``) or inside
  ``shard_map``. Padding rows (``valid = False``) are decoupled: their rows and
  columns of ``K`` are replaced by the identity and their targets are 0, so
  their ``α`` stays exactly 0, as in the padded Cholesky path.

  Args:
    frame: centred frame of ALL ``N`` (padded) training rows (replicated).
    x_full: ``[N, d]`` those rows (replicated; landmarks are taken from them).
    x_loc: ``[n_loc, d]`` this device's (normalised) rows; ``lab_loc`` ``[n_loc]``.
    row0: global index of this device's first row.
    valid_loc: ``[n_loc]`` bool; ``valid_full`` ``[N]`` bool.
    y_loc: ``[n_loc, C]`` targets.
    n_valid: number of real rows (landmarks are drawn among them).
    options: :class:`CGOptions`.

  Returns:
    ``(alpha_loc [n_loc, C], kalpha_loc [n_loc, C] = (Kα) rows, CGResult)``.
  """
  dtype = x_loc.dtype
  n_loc = x_loc.shape[0]
  gidx = row0 + jnp.arange(n_loc, dtype=jnp.int32)
  wl = valid_loc.astype(dtype)[:, None]
  wf = valid_full.astype(dtype)[:, None]
  y_loc = y_loc * wl
  if options.cache:
    kblock = kernel_rows(frame, x_loc, lab_loc, gidx, kernel=kernel, bandwidth=bandwidth)
    kblock = kblock * wl * wf.T

    def kmv(v_full):
      return jnp.matmul(kblock, v_full, precision=HIGHEST)
  else:
    def kmv(v_full):
      return wl * kernel_matvec(frame, x_loc, lab_loc, gidx, v_full * wf, kernel=kernel,
                                bandwidth=bandwidth, block_rows=options.block_rows)

  def matvec(v):
    # Padding rows: (K + μI) restricted to them is (1 + μ) I.
    kv = kmv(_gather(v, axis_name)) + (1.0 - wl) * v
    return kv + ridge * v

  precond = None
  if options.preconditioner == "nystrom":
    idx = jnp.asarray(landmark_indices(n_valid, options.rank))
    land = subframe(frame, idx)
    cmat = kernel_rows(land, x_loc, lab_loc, gidx, kernel=kernel, bandwidth=bandwidth,
                       col_index=idx) * wl
    wmat = kernel_rows(land, x_full[idx], frame.labels[idx], idx, kernel=kernel, bandwidth=bandwidth,
                       col_index=idx)
    pre = nystrom_preconditioner(cmat, wmat, ridge, axis_name=axis_name)
    precond = functools.partial(apply_nystrom, pre, axis_name=axis_name)
  elif options.preconditioner != "none":
    raise ConfigError(f"unknown preconditioner {options.preconditioner!r}; choose one of "
                      f"{', '.join(PRECONDITIONERS)}")
  res = conjugate_gradient(matvec, y_loc, tol=options.tol, max_iter=options.max_iter,
                           precond=precond, axis_name=axis_name)
  alpha = res.x * wl
  kalpha = kmv(_gather(alpha, axis_name))
  return alpha, kalpha, res


def cg_error(residual: float, tol: float, max_iter: int, ridge: float, n: int,
             where: str = "") -> SolveError:
  """The error for CG that stopped at its cap, with the fixes."""
  prefix = f"{where}: " if where else ""
  fix = ("use a ridge (e.g. --ridge 1e-3)" if ridge == 0 else
         f"increase the ridge above {ridge:g}")
  return SolveError(
      f"{prefix}conjugate gradients did not converge on the kernel system (n = {n}): the "
      f"relative residual reached {residual:.3g} after the cap of {max_iter} iterations "
      f"(tolerance {tol:g}). Allow more iterations (--cg-max-iter), {fix}, a larger "
      "Nyström rank (--cg-rank), a looser tolerance (--cg-tol), or --solver cholesky if "
      "the N×N matrix fits in memory.")


# -- choosing a solver -------------------------------------------------------------

def cholesky_bytes(n: int, itemsize: int) -> int:
  """Peak bytes of the Cholesky path: distances, kernel matrix and factor, ``3 N²``."""
  return 3 * n * n * itemsize


def choose_solver(n: int, *, itemsize: int = 4, memory_bytes: int | None = None) -> str:
  """``"cholesky"`` when ``3 N²`` floats fit in ``memory_bytes``, else ``"cg"``.

  ``memory_bytes``: default :func:`dnc_jax.rfm.memory.budget_bytes` (the one memory policy).
  """
  memory_bytes = memory_lib.budget_bytes(None) if memory_bytes is None else int(memory_bytes)
  return "cholesky" if cholesky_bytes(n, itemsize) <= memory_bytes else "cg"


def resolve_solver(method: str, n: int, itemsize: int, memory_bytes: int | None = None) -> str:
  """``method`` with ``"auto"`` resolved by :func:`choose_solver`."""
  check_solver(method)
  if method == "auto":
    return choose_solver(n, itemsize=itemsize, memory_bytes=memory_bytes)
  return method


def check_solver(solver: str) -> None:
  if solver not in SOLVERS:
    raise ConfigError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")


def cg_options(n_loc: int, n: int, d: int, itemsize: int, *, tol=None, max_iter: int = 2000,
               preconditioner: str = "nystrom", rank: int = 1000, memory_bytes: int | None = None,
               dtype=None) -> CGOptions:
  """CG options for ``n_loc`` rows per device out of ``n``: caches the kernel row
  block when ``n_loc × n`` fits in half of ``memory_bytes``, else recomputes it in
  blocks of rows sized to that budget; at most ``n // 4`` Nyström landmarks.
  """
  if preconditioner not in PRECONDITIONERS:
    raise ConfigError(f"unknown preconditioner {preconditioner!r}; choose one of "
                      f"{', '.join(PRECONDITIONERS)}")
  if max_iter < 1:
    raise ConfigError(f"the CG iteration cap must be ≥ 1, got {max_iter}")
  if tol is None:
    tol = 1e-8 if itemsize >= 8 else 1e-4
  if not 0 < tol < 1:
    raise ConfigError(f"the CG tolerance must lie in (0, 1), got {tol}")
  memory_bytes = memory_lib.budget_bytes(None) if memory_bytes is None else int(memory_bytes)
  cache = n_loc * n * itemsize <= memory_bytes // 2
  # A recomputed block holds a few [b, N] arrays and a [b, d] slice.
  block = max(1, min(n_loc, (memory_bytes // 4) // max(1, (4 * n + d) * itemsize)))
  # More landmarks than N/4 make building the preconditioner (an s × s eigh on
  # every device) cost as much as the Cholesky it replaces.
  rank = max(1, min(int(rank), n // 4))
  return CGOptions(float(tol), int(max_iter), preconditioner, rank,
                   int(block), bool(cache))


# -- one-device entry point ----------------------------------------------------------

class SolveResult(NamedTuple):
  """Result of :func:`solve`.

  Attributes:
    alpha: ``[N, C]`` coefficients.
    solver: ``"cholesky"`` or ``"cg"`` (what ``"auto"`` chose).
    iterations: CG iterations (0 for Cholesky).
    residual: final true relative residual (CG), or NaN (Cholesky).
    residuals: per-iteration residual log (NumPy, CG only), else ``None``.
  """
  alpha: jax.Array
  solver: str
  iterations: int
  residual: float
  residuals: np.ndarray | None


@functools.partial(jax.jit, static_argnames=("kernel", "num_classes"))
def _cholesky_system(x, y, labels, bandwidth, ridge, *, kernel, num_classes):
  # The distances of deep_rfm._fit_predict: centred frame, zero diagonal; the
  # Cholesky reads the lower triangle.
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  sq = kernels_lib.frame_sq_distances(frame, x, frame.labels)
  sq = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, sq)
  return krr_lib.cholesky_solve(kernels_lib.kernel_from_sq(kernel)(sq, bandwidth), y, ridge)


@functools.partial(jax.jit, static_argnames=("kernel", "num_classes", "options"))
def _cg_system(x, y, labels, bandwidth, ridge, *, kernel, num_classes, options):
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  valid = jnp.ones((x.shape[0],), bool)
  alpha, _, res = cg_local(frame, x, x, labels, 0, valid, valid, y, kernel=kernel,
                           bandwidth=bandwidth, ridge=ridge, n_valid=x.shape[0],
                           options=options)
  return alpha, res


def solve(x: jax.Array, y: jax.Array, *, kernel: str = "laplace", bandwidth=2.0, ridge=1e-3,
          labels: jax.Array | None = None, num_classes: int | None = None,
          solver: str = "auto", memory_bytes: int | None = None, tol: float | None = None,
          max_iter: int = 2000, preconditioner: str = "nystrom", rank: int = 1000,
          cache: bool | None = None) -> SolveResult:
  r"""Solves the kernel ridge system :math:`(k(X, X) + \mu I)\alpha = Y`.

  Args:
    x: ``[N, d]`` training rows (used as given; Deep RFM normalises them first).
    y: ``[N, C]`` targets.
    kernel, bandwidth, ridge: the kernel ``k`` and ``μ ≥ 0``.
    labels: ``[N]`` class labels for the class-centred distances (``None``:
      one class, i.e. distances relative to the global mean).
    num_classes: ``K`` (default ``max(labels) + 1``).
    solver: ``"cholesky"``, ``"cg"`` or ``"auto"`` (Cholesky when
      :func:`cholesky_bytes` fits in ``memory_bytes``).
    memory_bytes: memory budget (default: half of one device's memory).
    tol: CG relative residual (default 1e-4 in float32, 1e-8 in float64).
    max_iter: CG iteration cap.
    preconditioner: ``"nystrom"`` or ``"none"`` (plain CG).
    rank: Nyström landmarks ``s`` (at most ``N // 4``).
    cache: keep the ``[N, N]`` kernel for the CG products (default: when it
      fits in half of ``memory_bytes``); ``False`` recomputes row blocks.

  Returns:
    :class:`SolveResult`.

  Raises:
    SolveError: Cholesky broke down, or CG hit ``max_iter`` (names the
      residual reached and the cap, and suggests a ridge or more iterations).
  """
  check_solver(solver)
  kernels_lib.kernel_from_sq(kernel)
  kernels_lib.check_bandwidth(bandwidth)
  krr_lib.check_ridge(ridge)
  x = jnp.asarray(x)
  y = jnp.asarray(y, x.dtype)
  n = x.shape[0]
  if labels is None:
    labels = jnp.zeros((n,), jnp.int32)
  labels = jnp.asarray(labels, jnp.int32)
  if num_classes is None:
    num_classes = int(jnp.max(labels)) + 1
  itemsize = x.dtype.itemsize
  if solver == "auto":
    solver = choose_solver(n, itemsize=itemsize, memory_bytes=memory_bytes)
  if solver == "cholesky":
    alpha, ok = _cholesky_system(x, y, labels, bandwidth, ridge, kernel=kernel,
                                 num_classes=int(num_classes))
    if not bool(ok):
      raise krr_lib.solve_error(float(ridge), n, dtype=x.dtype)
    return SolveResult(alpha, "cholesky", 0, float("nan"), None)
  opts = cg_options(n, n, x.shape[1], itemsize, tol=tol, max_iter=max_iter,
                    preconditioner=preconditioner, rank=rank, memory_bytes=memory_bytes)
  if cache is not None:
    opts = opts._replace(cache=bool(cache))
  alpha, res = _cg_system(x, y, labels, bandwidth, ridge, kernel=kernel,
                          num_classes=int(num_classes), options=opts)
  hist = np.asarray(res.residuals)
  iters = int(res.iterations)
  hist = hist[:iters + 1]
  log.info("CG (%s): %d iterations, relative residual %.3e", opts.preconditioner, iters,
           float(res.residual))
  if not bool(res.converged):
    raise cg_error(float(hist[-1]), opts.tol, opts.max_iter, float(ridge), n)
  return SolveResult(alpha, "cg", iters, float(res.residual), hist)
