r"""Theorem 5.4 and Proposition B.1: the kernel that maximises the ridge objective is
the collapsed one.

Over PSD, entrywise non-negative, unit-diagonal ``k`` ``[N, N]``,

.. math::
   J(k) = \sum_c Y_c^\top (k + \mu I)^{-1} k\, Y_c

is maximised uniquely by :math:`k^* = YY^\top`, with value
:math:`\sum_c n_c^2/(n_c+\mu)` (:math:`K n^2/(n+\mu)` balanced). ``J`` is concave
(:math:`J = \mathrm{tr}(YY^\top) - \mu\,\mathrm{tr}((k+\mu I)^{-1}YY^\top)`), so
projected gradient ascent (projection by Dykstra's algorithm) finds it
(:func:`check_theorem_5_4`). **Proposition B.1**: on full-rank data (``N ≤ d``)
the Mahalanobis kernels :math:`k_M(x, z) = \phi(\|x-z\|_M)` reach the same
supremum (:func:`check_proposition_b1`). :func:`theorem_5_4_report` bundles both.
Conventions: :mod:`dnc_jax.theory.common`.

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Section 5.2 and Appendix B.
  Boyle, Dykstra. A method for finding projections onto the intersection of
  convex sets in Hilbert spaces. 1986.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.theory.common import (HIGHEST, KERNELS, check_classes, collapse_target, labels32,
                                   make_full_rank_data, one_hot01, positive, symmetrise)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def kernel_objective(k: jax.Array, labels: jax.Array, *, num_classes: int, mu: float) -> jax.Array:
  r""":math:`J(k) = \sum_c Y_c^\top (k+\mu I)^{-1} k Y_c` for a kernel matrix ``k`` ``[N, N]``.

  ``Y_c`` is the 0/1 indicator ``[N]`` of class ``c``.
  """
  y = one_hot01(labels, num_classes=num_classes, dtype=k.dtype)
  eye = jnp.eye(k.shape[0], dtype=k.dtype)
  ky = jnp.matmul(k, y, precision=HIGHEST)
  return jnp.sum(y * jnp.linalg.solve(symmetrise(k) + mu * eye, ky))


def objective_at_target(class_sizes, *, mu: float) -> float:
  r""":math:`J(YY^\top) = \sum_c n_c^2/(n_c+\mu)` (:math:`Kn^2/(n+\mu)` balanced)."""
  n = np.asarray(class_sizes, dtype=np.float64)
  return float(np.sum(n ** 2 / (n + mu)))


def _project_box(z):
  """Nearest matrix with unit diagonal and non-negative off-diagonal entries."""
  n = z.shape[0]
  return jnp.where(jnp.eye(n, dtype=bool), 1.0, jnp.maximum(z, 0.0))


def _project_psd(z):
  w, v = jnp.linalg.eigh(symmetrise(z))
  return symmetrise(jnp.matmul(v * jnp.clip(w, 0.0)[None, :], v.T, precision=HIGHEST))


@functools.partial(jax.jit, static_argnames=("num_iters",))
def project_feasible(k: jax.Array, *, num_iters: int = 100) -> jax.Array:
  r"""Euclidean projection onto {PSD, entrywise ≥ 0, unit diagonal} by Dykstra's algorithm.

  Alternates the PSD projection (eigenvalues clipped at 0) with the projection
  onto unit-diagonal non-negative matrices, with Dykstra's corrections so the
  limit is the projection onto the intersection, not just a feasible point.

  Args:
    k: ``[N, N]`` symmetric matrix.
    num_iters: Dykstra iterations.

  Returns:
    ``[N, N]``: the box-projected iterate (exact unit diagonal and non-negativity;
    PSD up to the algorithm's tolerance — see :func:`make_feasible`).
  """
  def body(_, carry):
    x, p, q = carry
    yv = _project_psd(x + p)
    p = x + p - yv
    x_new = _project_box(yv + q)
    q = yv + q - x_new
    return x_new, p, q

  z = jnp.zeros_like(k)
  x, _, _ = jax.lax.fori_loop(0, num_iters, body, (symmetrise(k), z, z))
  return x


@jax.jit
def make_feasible(k: jax.Array) -> jax.Array:
  r"""An exactly feasible kernel near ``k``: box projection, then shrink to ``I``.

  After the box step (unit diagonal, entries ≥ 0) the matrix
  :math:`(1-t)k + tI` with :math:`t = \max(0, -\lambda_{min})/(1-\lambda_{min})`
  keeps both properties and has smallest eigenvalue 0.
  """
  k = _project_box(symmetrise(k))
  lam = jnp.minimum(jnp.linalg.eigvalsh(k)[0], 0.0)
  t = -lam / (1.0 - lam)
  return (1.0 - t) * k + t * jnp.eye(k.shape[0], dtype=k.dtype)


@functools.partial(jax.jit, static_argnames=("n", "dtype"))
def random_feasible_kernel(key: jax.Array, n: int, *, dtype=None) -> jax.Array:
  """A random feasible kernel ``[n, n]``: Gram of random non-negative unit rows."""
  dtype = dtype or jnp.result_type(float)
  v = jnp.abs(jax.random.normal(key, (n, n), dtype))
  v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
  return symmetrise(jnp.matmul(v, v.T, precision=HIGHEST))


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps", "projection_iters"))
def _ascent(k0, labels, mu, step, *, num_classes, num_steps, projection_iters):
  grad = jax.grad(kernel_objective)
  target = collapse_target(labels, num_classes=num_classes, dtype=k0.dtype)
  tnorm = jnp.linalg.norm(target)

  def one(k, _):
    g = grad(k, labels, num_classes=num_classes, mu=mu)
    k = project_feasible(k + step * symmetrise(g), num_iters=projection_iters)
    kf = make_feasible(k)  # recorded values are at exactly feasible points
    return k, (kernel_objective(kf, labels, num_classes=num_classes, mu=mu),
               jnp.linalg.norm(kf - target) / tnorm)

  return jax.lax.scan(one, k0, None, length=num_steps)


@functools.partial(jax.jit, static_argnames=("n", "count"))
def _random_kernels(key, *, n, count):
  """``[count, n, n]`` draws of :func:`random_feasible_kernel` (one RNG call)."""
  v = jnp.abs(jax.random.normal(key, (count, n, n), jnp.result_type(float)))
  v = v / jnp.linalg.norm(v, axis=2, keepdims=True)
  k = jnp.einsum("cip,cjp->cij", v, v, precision=HIGHEST)
  return 0.5 * (k + jnp.swapaxes(k, 1, 2))


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps", "projection_iters"))
def _ascent_many(starts, labels, mu, step, *, num_classes, num_steps, projection_iters):
  return jax.vmap(lambda k0: _ascent(k0, labels, mu, step, num_classes=num_classes,
                                     num_steps=num_steps,
                                     projection_iters=projection_iters))(starts)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _objectives(kernels, labels, mu, *, num_classes):
  return jax.vmap(lambda k: kernel_objective(k, labels, num_classes=num_classes, mu=mu))(kernels)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _finish(finals, labels, *, num_classes):
  """Exactly feasible finals, their distance to YYᵀ and smallest eigenvalue."""
  finals = jax.vmap(make_feasible)(finals)
  target = collapse_target(labels, num_classes=num_classes, dtype=finals.dtype)
  dist = jax.vmap(lambda k: jnp.linalg.norm(k - target))(finals) / jnp.linalg.norm(target)
  return finals, dist, jnp.min(jax.vmap(jnp.linalg.eigvalsh)(finals))


def _thm54_run(key, labels, mu, step, *, num_classes, n, num_starts, num_steps, projection_iters,
               num_random):
  # separate jitted pieces: one fused program takes XLA several times longer to compile
  draws = _random_kernels(key, n=n, count=num_starts + num_random)
  starts = draws[:num_starts]
  finals, (history, dist_history) = _ascent_many(
      starts, labels, mu, step, num_classes=num_classes, num_steps=num_steps,
      projection_iters=projection_iters)
  finals, dist, min_eig = _finish(finals, labels, num_classes=num_classes)
  # one objective call for finals, starts and random kernels (one compilation)
  objs = _objectives(jnp.concatenate([finals, draws]), labels, mu, num_classes=num_classes)
  return (finals, history, dist_history, objs[:num_starts], objs[num_starts:2 * num_starts],
          dist, objs[2 * num_starts:], min_eig)


class Thm54Result(NamedTuple):
  """Outcome of :func:`check_theorem_5_4` (NumPy float64)."""
  mu: float
  class_sizes: np.ndarray
  objective_at_target: float
  kernels: np.ndarray            # [S, N, N] final (exactly feasible) kernels
  objectives: np.ndarray         # [S] J at those kernels
  relative_distance: np.ndarray  # [S] ||k - YY^T||_F / ||YY^T||_F
  history: np.ndarray            # [S, T] J after each ascent step (at make_feasible(k))
  distance_history: np.ndarray   # [S, T] ||k - YY^T||_F/||YY^T||_F, same points
  start_objectives: np.ndarray   # [S]
  random_objectives: np.ndarray  # [R] J of random feasible kernels
  max_excess: float              # max over finals and randoms of J - J(YY^T)
  min_eigenvalue: float          # smallest eigenvalue over final kernels
  min_entry: float               # smallest entry over final kernels


def check_theorem_5_4(labels: jax.Array, *, num_classes: int, mu: float, key: jax.Array,
                      num_starts: int = 4, num_steps: int = 600, projection_iters: int = 100,
                      step_size: float | None = None, num_random: int = 500) -> Thm54Result:
  r"""Maximises :math:`J(k)` by projected gradient ascent from random feasible starts.

  Args:
    labels: ``[N]`` integers in ``0..K-1``.
    num_classes: ``K >= 2``.
    mu: the ridge :math:`\mu > 0`.
    key: PRNG key (random starts and random feasible kernels).
    num_starts: independent ascents ``S``.
    num_steps: ascent steps ``T``.
    projection_iters: Dykstra iterations per projection.
    step_size: ascent step; default :math:`4\mu^2/n_{max}`, eight times
      :math:`1/L` for the gradient's Lipschitz bound :math:`L = 2n_{max}/\mu^2`.
    num_random: random feasible kernels ``R`` evaluated for comparison.

  Returns:
    :class:`Thm54Result`; finals are made exactly feasible by :func:`make_feasible`
    before ``J`` is evaluated.
  """
  sizes = check_classes(labels, num_classes)
  mu = positive("mu", mu, "the ridge μ of Theorem 5.4")
  for name, v in (("num_starts", num_starts), ("num_steps", num_steps),
                  ("projection_iters", projection_iters), ("num_random", num_random)):
    if int(v) < 1:
      raise ConfigError(f"{name}={v}: must be >= 1.")
  n_total = int(sizes.sum())
  step = float(step_size) if step_size is not None else 4.0 * mu ** 2 / float(sizes.max())
  positive("step_size", step, "the ascent step")
  with jax.enable_x64(True):
    out = _thm54_run(key, labels32(labels), float(mu), float(step), num_classes=num_classes,
                     n=n_total, num_starts=int(num_starts), num_steps=int(num_steps),
                     projection_iters=int(projection_iters), num_random=int(num_random))
    (finals, history, dist_history, objectives, start_obj, dist, rand_obj,
     min_eig) = (np.asarray(v) for v in out)
  bound = objective_at_target(sizes, mu=mu)
  return Thm54Result(
      mu=mu, class_sizes=sizes, objective_at_target=bound, kernels=finals,
      objectives=objectives, relative_distance=dist, history=history,
      distance_history=dist_history, start_objectives=start_obj, random_objectives=rand_obj,
      max_excess=float(max(objectives.max(), rand_obj.max()) - bound),
      min_eigenvalue=float(min_eig), min_entry=float(finals.min()))


# ---------------------------------------------------------------------------
# Proposition B.1: the parametrised (Mahalanobis) form.


def _phi(sq_dist, kind: str, bandwidth: float):
  if kind == "laplace":
    safe = jnp.where(sq_dist > 0.0, sq_dist, 1.0)
    return jnp.where(sq_dist > 0.0, jnp.exp(-jnp.sqrt(safe) / bandwidth), 1.0)
  return jnp.exp(-sq_dist / (2.0 * bandwidth ** 2))


@functools.partial(jax.jit, static_argnames=("kind", "bandwidth"))
def mahalanobis_kernel_matrix(x: jax.Array, m_factor: jax.Array, *, kind: str = "gaussian",
                              bandwidth: float = 1.0) -> jax.Array:
  r""":math:`k_M(x_i, x_j) = \phi(\|x_i - x_j\|_M)` ``[N, N]`` with :math:`M = N^\top N`.

  Distances are formed from differences (not the expanded form), so coincident
  points give exactly :math:`\phi(0) = 1` and the Laplace gradient stays finite.

  Args:
    x: ``[N, d]`` rows.
    m_factor: ``N`` ``[r, d]``; :math:`\|x-z\|_M = \|N(x-z)\|`.
    kind: ``"laplace"`` or ``"gaussian"``.
    bandwidth: ``L > 0``.
  """
  z = jnp.matmul(x, m_factor.T, precision=HIGHEST)
  diff = z[:, None, :] - z[None, :, :]
  return _phi(jnp.sum(diff * diff, axis=-1), kind, bandwidth)


def realise_collapsed_kernel(x: jax.Array, labels: jax.Array, *, num_classes: int, beta: float,
                             kind: str = "gaussian", bandwidth: float = 1.0):
  r"""Proposition B.1's construction: a Mahalanobis ``M`` with :math:`k_M \to YY^\top`.

  Target rows :math:`r_i = \beta e_{c(i)}` (one point per class, classes
  :math:`\beta\sqrt 2` apart); since ``x`` ``[N, d]`` has full row rank, :math:`R = XN^\top`
  is solved by :math:`N^\top = X^+R`, :math:`M = N^\top N`. Then :math:`k_M` is 1
  within classes and :math:`\phi(\beta\sqrt2)` across, so
  :math:`\|k_M - YY^\top\|_F = \phi(\beta\sqrt2)\sqrt{N^2 - \sum_c n_c^2}`.

  Returns:
    ``(m_factor [d, d], k_M [N, N])``.
  """
  check_classes(labels, num_classes)
  n_total, dim = x.shape
  if dim < n_total:
    raise ConfigError(
        f"x is [{n_total}, {dim}]: Proposition B.1 needs a full-rank data Gram matrix, which "
        f"requires d >= N; give at least {n_total} features.")
  return _realise(jnp.asarray(x), labels32(labels), float(beta), num_classes=num_classes, kind=kind,
                  bandwidth=float(bandwidth))


@functools.partial(jax.jit, static_argnames=("num_classes", "kind", "bandwidth"))
def _realise(x, labels, beta, *, num_classes, kind, bandwidth):
  n_total, dim = x.shape
  y = one_hot01(labels, num_classes=num_classes, dtype=x.dtype)
  r = beta * jnp.concatenate([y, jnp.zeros((n_total, dim - num_classes), x.dtype)], axis=1)
  nt = jnp.linalg.lstsq(x, r)[0]                     # [d, d]: X N^T = R
  factor = nt.T
  return factor, mahalanobis_kernel_matrix(x, factor, kind=kind, bandwidth=bandwidth)


@functools.partial(jax.jit, static_argnames=("num_classes", "kind", "bandwidth", "every"))
def _adam_chunk(f, state, x, labels, target, mu, learning_rate, *, num_classes, kind, bandwidth,
                every):
  """``every`` Adam steps (Kingma & Ba) on the factor ``f`` maximising J(k_M).

  Written out because optax's bias correction mixes int and float dtypes, which
  strict dtype promotion rejects.
  """
  b1, b2, eps = 0.9, 0.999, 1e-8

  def loss(f):
    return -kernel_objective(mahalanobis_kernel_matrix(x, f, kind=kind, bandwidth=bandwidth),
                             labels, num_classes=num_classes, mu=mu)

  def step(carry, _):
    f, (m, v, t) = carry
    g = jax.grad(loss)(f)
    t = t + 1.0
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    upd = learning_rate * (m / (1.0 - b1 ** t)) / (jnp.sqrt(v / (1.0 - b2 ** t)) + eps)
    return (f - upd, (m, v, t)), None

  (f, state), _ = jax.lax.scan(step, (f, state), None, length=every)
  km = mahalanobis_kernel_matrix(x, f, kind=kind, bandwidth=bandwidth)
  return f, state, jnp.linalg.norm(km - target) / jnp.linalg.norm(target), -loss(f)


class PropB1Result(NamedTuple):
  """Outcome of :func:`check_proposition_b1` (NumPy float64)."""
  kind: str
  bandwidth: float
  mu: float
  objective_at_target: float
  betas: np.ndarray                  # [B]
  constructive_distance: np.ndarray  # [B] ||k_M - YY^T||_F/||YY^T||_F of the construction
  constructive_distance_predicted: np.ndarray  # [B] closed form
  constructive_objective: np.ndarray  # [B]
  optimised_distance: np.ndarray     # [T/every] during optimisation over M
  optimised_objective: np.ndarray    # [T/every]
  final_distance: float
  final_objective: float
  initial_objective: float
  record_every: int                  # steps between entries of optimised_*


def check_proposition_b1(x: jax.Array, labels: jax.Array, *, num_classes: int, mu: float,
                         key: jax.Array, kind: str = "gaussian", bandwidth: float = 1.0,
                         betas: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
                         num_steps: int = 2000, learning_rate: float = 0.05,
                         every: int = 50) -> PropB1Result:
  r"""Theorem 5.4 through Mahalanobis kernels on full-rank data (Proposition B.1).

  (a) the explicit construction of :func:`realise_collapsed_kernel` for growing
  β; (b) Adam on the factor ``N`` of :math:`M = N^\top N` (start: ``N = I`` plus a
  small random perturbation) maximising :math:`J(k_M)`.

  Args:
    x: ``[N, d]`` data, ``d >= N``.
    labels: ``[N]``.
    num_classes: ``K``.
    mu: ridge μ > 0.
    key: PRNG key (start perturbation).
    kind: ``"gaussian"`` or ``"laplace"``.
    bandwidth: kernel bandwidth ``L``.
    betas: scales for the construction.
    num_steps: Adam steps.
    learning_rate: Adam learning rate.
    every: record distance/objective every this many steps.
  """
  sizes = check_classes(labels, num_classes)
  mu = positive("mu", mu, "the ridge μ")
  positive("bandwidth", bandwidth, "the kernel bandwidth L")
  if kind not in KERNELS:
    raise ConfigError(f"kind={kind!r}: use one of {KERNELS}.")
  n_total, dim = np.shape(x)
  if dim < n_total:
    raise ConfigError(
        f"x is [{n_total}, {dim}]: Proposition B.1 needs a full-rank data Gram matrix (d >= N); "
        f"give at least {n_total} features.")
  y_np = np.eye(num_classes)[np.asarray(labels)]
  target_np = y_np @ y_np.T
  tnorm = float(np.linalg.norm(target_np))
  cross = math.sqrt(n_total ** 2 - float(np.sum(sizes.astype(np.float64) ** 2)))
  dist_cross = math.sqrt(2.0) * np.asarray(betas, dtype=np.float64)
  phi_cross = (np.exp(-dist_cross / bandwidth) if kind == "laplace"
               else np.exp(-dist_cross ** 2 / (2.0 * bandwidth ** 2)))
  pred_d = phi_cross * cross / tnorm
  with jax.enable_x64(True):
    xx = jnp.asarray(np.asarray(x, dtype=np.float64))
    lab = labels32(labels)
    target = jnp.asarray(target_np)
    cons_d, cons_j = [], []
    for beta in betas:
      _, km = realise_collapsed_kernel(xx, lab, num_classes=num_classes, beta=float(beta),
                                       kind=kind, bandwidth=bandwidth)
      cons_d.append(float(np.linalg.norm(np.asarray(km) - target_np)) / tnorm)
      cons_j.append(float(kernel_objective(km, lab, num_classes=num_classes, mu=mu)))

    f0 = jnp.eye(dim, dtype=jnp.float64) + 0.01 * jax.random.normal(key, (dim, dim), jnp.float64)
    f, state = f0, (jnp.zeros_like(f0), jnp.zeros_like(f0), jnp.zeros((), jnp.float64))
    initial = float(kernel_objective(mahalanobis_kernel_matrix(xx, f0, kind=kind,
                                                               bandwidth=bandwidth),
                                     lab, num_classes=num_classes, mu=mu))
    dists, objs = [], []
    for _ in range(max(1, int(num_steps) // every)):
      f, state, d, j = _adam_chunk(f, state, xx, lab, target, float(mu), float(learning_rate),
                                   num_classes=num_classes, kind=kind, bandwidth=float(bandwidth),
                                   every=int(every))
      dists.append(float(d))
      objs.append(float(j))
  return PropB1Result(
      kind=kind, bandwidth=float(bandwidth), mu=mu,
      objective_at_target=objective_at_target(sizes, mu=mu), betas=np.asarray(betas, float),
      constructive_distance=np.asarray(cons_d), constructive_distance_predicted=pred_d,
      constructive_objective=np.asarray(cons_j), optimised_distance=np.asarray(dists),
      optimised_objective=np.asarray(objs), final_distance=dists[-1], final_objective=objs[-1],
      initial_objective=initial, record_every=int(every))


class Thm54Report(NamedTuple):
  """Outcome of :func:`theorem_5_4_report`."""
  relaxed: Thm54Result
  parametrised: dict          # kernel kind -> PropB1Result


def theorem_5_4_report(key: jax.Array, *, num_classes: int = 3, per_class: int = 4,
                       mu: float = 1.0, num_starts: int = 4, num_steps: int = 300,
                       projection_iters: int = 100, step_size: float | None = None,
                       num_random: int = 500, dim: int = 16,
                       kernels: Sequence[str] = ("gaussian", "laplace"),
                       bandwidth: float = 1.0, mahalanobis_steps: int = 2000,
                       learning_rate: float = 0.05) -> Thm54Report:
  r"""Theorem 5.4 over the relaxed set (:func:`check_theorem_5_4`) and over
  Mahalanobis kernels on full-rank data (:func:`check_proposition_b1`), balanced
  classes of ``per_class`` samples."""
  if int(per_class) < 1:
    raise ConfigError(f"per_class={per_class}: need at least one sample per class.")
  labels = np.repeat(np.arange(int(num_classes)), int(per_class))
  k_relax, k_data, k_b1 = (jax.random.fold_in(key, i) for i in range(3))
  relaxed = check_theorem_5_4(labels, num_classes=num_classes, mu=mu, key=k_relax,
                              num_starts=num_starts, num_steps=num_steps,
                              projection_iters=projection_iters, step_size=step_size,
                              num_random=num_random)
  param = {}
  if kernels:
    with jax.enable_x64(True):
      x, lab = make_full_rank_data(k_data, class_sizes=[int(per_class)] * int(num_classes),
                                   dim=dim)
    for kind in kernels:
      param[kind] = check_proposition_b1(x, lab, num_classes=num_classes, mu=mu, key=k_b1,
                                         kind=kind, bandwidth=bandwidth,
                                         num_steps=mahalanobis_steps,
                                         learning_rate=learning_rate)
  return Thm54Report(relaxed=relaxed, parametrised=param)
