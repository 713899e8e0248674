r"""Theorem 5.3: Deep RFM with linearised kernels collapses geometrically.

Runs the theorem's iteration on Gram matrices (:func:`linearised_deep_rfm`),
measures its rate and floor against closed forms (:func:`check_theorem_5_3`,
:func:`sweep_theorem_5_3`) and sets it beside Deep RFM with the real kernels
(:func:`compare_with_nonlinear_kernels`); :func:`theorem_5_3_report` bundles all
three. Conventions (rows, 0/1 targets, float64): :mod:`dnc_jax.theory.common`.

With the predictor kernel :math:`\hat k(X) = XX^\top + \hat\lambda I`, ridgeless
regression :math:`\alpha = (G + \hat\lambda I)^{-1} Y` on the Gram matrix ``G`` of layer
``l`` and the AGOP of the linear predictor :math:`f(x) = \alpha^\top X x`, whose
gradient is the same at every sample, :math:`M = \frac1N\sum_i \nabla f(x_i)\nabla
f(x_i)^\top = X^\top\alpha\alpha^\top X` (the paper's proof writes the sum but
drops its factor ``N``; we follow the proof), one layer maps

.. math::
   \tilde G_{l+1} = \kappa^{-1} X M X^\top = \kappa^{-1} G\alpha\alpha^\top G,
   \qquad G_{l+1} = \tilde G_{l+1} + \lambda_{map} I,

with the paper's rescaling :math:`\kappa = 1 - 2\hat\lambda(1+\lambda_{map}^{-1})`
in place of row normalisation. The theorem claims, for
:math:`\hat\lambda \le C\lambda_{map}(1-\epsilon)/(2(1+\lambda_{map}^{-1})n)`,

.. math::
   \|\tilde G_{l+1} - YY^\top\| \le (1-\epsilon)\|\tilde G_l - YY^\top\|
   + O(\hat\lambda^2\lambda_{map}^{-2}).

The iteration is exactly solvable near collapse. On matrices
:math:`G = \sum_c s_c n_c u_c u_c^\top + \lambda_{map} I` (``u_c`` the unit class
indicator) it maps :math:`s_c \mapsto \kappa^{-1}(1 - \hat\lambda b_c)^2` with
:math:`b_c = (s_c n_c + \lambda_{map} + \hat\lambda)^{-1}`, so the limit is
:math:`s_c^* YY^\top`-like and the **floor** is
:math:`(\sum_c (s_c^*-1)^2 n_c^2)^{1/2}`. For balanced classes
:math:`s^* = 1` (floor 0) iff :math:`\kappa = ((n+\lambda_{map})/(n+\lambda_{map}
+\hat\lambda))^2 \approx 1 - 2\hat\lambda/(n+\lambda_{map})` (``kappa="fixed_point"``);
the paper's κ leaves a floor of order :math:`2\hat\lambda(1+\lambda_{map}^{-1})
\|YY^\top\|`, i.e. first order in :math:`\hat\lambda`. The Jacobian of the
(symmetrised) map at the fixed point is diagonal in the class basis, with
eigenvalues

.. math::
   \rho_c^{\perp} = \kappa^{-1}\hat\lambda n_c(1-\hat\lambda b_c)\, b_c b_\perp,
   \qquad
   \rho_{ac} = \kappa^{-1}\hat\lambda b_a b_c
   \bigl(n_a(1-\hat\lambda b_a) + n_c(1-\hat\lambda b_c)\bigr),

:math:`b_\perp = (\lambda_{map}+\hat\lambda)^{-1}`; the asymptotic geometric rate
is their maximum, :math:`\approx \hat\lambda/(\lambda_{map}+\hat\lambda)` for
:math:`n \gg \lambda_{map}`: a function of :math:`\hat\lambda/\lambda_{map}`.
(The unsymmetrised map has an antisymmetric mode with multiplier
:math:`2n/(n+\lambda_{map}) > 1` that round-off excites; every step here is
symmetrised.)

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Section 5.1.
  El Karoui. The spectrum of kernel random matrices. Annals of Statistics 2010
  (linearisation of kernel matrices, used for the effective λ's).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError, SolveError
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import predictor as predictor_lib
from dnc_jax.theory.common import (HIGHEST, KERNELS, check_classes, cosine_gram,
                                   fit_geometric_rate, gram_nc1, labels32,
                                   make_full_rank_data, one_hot01, positive, psd_factor,
                                   symmetrise)

KAPPA_RULES = ("paper", "fixed_point")
# Steps whose change is below this multiple of machine epsilon times ||YYᵀ|| are
# round-off and are left out of rate fits.
_NOISE_EPS = 1e3


def kappa_value(lambda_hat: float, lambda_map: float, *, rule: str | float = "paper",
                class_size: float | None = None) -> float:
  r"""The rescaling κ of Theorem 5.3 (:math:`\tilde X^\top\tilde X = \kappa^{-1}X^\top M X`).

  Args:
    lambda_hat: :math:`\hat\lambda > 0`.
    lambda_map: :math:`\lambda_{map} > 0`.
    rule: ``"paper"``: :math:`1 - 2\hat\lambda(1+\lambda_{map}^{-1})`;
      ``"fixed_point"``: :math:`((n+\lambda_{map})/(n+\lambda_{map}+\hat\lambda))^2`,
      which makes :math:`YY^\top + \lambda_{map}I` an exact fixed point for balanced
      classes of size ``n``; or a number used as κ.
    class_size: ``n`` for ``"fixed_point"`` (mean class size ``N/K`` when unbalanced).

  Returns:
    κ as a float.
  """
  lh = positive("lambda_hat", lambda_hat, "λ̂ (identity weight of the linearised predictor kernel)")
  lm = positive("lambda_map", lambda_map, "λ_map (identity weight of the linearised feature map)")
  if isinstance(rule, str):
    if rule == "paper":
      kappa = 1.0 - 2.0 * lh * (1.0 + 1.0 / lm)
      if kappa <= 0.0:
        raise ConfigError(
            f"kappa = 1 - 2*lambda_hat*(1 + 1/lambda_map) = {kappa:.4g} <= 0 for lambda_hat={lh}, "
            f"lambda_map={lm}: the paper's rescaling needs lambda_hat < lambda_map/(2(lambda_map+1)) "
            f"= {lm / (2 * (lm + 1)):.4g} (Theorem 5.3 even needs kappa > 1/2); lower lambda_hat "
            "or use kappa='fixed_point'.")
      return kappa
    if rule == "fixed_point":
      if class_size is None:
        raise ConfigError("kappa rule 'fixed_point' needs class_size (n).")
      n = float(class_size)
      return ((n + lm) / (n + lm + lh)) ** 2
    raise ConfigError(f"kappa={rule!r}: use one of {KAPPA_RULES} or a positive number.")
  return positive("kappa", rule, "κ (the rescaling)")


class LinearisedIteration(NamedTuple):
  """Per-layer record of the linearised Deep RFM (layer ``l`` = 1..L)."""
  gram_tilde: jax.Array   # [L, N, N] Xt_{l+1} Xt_{l+1}^T
  gram_error: jax.Array   # [L] ||Xt_{l+1} Xt_{l+1}^T - YY^T||_F
  step_change: jax.Array  # [L-1] ||Xt_{l+2}Xt_{l+2}^T - Xt_{l+1}Xt_{l+1}^T||_F
  nc1: jax.Array          # [L] NC1 of Xt_{l+1}


@functools.partial(jax.jit, static_argnames=("num_classes", "num_layers"))
def _linearised_scan(gram, labels, lambda_hat, lambda_map, kappa, *, num_classes, num_layers):
  y = one_hot01(labels, num_classes=num_classes, dtype=gram.dtype)
  target = jnp.matmul(y, y.T, precision=HIGHEST)
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)

  def layer(g, _):
    chol = jax.scipy.linalg.cho_factor(g + lambda_hat * eye, lower=True)
    alpha = jax.scipy.linalg.cho_solve(chol, y)              # [N, K]
    g_alpha = jnp.matmul(g, alpha, precision=HIGHEST)          # [N, K]
    g_tilde = symmetrise(jnp.matmul(g_alpha, g_alpha.T, precision=HIGHEST) / kappa)
    out = (g_tilde, jnp.linalg.norm(g_tilde - target),
           gram_nc1(g_tilde, labels, num_classes=num_classes))
    return g_tilde + lambda_map * eye, out

  _, (tildes, errors, nc1s) = jax.lax.scan(layer, symmetrise(gram), None, length=num_layers)
  changes = jnp.sqrt(jnp.sum((tildes[1:] - tildes[:-1]) ** 2, axis=(1, 2)))
  return LinearisedIteration(tildes, errors, changes, nc1s)


def linearised_deep_rfm(gram: jax.Array, labels: jax.Array, *, num_classes: int,
                        lambda_hat: float, lambda_map: float, kappa: float,
                        num_layers: int) -> LinearisedIteration:
  r"""Runs the modified Deep RFM of Theorem 5.3 on Gram matrices.

  Layer ``l`` (``G_1 = gram``):

  .. math::
     \alpha = (G_l + \hat\lambda I)^{-1}Y,\quad
     \tilde G_{l+1} = \kappa^{-1} G_l\alpha\alpha^\top G_l,\quad
     G_{l+1} = \tilde G_{l+1} + \lambda_{map} I.

  :math:`G\alpha\alpha^\top G = X M X^\top` with ``M`` the AGOP (mean over samples)
  of the ridgeless predictor of the kernel :math:`XX^\top + \hat\lambda I`. Every
  step is symmetrised (round-off otherwise feeds an unstable antisymmetric mode).

  Args:
    gram: ``[N, N]`` PSD Gram matrix ``x xᵀ`` of the first layer's rows.
    labels: ``[N]`` integers in ``0..K-1``.
    num_classes: ``K >= 2``.
    lambda_hat: :math:`\hat\lambda > 0`.
    lambda_map: :math:`\lambda_{map} > 0`.
    kappa: the rescaling κ (see :func:`kappa_value`).
    num_layers: ``L >= 2``.

  Returns:
    :class:`LinearisedIteration` with ``[L]`` (``[L-1]`` for step changes) records.
  """
  check_classes(labels, num_classes)
  positive("lambda_hat", lambda_hat, "λ̂ (identity weight of the linearised predictor kernel)")
  positive("lambda_map", lambda_map, "λ_map (identity weight of the linearised feature map)")
  positive("kappa", kappa, "κ (the rescaling)")
  if int(num_layers) < 2:
    raise ConfigError(f"num_layers={num_layers}: need at least 2 layers to measure a rate.")
  gram = jnp.asarray(gram)
  return _linearised_scan(gram, labels32(labels), float(lambda_hat), float(lambda_map),
                          float(kappa),
                          num_classes=int(num_classes), num_layers=int(num_layers))


def fixed_point_scales(class_sizes, *, lambda_hat: float, lambda_map: float, kappa: float,
                       iters: int = 500) -> np.ndarray:
  r"""Per-class scales :math:`s_c^*` of the limit :math:`\sum_c s_c^* n_c u_cu_c^\top`.

  Solves :math:`s = \kappa^{-1}(1 - \hat\lambda/(s n_c + \lambda_{map} + \hat\lambda))^2`
  by fixed-point iteration (a contraction: the derivative is
  :math:`O(\hat\lambda n_c b_c^2)`), in float64 NumPy.

  Returns:
    ``[K]`` scales; 1 means exact collapse onto :math:`YY^\top` for that class.
  """
  n = np.asarray(class_sizes, dtype=np.float64)
  s = np.ones_like(n)
  for _ in range(iters):
    s = (1.0 - lambda_hat / (s * n + lambda_map + lambda_hat)) ** 2 / kappa
  return s


def local_rate(class_sizes, *, lambda_hat: float, lambda_map: float, kappa: float) -> float:
  r"""Predicted asymptotic rate: spectral radius of the layer map's Jacobian.

  At the fixed point :math:`G^* = \sum_c s_c^* n_c u_cu_c^\top + \lambda_{map}I` the
  Jacobian (on symmetric perturbations) is diagonal in the class basis with
  eigenvalues :math:`\rho_c^\perp` (class ``c`` ↔ complement) and
  :math:`\rho_{ac}` (within the class span); see the module docstring.

  Returns:
    the largest eigenvalue.
  """
  n = np.asarray(class_sizes, dtype=np.float64)
  s = fixed_point_scales(n, lambda_hat=lambda_hat, lambda_map=lambda_map, kappa=kappa)
  b = 1.0 / (s * n + lambda_map + lambda_hat)
  b_perp = 1.0 / (lambda_map + lambda_hat)
  a = n * (1.0 - lambda_hat * b)
  rates = [lambda_hat * b[:, None] * b[None, :] * (a[:, None] + a[None, :]) / kappa]
  if n.sum() > n.size:  # the complement of the class span is non-empty
    rates.append(lambda_hat * a * b * b_perp / kappa)
  return float(max(np.max(r) for r in rates))


def bound_rate(class_sizes, *, lambda_hat: float, lambda_map: float, kappa: float) -> float:
  r"""The proof's contraction factor :math:`1-\epsilon =
  2\hat\lambda n(1+\lambda_{map}^{-1})/(\kappa\lambda_{map})` with ``n`` the
  largest class and the unspecified constant ``C = 1``."""
  n = float(np.max(class_sizes))
  return 2.0 * lambda_hat * n * (1.0 + 1.0 / lambda_map) / (kappa * lambda_map)


class Thm53Result(NamedTuple):
  """Outcome of :func:`check_theorem_5_3` (NumPy float64; see :data:`dnc_jax.theory.report.CONVENTIONS`)."""
  lambda_hat: float
  lambda_map: float
  kappa: float
  kappa_rule: str
  class_sizes: np.ndarray       # [K]
  min_eig_data: float           # smallest eigenvalue of the data Gram (Assumption 5.2)
  gram_error: np.ndarray        # [L]
  relative_gram_error: np.ndarray  # [L]
  step_change: np.ndarray       # [L-1]
  nc1: np.ndarray               # [L]
  fitted_rate: float
  fit_points: int
  local_rate: float
  bound_rate: float
  condition_holds: bool         # bound_rate < 1 and kappa > 1/2 (C = 1)
  floor: float
  floor_predicted: float
  floor_order: float
  fixed_point_scales: np.ndarray  # [K]
  last_gram_tilde: np.ndarray   # [N, N]


def check_theorem_5_3(x: jax.Array, labels: jax.Array, *, num_classes: int, lambda_hat: float,
                      lambda_map: float, num_layers: int = 30, kappa: str | float = "paper",
                      fit_window: int = 8) -> Thm53Result:
  r"""Runs Theorem 5.3's iteration on data ``x`` ``[N, d]`` and measures rate and floor.

  Args:
    x: ``[N, d]`` rows with ``d >= N`` and a full-rank Gram matrix
      (Assumptions 5.1–5.2); typically from :func:`make_full_rank_data`.
    labels: ``[N]`` integers in ``0..K-1``.
    num_classes: ``K >= 2``.
    lambda_hat: :math:`\hat\lambda > 0`.
    lambda_map: :math:`\lambda_{map} > 0`.
    num_layers: ``L``.
    kappa: ``"paper"``, ``"fixed_point"`` or a number (:func:`kappa_value`).
    fit_window: trailing layers used to fit the rate.

  Returns:
    :class:`Thm53Result`.
  """
  sizes = check_classes(labels, num_classes, min_per_class=2)
  n_total, dim = np.shape(x)
  if dim < n_total:
    raise ConfigError(
        f"x is [{n_total}, {dim}]: Theorem 5.3 assumes d >= n (Assumption 5.1, high-dimensional "
        f"data); give at least {n_total} features or fewer samples.")
  rule = kappa if isinstance(kappa, str) else "value"
  kap = kappa_value(lambda_hat, lambda_map, rule=kappa, class_size=n_total / num_classes)
  xx = np.asarray(x, dtype=np.float64)
  gram = xx @ xx.T
  min_eig = float(np.linalg.eigvalsh(gram)[0])
  if not min_eig > 1e-10 * float(np.trace(gram)) / n_total:
    raise ConfigError(
        f"the data Gram matrix has smallest eigenvalue {min_eig:.3g}: Assumption 5.2 (full-rank "
        "data) is violated; add noise or remove duplicate samples.")
  with jax.enable_x64(True):
    it = linearised_deep_rfm(jnp.asarray(gram), jnp.asarray(labels), num_classes=num_classes,
                             lambda_hat=lambda_hat, lambda_map=lambda_map, kappa=kap,
                             num_layers=num_layers)
    err = np.asarray(it.gram_error)
    change = np.asarray(it.step_change)
    nc1 = np.asarray(it.nc1)
    last = np.asarray(it.gram_tilde[-1])
  target_norm = float(np.sqrt(np.sum(sizes.astype(np.float64) ** 2)))
  rate, points = fit_geometric_rate(change, window=fit_window,
                                    noise_floor=_NOISE_EPS * np.finfo(np.float64).eps * target_norm)
  s = fixed_point_scales(sizes, lambda_hat=lambda_hat, lambda_map=lambda_map, kappa=kap)
  b_rate = bound_rate(sizes, lambda_hat=lambda_hat, lambda_map=lambda_map, kappa=kap)
  return Thm53Result(
      lambda_hat=float(lambda_hat), lambda_map=float(lambda_map), kappa=kap, kappa_rule=rule,
      class_sizes=sizes, min_eig_data=min_eig, gram_error=err,
      relative_gram_error=err / target_norm, step_change=change, nc1=nc1,
      fitted_rate=rate, fit_points=points,
      local_rate=local_rate(sizes, lambda_hat=lambda_hat, lambda_map=lambda_map, kappa=kap),
      bound_rate=b_rate, condition_holds=bool(b_rate < 1.0 and kap > 0.5),
      floor=float(err[-1]),
      floor_predicted=float(np.sqrt(np.sum(((s - 1.0) * sizes) ** 2))),
      floor_order=float((lambda_hat / lambda_map) ** 2),
      fixed_point_scales=s, last_gram_tilde=last)


class Thm53Sweep(NamedTuple):
  """Rates and floors over ``[rules, lambda_maps, ratios]`` (NaN where κ <= 0)."""
  kappa_rules: tuple
  lambda_maps: np.ndarray     # [M]
  ratios: np.ndarray          # [Q] lambda_hat / lambda_map
  kappa: np.ndarray           # [R, M, Q]
  fitted_rate: np.ndarray     # [R, M, Q]
  local_rate: np.ndarray      # [R, M, Q]
  bound_rate: np.ndarray      # [R, M, Q]
  condition_holds: np.ndarray  # [R, M, Q] bool
  floor: np.ndarray           # [R, M, Q]
  floor_predicted: np.ndarray  # [R, M, Q]
  gram_error: np.ndarray      # [R, M, Q, L]


def sweep_theorem_5_3(x: jax.Array, labels: jax.Array, *, num_classes: int,
                      ratios: Sequence[float], lambda_maps: Sequence[float],
                      kappa_rules: Sequence[str] = KAPPA_RULES,
                      num_layers: int = 30) -> Thm53Sweep:
  r"""Theorem 5.3 over a grid of :math:`\hat\lambda/\lambda_{map}` and :math:`\lambda_{map}`.

  Args:
    x: ``[N, d]`` data (``d >= N``).
    labels: ``[N]``.
    num_classes: ``K``.
    ratios: ``[Q]`` values of :math:`\hat\lambda/\lambda_{map}` (> 0).
    lambda_maps: ``[M]`` values of :math:`\lambda_{map}` (> 0).
    kappa_rules: subset of ``KAPPA_RULES``; cells where the paper's κ is <= 0 are NaN.
    num_layers: ``L``.

  Returns:
    :class:`Thm53Sweep`.
  """
  rules = tuple(kappa_rules)
  for r in rules:
    if r not in KAPPA_RULES:
      raise ConfigError(f"kappa rule {r!r}: use one of {KAPPA_RULES}.")
  ratios = np.asarray(ratios, dtype=np.float64)
  lms = np.asarray(lambda_maps, dtype=np.float64)
  for v in ratios:
    positive("ratio", v, "λ̂/λ_map")
  for v in lms:
    positive("lambda_map", v, "λ_map")
  shape = (len(rules), lms.size, ratios.size)
  out = {k: np.full(shape, np.nan) for k in ("kappa", "fitted_rate", "local_rate", "bound_rate",
                                             "floor", "floor_predicted")}
  cond = np.zeros(shape, dtype=bool)
  errors = np.full(shape + (num_layers,), np.nan)
  for a, rule in enumerate(rules):
    for b, lm in enumerate(lms):
      for c, ratio in enumerate(ratios):
        try:
          kappa_value(ratio * lm, lm, rule=rule, class_size=1.0)
        except ConfigError:
          continue  # the paper's kappa is <= 0 here: the cell stays NaN
        res = check_theorem_5_3(x, labels, num_classes=num_classes, lambda_hat=ratio * lm,
                                lambda_map=lm, num_layers=num_layers, kappa=rule)
        for k in out:
          out[k][a, b, c] = getattr(res, k)
        cond[a, b, c] = res.condition_holds
        errors[a, b, c] = res.gram_error
  return Thm53Sweep(kappa_rules=rules, lambda_maps=lms, ratios=ratios, condition_holds=cond,
                    gram_error=errors, **out)


# ---------------------------------------------------------------------------
# The real non-linear kernels beside their linearisation.


def kernel_linearisation(kind: str, *, bandwidth: float = 2.0) -> tuple[float, float, float]:
  r"""Coefficients ``(c0, c1, c2)`` of :math:`k \approx c_0 11^\top + c_1 XX^\top + c_2 I`.

  For unit rows, a kernel that depends on :math:`\rho = x\cdot z` is expanded at
  :math:`\rho = 0` (El Karoui's high-dimensional linearisation):
  :math:`c_0 = k(0)`, :math:`c_1 = k'(0)`, :math:`c_2 = k(1) - c_0 - c_1`, so the
  diagonal is exact. The effective identity weight relative to the linear part
  is :math:`c_2/c_1` (:math:`\hat\lambda` for a predictor, :math:`\lambda_{map}` for
  a feature map).

  Args:
    kind: ``"laplace"`` (:math:`e^{-\sqrt{2-2\rho}/L}`), ``"gaussian"``
      (:math:`e^{-(1-\rho)/L^2}`) or ``"relu"`` (arc-cosine kernel of ReLU features
      with ``W ~ N(0, 2/D)``: :math:`(\sqrt{1-\rho^2} + (\pi-\arccos\rho)\rho)/\pi`).
    bandwidth: ``L`` for the Laplace/Gaussian kernels.

  Returns:
    ``(c0, c1, c2)``.
  """
  if kind == "relu":
    return 1.0 / math.pi, 0.5, 0.5 - 1.0 / math.pi
  L = positive("bandwidth", bandwidth, "the kernel bandwidth L")
  if kind == "laplace":
    c0 = math.exp(-math.sqrt(2.0) / L)
    c1 = c0 / (math.sqrt(2.0) * L)
  elif kind == "gaussian":
    c0 = math.exp(-1.0 / L ** 2)
    c1 = c0 / L ** 2
  else:
    raise ConfigError(f"kernel {kind!r}: use 'laplace', 'gaussian' or 'relu'.")
  return c0, c1, 1.0 - c0 - c1


def _sq_distances(x):
  """Squared distances ``[N, N]`` from explicit differences (exact zero diagonal)."""
  diff = x[:, None, :] - x[None, :, :]
  return jnp.sum(diff * diff, axis=-1)


@functools.partial(jax.jit, static_argnames=("width", "bandwidth", "num_classes", "kind"))
def _nonlinear_layer(x, labels, key, ridge, *, width, bandwidth, num_classes, kind):
  """One Deep RFM layer on rows ``x`` ``[N, p]``: returns (next rows [N, N], Xt Gram, residuals)."""
  y = one_hot01(labels, num_classes=num_classes, dtype=x.dtype)
  n = x.shape[0]
  eye = jnp.eye(n, dtype=x.dtype)
  x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
  sq = _sq_distances(x)
  kmat = kernels_lib.kernel_from_sq(kind)(sq, bandwidth)
  alpha = jnp.linalg.solve(kmat + ridge * eye, y)                       # [N, K]
  # The predictor's AGOP, self terms masked by index (Algorithm 1, step 4).
  agop = predictor_lib.closed_form_agop_sum(x, alpha, kernel=kind, bandwidth=bandwidth,
                                            batch_size=n, sq_distances=sq) / n   # [p, p]
  wv, vv = jnp.linalg.eigh(symmetrise(agop))
  sqrt_m = jnp.matmul(vv * jnp.sqrt(jnp.clip(wv, 0.0))[None, :], vv.T, precision=HIGHEST)
  xt = jnp.matmul(x, sqrt_m, precision=HIGHEST)                         # X M^{1/2}
  g_tilde = symmetrise(jnp.matmul(xt, xt.T, precision=HIGHEST))
  c0, c1, c2 = kernel_linearisation(kind, bandwidth=bandwidth)
  gx = jnp.matmul(x, x.T, precision=HIGHEST)
  lin = c0 + c1 * gx + c2 * eye
  res_pred = jnp.linalg.norm(kmat - lin) / jnp.linalg.norm(kmat)
  xtn = xt / jnp.linalg.norm(xt, axis=1, keepdims=True)
  wmat = jax.random.normal(key, (width, xt.shape[1]), x.dtype) * jnp.sqrt(2.0 / width)
  phi = jax.nn.relu(jnp.matmul(xtn, wmat.T, precision=HIGHEST))         # [N, D]
  g_next = symmetrise(jnp.matmul(phi, phi.T, precision=HIGHEST))
  a0, a1, a2 = kernel_linearisation("relu")
  lin_f = a0 + a1 * cosine_gram(g_tilde) + a2 * eye
  res_feat = jnp.linalg.norm(g_next - lin_f) / jnp.linalg.norm(g_next)
  nc1 = gram_nc1(g_tilde, labels, num_classes=num_classes)
  return psd_factor(g_next), g_tilde, res_pred, res_feat, nc1


@functools.partial(jax.jit, static_argnames=("num_classes", "num_layers"))
def _linearised_kernel_scan(gram, labels, pred_coef, feat_coef, *, num_classes, num_layers):
  y = one_hot01(labels, num_classes=num_classes, dtype=gram.dtype)
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)

  def layer(g, _):
    c = cosine_gram(g)
    kmat = pred_coef[0] + pred_coef[1] * c + pred_coef[2] * eye
    alpha = jnp.linalg.solve(kmat, y)
    ca = jnp.matmul(c, alpha, precision=HIGHEST)
    g_tilde = symmetrise(pred_coef[1] ** 2 * jnp.matmul(ca, ca.T, precision=HIGHEST))
    g_next = feat_coef[0] + feat_coef[1] * cosine_gram(g_tilde) + feat_coef[2] * eye
    return g_next, gram_nc1(g_tilde, labels, num_classes=num_classes)

  _, nc1s = jax.lax.scan(layer, gram, None, length=num_layers)
  return nc1s


def _nonlinear_run(rows, labels, key, ridge, *, num_layers, width, bandwidth, num_classes, kind):
  """The non-linear iteration from rows ``[N, N]`` (inside ``jax.enable_x64``).

  Returns:
    NumPy ``[L]`` arrays: NC1 of ``Xt_{l+1}``, predictor and feature residuals.
  """
  nc1s, res_p, res_f = [], [], []
  for layer in range(num_layers):
    rows, _, rp, rf, nc1 = _nonlinear_layer(rows, labels, jax.random.fold_in(key, layer), ridge,
                                            width=width, bandwidth=bandwidth,
                                            num_classes=num_classes, kind=kind)
    nc1s.append(float(nc1))
    res_p.append(float(rp))
    res_f.append(float(rf))
  nc1s = np.asarray(nc1s)
  if not np.all(np.isfinite(nc1s)):
    raise SolveError(
        "the ridgeless kernel solve broke down (non-finite NC1); pass a small ridge, e.g. 1e-8.")
  return nc1s, np.asarray(res_p), np.asarray(res_f)


class NonlinearComparison(NamedTuple):
  """NC1 of ``Xt_{l+1}`` per layer (``[L]``) for the real kernels and their linearisations."""
  kernel: str
  bandwidth: float
  width: int
  ridge: float
  predictor_coefficients: tuple   # (c0, c1, c2) of the predictor kernel
  feature_coefficients: tuple     # (a0, a1, a2) of the ReLU feature kernel
  lambda_hat_effective: float     # c2 / c1
  lambda_map_effective: float     # a2 / a1
  nc1_nonlinear: np.ndarray       # [L] Laplace/Gaussian KRR + ReLU random features
  nc1_linearised_kernels: np.ndarray  # [L] same pipeline, kernels replaced by c0 + c1 G + c2 I
  nc1_theorem: np.ndarray         # [L] Theorem 5.3 iteration with the effective lambdas
  predictor_residual: np.ndarray  # [L] ||k(X) - (c0 + c1 XX^T + c2 I)||_F / ||k(X)||_F
  feature_residual: np.ndarray    # [L] same for the ReLU feature Gram
  rate_nonlinear: float
  rate_linearised_kernels: float
  rate_theorem: float


def _check_comparison(*, kernel: str, bandwidth: float, width: int, ridge: float) -> None:
  if kernel not in KERNELS:
    raise ConfigError(f"kernel={kernel!r}: use one of {KERNELS}.")
  positive("bandwidth", bandwidth, "the kernel bandwidth L")
  if int(width) < 1:
    raise ConfigError(f"width={width}: need at least one random feature.")
  if float(ridge) < 0.0:
    raise ConfigError(f"ridge={ridge}: must be >= 0.")


def compare_with_nonlinear_kernels(x: jax.Array, labels: jax.Array, *, num_classes: int,
                                   key: jax.Array, num_layers: int = 10,
                                   kernel: str = "laplace", bandwidth: float = 2.0,
                                   width: int = 1024, ridge: float = 0.0) -> NonlinearComparison:
  r"""Theorem 5.3's iteration with the real kernels next to its linearisations.

  Three runs on the same data, recording NC1 of :math:`\tilde X_{l+1}` per layer:

  1. *non-linear*: rows normalised, ridgeless KRR with the Laplace (or Gaussian)
     kernel, AGOP ``M`` of the predictor (mean over samples; the Laplace self term
     is masked by index), :math:`\tilde X = X M^{1/2}`, then ReLU random features
     ``ReLU(x̃ Wᵀ)``, ``W`` ``[D, p]`` i.i.d. ``N(0, 2/D)`` (rows first normalised;
     ReLU is positively homogeneous, so this only rescales rows that the next
     layer normalises);
  2. *linearised kernels*: the same pipeline with both kernels replaced by
     :func:`kernel_linearisation` (:math:`c_0 11^\top + c_1 G + c_2 I`);
  3. *theorem*: :func:`linearised_deep_rfm` with
     :math:`\hat\lambda = c_2/c_1`, :math:`\lambda_{map} = a_2/a_1` and
     ``kappa="fixed_point"``.

  Every layer works on an ``[N, N]`` factor of the Gram matrix (of the data, then
  of the features); all kernels involved are rotation invariant, so this changes
  nothing but the cost.

  Args:
    x: ``[N, d]`` data.
    labels: ``[N]``.
    num_classes: ``K``.
    key: PRNG key for the random features.
    num_layers: ``L``.
    kernel: ``"laplace"`` or ``"gaussian"`` predictor kernel.
    bandwidth: its bandwidth ``L > 0``.
    width: ``D`` random ReLU features per layer.
    ridge: ridge of the KRR solve (0 = ridgeless, the theorem's setting).

  Returns:
    :class:`NonlinearComparison`.
  """
  sizes = check_classes(labels, num_classes, min_per_class=2)
  _check_comparison(kernel=kernel, bandwidth=bandwidth, width=width, ridge=ridge)
  pred = kernel_linearisation(kernel, bandwidth=bandwidth)
  feat = kernel_linearisation("relu")
  lh, lm = pred[2] / pred[1], feat[2] / feat[1]
  n_total = int(sizes.sum())
  xn = np.asarray(x, dtype=np.float64)
  xn = xn / np.linalg.norm(xn, axis=1, keepdims=True)
  gram = xn @ xn.T
  w, v = np.linalg.eigh(gram)
  # an [N, N] factor of the Gram matrix: the same distances, so the same Deep RFM
  rows0 = v * np.sqrt(np.clip(w, 0.0, None))[None, :]
  with jax.enable_x64(True):
    lab = labels32(labels)
    nc1_nl, res_p, res_f = _nonlinear_run(
        jnp.asarray(rows0), lab, key, float(ridge), num_layers=num_layers, width=int(width),
        bandwidth=float(bandwidth), num_classes=num_classes, kind=kernel)
    gram = jnp.asarray(gram)
    nc1_lin = np.asarray(_linearised_kernel_scan(
        gram, lab, jnp.asarray(pred), jnp.asarray(feat), num_classes=num_classes,
        num_layers=num_layers))
    kap = kappa_value(lh, lm, rule="fixed_point", class_size=n_total / num_classes)
    nc1_th = np.asarray(linearised_deep_rfm(gram, lab, num_classes=num_classes, lambda_hat=lh,
                                            lambda_map=lm, kappa=kap,
                                            num_layers=num_layers).nc1)

  def rate(v):
    return fit_geometric_rate(v, skip_first=1, window=num_layers,
                              noise_floor=1e-13)[0]

  return NonlinearComparison(
      kernel=kernel, bandwidth=float(bandwidth), width=int(width), ridge=float(ridge),
      predictor_coefficients=pred, feature_coefficients=feat,
      lambda_hat_effective=lh, lambda_map_effective=lm,
      nc1_nonlinear=nc1_nl, nc1_linearised_kernels=nc1_lin, nc1_theorem=nc1_th,
      predictor_residual=res_p, feature_residual=res_f,
      rate_nonlinear=rate(nc1_nl), rate_linearised_kernels=rate(nc1_lin),
      rate_theorem=rate(nc1_th))


class Thm53Report(NamedTuple):
  """Outcome of :func:`theorem_5_3_report`."""
  runs: dict                  # name -> Thm53Result ("balanced/paper", ...)
  sweep: Thm53Sweep           # on the balanced data
  comparison: NonlinearComparison  # on the balanced data


def theorem_5_3_report(key: jax.Array, *, class_sizes: Sequence[int] = (20, 20, 20),
                       unbalanced_sizes: Sequence[int] | None = (10, 20, 30), dim: int = 120,
                       noise: float = 1.0, lambda_hat: float = 0.01, lambda_map: float = 1.0,
                       num_layers: int = 30,
                       ratios: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                       lambda_maps: Sequence[float] = (0.5, 1.0, 2.0),
                       compare_layers: int = 10, kernel: str = "laplace",
                       bandwidth: float = 2.0, width: int = 1024,
                       ridge: float = 0.0) -> Thm53Report:
  r"""Theorem 5.3 end to end: single runs (both κ rules, balanced and unbalanced
  classes), the :math:`\hat\lambda/\lambda_{map}` sweep and the non-linear comparison.

  Data come from :func:`make_full_rank_data` (``dim >= N``); see
  :func:`check_theorem_5_3`, :func:`sweep_theorem_5_3` and
  :func:`compare_with_nonlinear_kernels` for the arguments.
  """
  k_bal, k_unb, k_cmp = (jax.random.fold_in(key, i) for i in range(3))
  datasets = {}
  with jax.enable_x64(True):
    datasets["balanced"] = make_full_rank_data(k_bal, class_sizes=class_sizes, dim=dim,
                                               noise=noise)
    if unbalanced_sizes:
      datasets["unbalanced"] = make_full_rank_data(k_unb, class_sizes=unbalanced_sizes,
                                                   dim=dim, noise=noise)
  runs = {}
  for name, (x, lab) in datasets.items():
    k = len(class_sizes) if name == "balanced" else len(unbalanced_sizes)
    for rule in KAPPA_RULES:
      runs[f"{name}/{rule}"] = check_theorem_5_3(
          x, lab, num_classes=k, lambda_hat=lambda_hat, lambda_map=lambda_map,
          num_layers=num_layers, kappa=rule)
  x, lab = datasets["balanced"]
  sweep = sweep_theorem_5_3(x, lab, num_classes=len(class_sizes), ratios=ratios,
                            lambda_maps=lambda_maps, num_layers=num_layers)
  comparison = compare_with_nonlinear_kernels(
      x, lab, num_classes=len(class_sizes), key=k_cmp, num_layers=compare_layers,
      kernel=kernel, bandwidth=bandwidth, width=width, ridge=ridge)
  return Thm53Report(runs=runs, sweep=sweep, comparison=comparison)
