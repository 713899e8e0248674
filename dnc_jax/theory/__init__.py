r"""Executable versions of the paper's theory: Theorem 5.3, Lemma C.2, Theorem 5.4
(with Proposition B.1) and Proposition A.1.

Conventions. Data are **rows**: ``x`` is ``[N, d]`` and its Gram matrix is
``x xᵀ`` ``[N, N]`` (the paper stacks columns and writes :math:`X^\top X`; both
are the same ``N × N`` matrix of inner products between samples). Labels are
integers ``[N]`` in ``0..K-1``. Unlike the rest of the package, the theory uses
**0/1 one-hot** targets ``Y`` ``[N, K]`` (the paper's Section 5), so the collapsed
Gram matrix is

.. math::
   Y Y^\top = \text{(paper) } Y^\top Y, \qquad
   (YY^\top)_{ij} = 1 \text{ if } i, j \text{ share a class, else } 0,

a block of ones per class (``I_K ⊗ 1 1ᵀ`` when the classes are contiguous and
balanced). ``n_c`` is the size of class ``c``; ``n`` the size of every class
when they are balanced. Norms are Frobenius unless said otherwise. Everything
here is meant to run in float64: the ``*_report`` and ``check_*`` functions
enable ``jax_enable_x64`` themselves; call the lower-level functions inside
``with jax.enable_x64(True):`` to get the same accuracy.

**Theorem 5.3 (linearised Deep RFM).** With the predictor kernel
:math:`\hat k(X) = XX^\top + \hat\lambda I`, ridgeless regression
:math:`\alpha = (G + \hat\lambda I)^{-1} Y` on the Gram matrix ``G`` of layer
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

**Lemma C.2.** :math:`A^* = YY^\top + \lambda_{map} I` has inverse
:math:`\lambda_{map}^{-1}I - \lambda_{map}^{-1}(\lambda_{map}+n)^{-1} YY^\top`
(balanced); in general :math:`\lambda_{map}^{-1}I - \sum_c
\lambda_{map}^{-1}(\lambda_{map}+n_c)^{-1} y_c y_c^\top`.

**Theorem 5.4.** Over PSD, entrywise non-negative, unit-diagonal ``k`` ``[N, N]``,

.. math::
   J(k) = \sum_c Y_c^\top (k + \mu I)^{-1} k\, Y_c

is maximised uniquely by :math:`k^* = YY^\top`, with value
:math:`\sum_c n_c^2/(n_c+\mu)` (:math:`K n^2/(n+\mu)` balanced). ``J`` is concave
(:math:`J = \mathrm{tr}(YY^\top) - \mu\,\mathrm{tr}((k+\mu I)^{-1}YY^\top)`), so
projected gradient ascent (projection by Dykstra's algorithm) finds it.
**Proposition B.1**: on full-rank data (``N ≤ d``) the Mahalanobis kernels
:math:`k_M(x, z) = \phi(\|x-z\|_M)` reach the same supremum.

**Proposition A.1.** For unit ``x, y`` at angle θ and ``W`` ``[D, d]`` with
i.i.d. :math:`N(0, 2/D)` entries,
:math:`E[\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)] = (\sin\theta + (\pi-\theta)\cos\theta)/\pi`
and :math:`\mathrm{Var} = \frac{4}{D}\bigl(\frac{J_2(\theta)}{2\pi}
- \frac{J_1(\theta)^2}{4\pi^2}\bigr)`, :math:`J_1 = \sin\theta+(\pi-\theta)\cos\theta`,
:math:`J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1+2\cos^2\theta)`.

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Section 5 and Appendices
  A–C.
  Cho, Saul. Kernel methods for deep learning. NeurIPS 2009 (arc-cosine
  kernels, Proposition A.1).
  El Karoui. The spectrum of kernel random matrices. Annals of Statistics 2010
  (linearisation of kernel matrices, used for the effective λ's).
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

from dnc_jax.errors import ConfigError, SolveError

HIGHEST = jax.lax.Precision.HIGHEST
KAPPA_RULES = ("paper", "fixed_point")
KERNELS = ("laplace", "gaussian")
# Steps whose change is below this multiple of machine epsilon times ||YYᵀ|| are
# round-off and are left out of rate fits.
_NOISE_EPS = 1e3

CONVENTIONS = {
    "gram_error": "||Xt_{l+1} Xt_{l+1}^T - Y Y^T||_F per layer l (rows are samples; Y one-hot 0/1 "
                  "[N, K], so YY^T is the block of ones; the paper's ||Xt^T Xt - Y^T Y||)",
    "relative_gram_error": "gram_error / ||Y Y^T||_F",
    "step_change": "||Xt_{l+2} Xt_{l+2}^T - Xt_{l+1} Xt_{l+1}^T||_F between consecutive layers",
    "fitted_rate": "exp(slope) of a least-squares line through log(step_change) over the last "
                   "layers above round-off (first layer left out): measured geometric rate",
    "local_rate": "spectral radius of the Jacobian of the symmetrised layer map at its fixed point "
                  "(closed form): the predicted asymptotic rate",
    "bound_rate": "the proof's contraction factor 1-eps = 2 lambda_hat n_max (1 + 1/lambda_map) / "
                  "(kappa lambda_map) (constant C = 1)",
    "floor": "gram_error at the last layer",
    "floor_predicted": "sqrt(sum_c (s_c - 1)^2 n_c^2), s_c the fixed-point scale of class c",
    "floor_order": "(lambda_hat / lambda_map)^2, the theorem's O(.) floor without its constant",
    "kappa": "rescaling: Xt^T Xt = kappa^-1 X^T M X; 'paper' = 1 - 2 lambda_hat (1 + 1/lambda_map), "
             "'fixed_point' = ((n + lambda_map)/(n + lambda_map + lambda_hat))^2 with n = N/K",
    "nc1": "tr(Sigma_W)/tr(Sigma_B) from the Gram matrix, global mean = sample mean (paper)",
    "lemma_c2_relative_error": "||closed form - inv(A*)||_F / ||inv(A*)||_F, A* = YY^T + lambda_map I",
    "objective": "J(k) = sum_c Y_c^T (k + mu I)^-1 k Y_c, Y_c the 0/1 indicator of class c",
    "objective_at_target": "J(YY^T) = sum_c n_c^2/(n_c + mu) (= K n^2/(n + mu) balanced)",
    "relative_distance_to_target": "||k - YY^T||_F / ||YY^T||_F",
    "mc_mean": "mean over draws of ReLU(Wx).ReLU(Wy), W [D, d] i.i.d. N(0, 2/D), unit x, y",
    "expected": "(sin(theta) + (pi - theta) cos(theta))/pi",
    "z_score": "(mc_mean - expected) / (sample std / sqrt(draws))",
    "predicted_variance": "(4/D) (J2/(2 pi) - J1^2/(4 pi^2)), per draw",
}


# ---------------------------------------------------------------------------
# Shared helpers.


def _check_classes(labels, num_classes: int, *, min_per_class: int = 1) -> np.ndarray:
  """Validates labels; returns class sizes ``[K]`` as NumPy ints."""
  if int(num_classes) < 2:
    raise ConfigError(
        f"num_classes={num_classes}: collapse needs K >= 2 classes (with one class every "
        "statement is trivial); pass at least two classes.")
  lab = np.asarray(labels)
  if lab.ndim != 1 or lab.size == 0:
    raise ConfigError(f"labels must be a non-empty [N] integer array, got shape {lab.shape}.")
  if lab.min() < 0 or lab.max() >= num_classes:
    raise ConfigError(f"labels must lie in 0..{num_classes - 1}, got {lab.min()}..{lab.max()}.")
  sizes = np.bincount(lab, minlength=num_classes)
  if sizes.min() < min_per_class:
    raise ConfigError(
        f"every class needs at least {min_per_class} sample(s); class sizes are {sizes.tolist()}.")
  return sizes


def _labels32(labels) -> jax.Array:
  """Labels as an int32 array (one dtype, so jitted code compiles once per shape)."""
  return jnp.asarray(np.asarray(labels), dtype=jnp.int32)


def _positive(name: str, value, why: str) -> float:
  value = float(value)
  if not value > 0.0 or not math.isfinite(value):
    raise ConfigError(f"{name}={value}: {why} must be > 0 and finite.")
  return value


@functools.partial(jax.jit, static_argnames=("num_classes", "dtype"))
def one_hot01(labels: jax.Array, *, num_classes: int, dtype=None) -> jax.Array:
  """0/1 one-hot targets ``[N, K]`` (the theory's labels, not the ±1 of Deep RFM)."""
  dtype = dtype or jnp.result_type(float)
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("num_classes", "dtype"))
def collapse_target(labels: jax.Array, *, num_classes: int, dtype=None) -> jax.Array:
  r"""The collapsed Gram matrix :math:`YY^\top` ``[N, N]`` (paper: :math:`Y^\top Y`).

  Entry ``(i, j)`` is 1 when samples ``i`` and ``j`` share a class, else 0.
  """
  y = one_hot01(labels, num_classes=num_classes, dtype=dtype)
  return jnp.matmul(y, y.T, precision=HIGHEST)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def gram_nc1(gram: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  r"""NC1 :math:`\mathrm{tr}\,\Sigma_W/\mathrm{tr}\,\Sigma_B` from a Gram matrix.

  ``gram`` is ``x xᵀ`` ``[N, N]`` of rows ``x``; the global mean is the sample mean
  (SPEC default). With ``H = I - Y Eᵀ`` (``E = Y`` with columns divided by ``n_c``)
  the within-class centring projector, :math:`\mathrm{tr}\,\Sigma_W =
  \mathrm{tr}(HGH)/N`; :math:`\mathrm{tr}\,\Sigma_B = \mathrm{tr}(C E^\top G E
  C^\top)/K` with ``C = I - 1 wᵀ``, ``w_c = n_c/N``.

  Returns:
    scalar NC1 (paper convention).
  """
  y = one_hot01(labels, num_classes=num_classes, dtype=gram.dtype)
  counts = jnp.sum(y, axis=0)
  e = y / counts
  n = gram.shape[0]
  h = jnp.eye(n, dtype=gram.dtype) - jnp.matmul(y, e.T, precision=HIGHEST)
  hgh = jnp.matmul(jnp.matmul(h, gram, precision=HIGHEST), h, precision=HIGHEST)
  tr_w = jnp.trace(hgh) / n
  means = jnp.matmul(jnp.matmul(e.T, gram, precision=HIGHEST), e, precision=HIGHEST)
  c = jnp.eye(num_classes, dtype=gram.dtype) - (counts / n)[None, :]
  tr_b = jnp.trace(jnp.matmul(jnp.matmul(c, means, precision=HIGHEST), c.T,
                              precision=HIGHEST)) / num_classes
  return tr_w / tr_b


def _sym(a: jax.Array) -> jax.Array:
  return 0.5 * (a + a.T)


def _cosine_gram(g: jax.Array) -> jax.Array:
  d = jnp.sqrt(jnp.clip(jnp.diag(g), jnp.finfo(g.dtype).tiny))
  return _sym(g / d[:, None] / d[None, :])


def _psd_factor(g: jax.Array) -> jax.Array:
  """Rows ``r`` ``[N, N]`` with ``r rᵀ = g`` (negative eigenvalues clipped)."""
  w, v = jnp.linalg.eigh(_sym(g))
  return v * jnp.sqrt(jnp.clip(w, 0.0))[None, :]


def fit_geometric_rate(values, *, skip_first: int = 1, window: int = 8,
                       noise_floor: float = 0.0) -> tuple[float, int]:
  r"""Geometric rate of a decaying sequence by a log-linear least-squares fit.

  Fits :math:`\log v_l = a + l \log\rho` over the last ``window`` entries of the
  first unbroken run of entries above ``noise_floor`` (the first ``skip_first``
  entries, a transient, are left out; once a sequence has reached round-off,
  later entries are noise).

  Args:
    values: ``[L]`` positive numbers, e.g. step changes per layer.
    skip_first: leading entries to ignore.
    window: number of trailing valid entries to fit.
    noise_floor: entries ``<= noise_floor`` are round-off and ignored.

  Returns:
    ``(rate, points)``; ``rate`` is NaN when fewer than 2 points qualify.
  """
  v = np.asarray(values, dtype=np.float64)
  idx = np.nonzero((v > noise_floor) & np.isfinite(v))[0]
  idx = idx[idx >= skip_first]
  # keep the leading run of valid entries (round-off can pop above the floor later)
  if idx.size:
    breaks = np.nonzero(np.diff(idx) != 1)[0]
    if breaks.size:
      idx = idx[:breaks[0] + 1]
  idx = idx[-window:]
  if idx.size < 2:
    return float("nan"), int(idx.size)
  slope = np.polyfit(idx.astype(np.float64), np.log(v[idx]), 1)[0]
  return float(np.exp(slope)), int(idx.size)


def make_full_rank_data(key: jax.Array, *, class_sizes: Sequence[int], dim: int,
                        noise: float = 1.0, separation: float = 1.0,
                        dtype=None) -> tuple[jax.Array, jax.Array]:
  r"""Synthetic full-rank data for the theorems: unit rows, classes contiguous.

  Row ``i`` of class ``c`` is :math:`(m_c + \sigma g_i)/\|m_c + \sigma g_i\|` with
  class means :math:`m_c \sim N(0, s^2 I_d/d)` (``s = separation``) and
  :math:`g_i \sim N(0, I_d/d)`, ``σ = noise``.

  Args:
    key: PRNG key.
    class_sizes: ``[K]`` samples per class (balanced or not), each ``>= 2``.
    dim: ``d``; Theorem 5.3 and Proposition B.1 need ``d >= N`` (Assumption 5.1).
    noise: within-class noise σ ``> 0`` (makes the Gram matrix full rank).
    separation: norm scale of the class means.
    dtype: float dtype (default: JAX's default float).

  Returns:
    ``(x, labels)``: ``x`` ``[N, d]`` with unit rows, ``labels`` ``[N]`` int32.
  """
  sizes = [int(s) for s in class_sizes]
  if len(sizes) < 2:
    raise ConfigError(f"class_sizes={sizes}: need K >= 2 classes.")
  if min(sizes) < 2:
    raise ConfigError(f"class_sizes={sizes}: every class needs at least 2 samples.")
  n = sum(sizes)
  if int(dim) < n:
    raise ConfigError(
        f"dim={dim} < N={n}: Assumption 5.1 (data dimension d >= number of samples n) is "
        f"violated and the Gram matrix cannot be full rank; use dim >= {n}.")
  _positive("noise", noise, "the within-class noise (it makes the Gram matrix full rank)")
  dtype = dtype or jnp.result_type(float)
  labels = jnp.asarray(np.repeat(np.arange(len(sizes)), sizes), dtype=jnp.int32)
  x = _mixture(key, labels, float(noise), float(separation), num_classes=len(sizes),
               dim=int(dim), dtype=dtype)
  return x, labels


@functools.partial(jax.jit, static_argnames=("num_classes", "dim", "dtype"))
def _mixture(key, labels, noise, separation, *, num_classes, dim, dtype):
  k_means, k_noise = jax.random.split(key)
  means = separation * jax.random.normal(k_means, (num_classes, dim), dtype) / math.sqrt(dim)
  x = means[labels] + noise * jax.random.normal(k_noise, (labels.shape[0], dim), dtype) \
      / math.sqrt(dim)
  return x / jnp.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# Theorem 5.3: the linearised Deep RFM iteration on Gram matrices.


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
  lh = _positive("lambda_hat", lambda_hat, "λ̂ (identity weight of the linearised predictor kernel)")
  lm = _positive("lambda_map", lambda_map, "λ_map (identity weight of the linearised feature map)")
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
  return _positive("kappa", rule, "κ (the rescaling)")


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
    g_tilde = _sym(jnp.matmul(g_alpha, g_alpha.T, precision=HIGHEST) / kappa)
    out = (g_tilde, jnp.linalg.norm(g_tilde - target),
           gram_nc1(g_tilde, labels, num_classes=num_classes))
    return g_tilde + lambda_map * eye, out

  _, (tildes, errors, nc1s) = jax.lax.scan(layer, _sym(gram), None, length=num_layers)
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
  _check_classes(labels, num_classes)
  _positive("lambda_hat", lambda_hat, "λ̂ (identity weight of the linearised predictor kernel)")
  _positive("lambda_map", lambda_map, "λ_map (identity weight of the linearised feature map)")
  _positive("kappa", kappa, "κ (the rescaling)")
  if int(num_layers) < 2:
    raise ConfigError(f"num_layers={num_layers}: need at least 2 layers to measure a rate.")
  gram = jnp.asarray(gram)
  return _linearised_scan(gram, _labels32(labels), float(lambda_hat), float(lambda_map),
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
  """Outcome of :func:`check_theorem_5_3` (NumPy float64; see ``CONVENTIONS``)."""
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
  sizes = _check_classes(labels, num_classes, min_per_class=2)
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
    _positive("ratio", v, "λ̂/λ_map")
  for v in lms:
    _positive("lambda_map", v, "λ_map")
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
# Theorem 5.3 with the real non-linear kernels.


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
  L = _positive("bandwidth", bandwidth, "the kernel bandwidth L")
  if kind == "laplace":
    c0 = math.exp(-math.sqrt(2.0) / L)
    c1 = c0 / (math.sqrt(2.0) * L)
  elif kind == "gaussian":
    c0 = math.exp(-1.0 / L ** 2)
    c1 = c0 / L ** 2
  else:
    raise ConfigError(f"kernel {kind!r}: use 'laplace', 'gaussian' or 'relu'.")
  return c0, c1, 1.0 - c0 - c1


def _kernel_and_weights(x, kind: str, bandwidth: float):
  """Kernel matrix ``[N, N]`` and gradient weights ``w_ij`` with
  ``∇_x k(x_j, x)|_{x_i} = -w_ij (x_i - x_j)``; self terms masked by index."""
  diff = x[:, None, :] - x[None, :, :]
  sq = jnp.sum(diff * diff, axis=-1)
  eye = jnp.eye(x.shape[0], dtype=bool)
  if kind == "laplace":
    dist = jnp.sqrt(jnp.where(eye, 1.0, sq))
    kmat = jnp.where(eye, 1.0, jnp.exp(-dist / bandwidth))
    w = jnp.where(eye, 0.0, kmat / (bandwidth * dist))
  else:
    kmat = jnp.exp(-sq / (2.0 * bandwidth ** 2))
    w = jnp.where(eye, 0.0, kmat / bandwidth ** 2)
  return kmat, w


@functools.partial(jax.jit, static_argnames=("width", "bandwidth", "num_classes", "kind"))
def _nonlinear_layer(x, labels, key, ridge, *, width, bandwidth, num_classes, kind):
  """One Deep RFM layer on rows ``x`` ``[N, p]``: returns (next rows [N, N], Xt Gram, residuals)."""
  y = one_hot01(labels, num_classes=num_classes, dtype=x.dtype)
  n = x.shape[0]
  eye = jnp.eye(n, dtype=x.dtype)
  x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
  kmat, w = _kernel_and_weights(x, kind, bandwidth)
  alpha = jnp.linalg.solve(kmat + ridge * eye, y)                       # [N, K]
  wa = jnp.matmul(w, alpha, precision=HIGHEST)                          # [N, K]
  # J_i = -(wa_i x_i^T - sum_j w_ij alpha_j x_j^T)  [N, K, p]
  jac = -(wa[:, :, None] * x[:, None, :]
          - jnp.einsum("ij,jk,jp->ikp", w, alpha, x, precision=HIGHEST))
  agop = jnp.einsum("ikp,ikq->pq", jac, jac, precision=HIGHEST) / n     # [p, p]
  wv, vv = jnp.linalg.eigh(_sym(agop))
  sqrt_m = jnp.matmul(vv * jnp.sqrt(jnp.clip(wv, 0.0))[None, :], vv.T, precision=HIGHEST)
  xt = jnp.matmul(x, sqrt_m, precision=HIGHEST)                         # X M^{1/2}
  g_tilde = _sym(jnp.matmul(xt, xt.T, precision=HIGHEST))
  c0, c1, c2 = kernel_linearisation(kind, bandwidth=bandwidth)
  gx = jnp.matmul(x, x.T, precision=HIGHEST)
  lin = c0 + c1 * gx + c2 * eye
  res_pred = jnp.linalg.norm(kmat - lin) / jnp.linalg.norm(kmat)
  xtn = xt / jnp.linalg.norm(xt, axis=1, keepdims=True)
  wmat = jax.random.normal(key, (width, xt.shape[1]), x.dtype) * jnp.sqrt(2.0 / width)
  phi = jax.nn.relu(jnp.matmul(xtn, wmat.T, precision=HIGHEST))         # [N, D]
  g_next = _sym(jnp.matmul(phi, phi.T, precision=HIGHEST))
  a0, a1, a2 = kernel_linearisation("relu")
  lin_f = a0 + a1 * _cosine_gram(g_tilde) + a2 * eye
  res_feat = jnp.linalg.norm(g_next - lin_f) / jnp.linalg.norm(g_next)
  nc1 = gram_nc1(g_tilde, labels, num_classes=num_classes)
  return _psd_factor(g_next), g_tilde, res_pred, res_feat, nc1


@functools.partial(jax.jit, static_argnames=("num_classes", "num_layers"))
def _linearised_kernel_scan(gram, labels, pred_coef, feat_coef, *, num_classes, num_layers):
  y = one_hot01(labels, num_classes=num_classes, dtype=gram.dtype)
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)

  def layer(g, _):
    c = _cosine_gram(g)
    kmat = pred_coef[0] + pred_coef[1] * c + pred_coef[2] * eye
    alpha = jnp.linalg.solve(kmat, y)
    ca = jnp.matmul(c, alpha, precision=HIGHEST)
    g_tilde = _sym(pred_coef[1] ** 2 * jnp.matmul(ca, ca.T, precision=HIGHEST))
    g_next = feat_coef[0] + feat_coef[1] * _cosine_gram(g_tilde) + feat_coef[2] * eye
    return g_next, gram_nc1(g_tilde, labels, num_classes=num_classes)

  _, nc1s = jax.lax.scan(layer, gram, None, length=num_layers)
  return nc1s


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
  sizes = _check_classes(labels, num_classes, min_per_class=2)
  if kernel not in KERNELS:
    raise ConfigError(f"kernel={kernel!r}: use one of {KERNELS}.")
  _positive("bandwidth", bandwidth, "the kernel bandwidth L")
  if int(width) < 1:
    raise ConfigError(f"width={width}: need at least one random feature.")
  if float(ridge) < 0.0:
    raise ConfigError(f"ridge={ridge}: must be >= 0.")
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
    lab = _labels32(labels)
    nc1_nl, res_p, res_f = [], [], []
    rows = jnp.asarray(rows0)
    for layer in range(num_layers):
      k = jax.random.fold_in(key, layer)
      rows, _, rp, rf, nc1 = _nonlinear_layer(rows, lab, k, float(ridge), width=int(width),
                                              bandwidth=float(bandwidth),
                                              num_classes=num_classes, kind=kernel)
      nc1_nl.append(float(nc1))
      res_p.append(float(rp))
      res_f.append(float(rf))
    gram = jnp.asarray(gram)
    nc1_lin = np.asarray(_linearised_kernel_scan(
        gram, lab, jnp.asarray(pred), jnp.asarray(feat), num_classes=num_classes,
        num_layers=num_layers))
    kap = kappa_value(lh, lm, rule="fixed_point", class_size=n_total / num_classes)
    nc1_th = np.asarray(linearised_deep_rfm(gram, lab, num_classes=num_classes, lambda_hat=lh,
                                            lambda_map=lm, kappa=kap,
                                            num_layers=num_layers).nc1)
  nc1_nl = np.asarray(nc1_nl)
  if not np.all(np.isfinite(nc1_nl)):
    raise SolveError(
        "the ridgeless kernel solve broke down (non-finite NC1); pass a small ridge, e.g. 1e-8.")

  def rate(v):
    return fit_geometric_rate(v, skip_first=1, window=num_layers,
                              noise_floor=1e-13)[0]

  return NonlinearComparison(
      kernel=kernel, bandwidth=float(bandwidth), width=int(width), ridge=float(ridge),
      predictor_coefficients=pred, feature_coefficients=feat,
      lambda_hat_effective=lh, lambda_map_effective=lm,
      nc1_nonlinear=nc1_nl, nc1_linearised_kernels=nc1_lin, nc1_theorem=nc1_th,
      predictor_residual=np.asarray(res_p), feature_residual=np.asarray(res_f),
      rate_nonlinear=rate(nc1_nl), rate_linearised_kernels=rate(nc1_lin),
      rate_theorem=rate(nc1_th))


# ---------------------------------------------------------------------------
# Lemma C.2.


def lemma_c2_inverse(labels: jax.Array, *, num_classes: int, lambda_map: float,
                     dtype=None) -> jax.Array:
  r"""Closed-form :math:`(A^*)^{-1}` for :math:`A^* = YY^\top + \lambda_{map} I` ``[N, N]``.

  .. math::
     (A^*)^{-1} = \lambda_{map}^{-1} I
     - \sum_c \frac{1}{\lambda_{map}(\lambda_{map}+n_c)} y_c y_c^\top,

  which for balanced classes is the paper's
  :math:`\lambda_{map}^{-1}I - \lambda_{map}^{-1}(\lambda_{map}+n)^{-1}YY^\top`.
  """
  _check_classes(labels, num_classes)
  lm = _positive("lambda_map", lambda_map, "λ_map")
  return _lemma_c2_inverse(_labels32(labels), lm, num_classes=num_classes, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("num_classes", "dtype"))
def _lemma_c2_inverse(labels, lambda_map, *, num_classes, dtype):
  y = one_hot01(labels, num_classes=num_classes, dtype=dtype)
  counts = jnp.sum(y, axis=0)
  weights = 1.0 / (lambda_map * (lambda_map + counts))
  n = y.shape[0]
  return (jnp.eye(n, dtype=y.dtype) / lambda_map
          - jnp.matmul(y * weights[None, :], y.T, precision=HIGHEST))


class LemmaC2Result(NamedTuple):
  lambda_map: float
  lambda_hat: float
  class_sizes: np.ndarray
  relative_error: float          # closed form vs direct inverse
  inverse_residual: float        # ||A* C - I||_F, C the closed form
  mapped_scale_paper: np.ndarray  # [K] s_c after one layer from A*, paper kappa (1 = fixed)
  mapped_scale_fixed_point: np.ndarray  # [K] same with kappa="fixed_point"
  fixed_point_residual_paper: float     # ||T(A*) - A*||_F / ||A*||_F
  fixed_point_residual_fixed_point: float


def check_lemma_c2(labels: jax.Array, *, num_classes: int, lambda_map: float,
                   lambda_hat: float) -> LemmaC2Result:
  r"""Checks Lemma C.2 and whether :math:`A^*` is a fixed point of Theorem 5.3's map.

  The closed form is compared with a direct float64 inverse (``numpy.linalg.inv``).
  Then one layer of :func:`linearised_deep_rfm` is applied to :math:`A^*` and the
  per-class scales of the image :math:`\sum_c s_c n_c u_c u_c^\top + \lambda_{map} I`
  are read off as :math:`s_c = y_c^\top\tilde G y_c / n_c^2`; theory:
  :math:`s_c = \kappa^{-1}((n_c+\lambda_{map})/(n_c+\lambda_{map}+\hat\lambda))^2`,
  so :math:`A^*` is fixed iff every :math:`s_c = 1`.
  """
  sizes = _check_classes(labels, num_classes)
  lm = _positive("lambda_map", lambda_map, "λ_map")
  lh = _positive("lambda_hat", lambda_hat, "λ̂")
  n_total = int(sizes.sum())
  y = np.eye(num_classes)[np.asarray(labels)]
  a_star = y @ y.T + lm * np.eye(n_total)
  direct = np.linalg.inv(a_star)
  with jax.enable_x64(True):
    lab = _labels32(labels)
    closed = np.asarray(lemma_c2_inverse(lab, num_classes=num_classes, lambda_map=lm,
                                         dtype=jnp.float64))
    rel = float(np.linalg.norm(closed - direct) / np.linalg.norm(direct))
    resid = float(np.linalg.norm(a_star @ closed - np.eye(n_total)))
    scales, resids = {}, {}
    for rule in KAPPA_RULES:
      try:
        kap = kappa_value(lh, lm, rule=rule, class_size=n_total / num_classes)
      except ConfigError:
        scales[rule], resids[rule] = np.full(num_classes, np.nan), float("nan")
        continue
      g_tilde = np.asarray(linearised_deep_rfm(
          jnp.asarray(a_star), lab, num_classes=num_classes, lambda_hat=lh, lambda_map=lm,
          kappa=kap, num_layers=2).gram_tilde[0])
      resids[rule] = float(np.linalg.norm(g_tilde + lm * np.eye(n_total) - a_star)
                           / np.linalg.norm(a_star))
      scales[rule] = np.einsum("ic,ij,jc->c", y, g_tilde, y) / sizes.astype(np.float64) ** 2
  return LemmaC2Result(
      lambda_map=lm, lambda_hat=lh, class_sizes=sizes, relative_error=rel, inverse_residual=resid,
      mapped_scale_paper=scales["paper"], mapped_scale_fixed_point=scales["fixed_point"],
      fixed_point_residual_paper=resids["paper"],
      fixed_point_residual_fixed_point=resids["fixed_point"])


# ---------------------------------------------------------------------------
# Theorem 5.4: implicit bias of kernel learning.


@functools.partial(jax.jit, static_argnames=("num_classes",))
def kernel_objective(k: jax.Array, labels: jax.Array, *, num_classes: int, mu: float) -> jax.Array:
  r""":math:`J(k) = \sum_c Y_c^\top (k+\mu I)^{-1} k Y_c` for a kernel matrix ``k`` ``[N, N]``.

  ``Y_c`` is the 0/1 indicator ``[N]`` of class ``c``.
  """
  y = one_hot01(labels, num_classes=num_classes, dtype=k.dtype)
  eye = jnp.eye(k.shape[0], dtype=k.dtype)
  ky = jnp.matmul(k, y, precision=HIGHEST)
  return jnp.sum(y * jnp.linalg.solve(_sym(k) + mu * eye, ky))


def objective_at_target(class_sizes, *, mu: float) -> float:
  r""":math:`J(YY^\top) = \sum_c n_c^2/(n_c+\mu)` (:math:`Kn^2/(n+\mu)` balanced)."""
  n = np.asarray(class_sizes, dtype=np.float64)
  return float(np.sum(n ** 2 / (n + mu)))


def _project_box(z):
  """Nearest matrix with unit diagonal and non-negative off-diagonal entries."""
  n = z.shape[0]
  return jnp.where(jnp.eye(n, dtype=bool), 1.0, jnp.maximum(z, 0.0))


def _project_psd(z):
  w, v = jnp.linalg.eigh(_sym(z))
  return _sym(jnp.matmul(v * jnp.clip(w, 0.0)[None, :], v.T, precision=HIGHEST))


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
  x, _, _ = jax.lax.fori_loop(0, num_iters, body, (_sym(k), z, z))
  return x


@jax.jit
def make_feasible(k: jax.Array) -> jax.Array:
  r"""An exactly feasible kernel near ``k``: box projection, then shrink to ``I``.

  After the box step (unit diagonal, entries ≥ 0) the matrix
  :math:`(1-t)k + tI` with :math:`t = \max(0, -\lambda_{min})/(1-\lambda_{min})`
  keeps both properties and has smallest eigenvalue 0.
  """
  k = _project_box(_sym(k))
  lam = jnp.minimum(jnp.linalg.eigvalsh(k)[0], 0.0)
  t = -lam / (1.0 - lam)
  return (1.0 - t) * k + t * jnp.eye(k.shape[0], dtype=k.dtype)


@functools.partial(jax.jit, static_argnames=("n", "dtype"))
def random_feasible_kernel(key: jax.Array, n: int, *, dtype=None) -> jax.Array:
  """A random feasible kernel ``[n, n]``: Gram of random non-negative unit rows."""
  dtype = dtype or jnp.result_type(float)
  v = jnp.abs(jax.random.normal(key, (n, n), dtype))
  v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
  return _sym(jnp.matmul(v, v.T, precision=HIGHEST))


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps", "projection_iters"))
def _ascent(k0, labels, mu, step, *, num_classes, num_steps, projection_iters):
  grad = jax.grad(kernel_objective)
  target = collapse_target(labels, num_classes=num_classes, dtype=k0.dtype)
  tnorm = jnp.linalg.norm(target)

  def one(k, _):
    g = grad(k, labels, num_classes=num_classes, mu=mu)
    k = project_feasible(k + step * _sym(g), num_iters=projection_iters)
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
  sizes = _check_classes(labels, num_classes)
  mu = _positive("mu", mu, "the ridge μ of Theorem 5.4")
  for name, v in (("num_starts", num_starts), ("num_steps", num_steps),
                  ("projection_iters", projection_iters), ("num_random", num_random)):
    if int(v) < 1:
      raise ConfigError(f"{name}={v}: must be >= 1.")
  n_total = int(sizes.sum())
  step = float(step_size) if step_size is not None else 4.0 * mu ** 2 / float(sizes.max())
  _positive("step_size", step, "the ascent step")
  with jax.enable_x64(True):
    out = _thm54_run(key, _labels32(labels), float(mu), float(step), num_classes=num_classes,
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
  _check_classes(labels, num_classes)
  n_total, dim = x.shape
  if dim < n_total:
    raise ConfigError(
        f"x is [{n_total}, {dim}]: Proposition B.1 needs a full-rank data Gram matrix, which "
        f"requires d >= N; give at least {n_total} features.")
  return _realise(jnp.asarray(x), _labels32(labels), float(beta), num_classes=num_classes, kind=kind,
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
  sizes = _check_classes(labels, num_classes)
  mu = _positive("mu", mu, "the ridge μ")
  _positive("bandwidth", bandwidth, "the kernel bandwidth L")
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
    lab = _labels32(labels)
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


# ---------------------------------------------------------------------------
# Proposition A.1: ReLU random features and the arc-cosine kernel.


def relu_product_expectation(theta) -> np.ndarray:
  r""":math:`E[\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)] = (\sin\theta + (\pi-\theta)\cos\theta)/\pi`
  for unit ``x, y`` at angle θ and ``W ~ N(0, 2/D)`` (any ``D``)."""
  t = np.asarray(theta, dtype=np.float64)
  return (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi


def relu_product_variance(theta, *, width: int) -> np.ndarray:
  r"""Exact variance of :math:`\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)`, ``W`` ``[D, d]``.

  A sum of ``D`` i.i.d. terms :math:`\frac{2}{D}\mathrm{ReLU}(g_1)\mathrm{ReLU}(g_2)`
  with :math:`\mathrm{corr}(g_1, g_2) = \cos\theta`, and
  :math:`E[\mathrm{ReLU}(g_1)^2\mathrm{ReLU}(g_2)^2] = J_2(\theta)/(2\pi)` (Cho & Saul), so
  :math:`\mathrm{Var} = \frac{4}{D}(J_2/(2\pi) - J_1^2/(4\pi^2))`.
  """
  t = np.asarray(theta, dtype=np.float64)
  j1 = np.sin(t) + (np.pi - t) * np.cos(t)
  j2 = 3.0 * np.sin(t) * np.cos(t) + (np.pi - t) * (1.0 + 2.0 * np.cos(t) ** 2)
  return 4.0 / float(width) * (j2 / (2.0 * np.pi) - j1 ** 2 / (4.0 * np.pi ** 2))


@functools.partial(jax.jit, static_argnames=("widths", "num_draws", "dim", "chunk"))
def _relu_products(key, thetas, *, widths, num_draws, dim, chunk):
  """``[W, num_draws, A]`` samples of ReLU(Wx)·ReLU(Wy_θ), ``W`` ``[D, dim]`` ~ N(0, 2/D).

  One standard-normal ``G`` ``[max(widths), dim]`` is drawn per sample; width ``D``
  uses its first ``D`` rows scaled by ``sqrt(2/D)`` (nested draws: each width has
  the exact law, widths are correlated with each other, which no statistic here
  uses).
  """
  k_basis, k_w = jax.random.split(key)
  q, _ = jnp.linalg.qr(jax.random.normal(k_basis, (dim, 2), thetas.dtype))
  x, x_perp = q[:, 0], q[:, 1]
  ys = jnp.cos(thetas)[:, None] * x[None, :] + jnp.sin(thetas)[:, None] * x_perp[None, :]
  d_max = max(widths)

  def one(k):
    g = jax.random.normal(k, (d_max, dim), thetas.dtype)
    fx = jax.nn.relu(jnp.matmul(g, x, precision=HIGHEST))                 # [D]
    fy = jax.nn.relu(jnp.matmul(g, ys.T, precision=HIGHEST))              # [D, A]
    csum = jnp.cumsum(fx[:, None] * fy, axis=0)                           # [D, A]
    return jnp.stack([2.0 / w * csum[w - 1] for w in widths])            # [W, A]

  keys = jax.random.split(k_w, num_draws).reshape(num_draws // chunk, chunk)
  out = jax.lax.map(jax.vmap(one), keys).reshape(num_draws, len(widths), -1)
  return jnp.transpose(out, (1, 0, 2))


class PropA1Result(NamedTuple):
  thetas: np.ndarray            # [A] radians
  width: int
  num_draws: int
  mc_mean: np.ndarray           # [A]
  mc_se: np.ndarray             # [A] standard error of the mean
  expected: np.ndarray          # [A]
  z_scores: np.ndarray          # [A]
  widths: np.ndarray            # [W]
  mc_variance: np.ndarray       # [W, A] sample variance per draw
  predicted_variance: np.ndarray  # [W, A]
  variance_slope: float         # slope of log(mean_theta var) vs log D (expected -1)
  variance_ratio: np.ndarray    # [W] mean over angles of mc_variance / predicted


def check_proposition_a1(key: jax.Array, *, thetas: Sequence[float] | None = None,
                         width: int = 4096, widths: Sequence[int] = (64, 256, 1024, 4096),
                         num_draws: int = 512, dim: int = 4) -> PropA1Result:
  r"""Monte Carlo check of Proposition A.1 and of the ``1/D`` variance.

  Args:
    key: PRNG key.
    thetas: angles in ``[0, π]`` (default: 12 evenly spaced, endpoints included).
    width: ``D`` for the mean check.
    widths: ``D`` values for the variance scaling (each uses ``num_draws`` draws).
    num_draws: independent ``W`` ``[D, dim]`` per width; a multiple of 8.
    dim: input dimension ``d`` (irrelevant in law; kept to draw the full ``W``).

  Returns:
    :class:`PropA1Result`.
  """
  th = np.linspace(0.0, np.pi, 12) if thetas is None else np.asarray(thetas, dtype=np.float64)
  if th.ndim != 1 or th.size < 1 or th.min() < 0.0 or th.max() > np.pi:
    raise ConfigError("thetas must be a non-empty list of angles in [0, pi] (radians).")
  if int(dim) < 2:
    raise ConfigError(f"dim={dim}: two distinct unit vectors need d >= 2.")
  chunk = 8
  if int(num_draws) < 16 or int(num_draws) % chunk:
    raise ConfigError(f"num_draws={num_draws}: use a multiple of {chunk}, at least 16.")
  all_widths = sorted(set(int(w) for w in widths) | {int(width)})
  if all_widths[0] < 1:
    raise ConfigError("widths must be positive.")
  with jax.enable_x64(True):
    out = np.asarray(_relu_products(key, jnp.asarray(th), widths=tuple(all_widths),
                                    num_draws=int(num_draws), dim=int(dim), chunk=chunk))
  samples = dict(zip(all_widths, out))
  s = samples[int(width)]
  mean = s.mean(axis=0)
  se = s.std(axis=0, ddof=1) / math.sqrt(num_draws)
  expected = relu_product_expectation(th)
  # at theta = pi the product is 0 up to round-off (y = -x): no spread to test against
  degenerate = se < 1e-10
  z = np.where(degenerate, 0.0, (mean - expected) / np.where(degenerate, 1.0, se))
  ws = np.asarray(sorted(set(int(w) for w in widths)))
  var = np.stack([samples[w].var(axis=0, ddof=1) for w in ws])
  pred = np.stack([relu_product_variance(th, width=w) for w in ws])
  # angles where the variance vanishes (theta = pi: one of the two ReLUs is 0) are left out
  keep = pred[0] > 1e-12
  slope = float(np.polyfit(np.log(ws), np.log(var[:, keep].mean(axis=1)), 1)[0]) \
      if ws.size >= 2 and keep.any() else float("nan")
  ratio = (var[:, keep] / pred[:, keep]).mean(axis=1) if keep.any() else np.full(ws.size, np.nan)
  return PropA1Result(
      thetas=th, width=int(width), num_draws=int(num_draws), mc_mean=mean, mc_se=se,
      expected=expected, z_scores=z,
      widths=ws, mc_variance=var, predicted_variance=pred, variance_slope=slope,
      variance_ratio=ratio)


# ---------------------------------------------------------------------------
# Reports: each bundles the checks of one statement, as the command line runs them.


class Thm53Report(NamedTuple):
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


class Thm54Report(NamedTuple):
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


def as_dict(obj):
  """JSON-ready copy of a result: NamedTuples → dicts, arrays → lists, NaN/inf → None."""
  if hasattr(obj, "_asdict"):
    return {k: as_dict(v) for k, v in obj._asdict().items()}
  if isinstance(obj, dict):
    return {str(k): as_dict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [as_dict(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)):
    return as_dict(np.asarray(obj).tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    return v if math.isfinite(v) else None
  return obj


# ---------------------------------------------------------------------------
# Figures (matplotlib is imported only here).


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_theorem_5_3(report: Thm53Report, path: str) -> str:
  """Four panels: error per layer, fitted vs predicted rates over λ̂/λ_map, floors,
  and the non-linear comparison. Writes a PNG to ``path``; returns it."""
  plt = _pyplot()
  fig, ax = plt.subplots(2, 2, figsize=(12, 9))
  a = ax[0, 0]
  for name, r in report.runs.items():
    a.semilogy(np.arange(1, r.gram_error.size + 1), np.maximum(r.relative_gram_error, 1e-17),
               marker=".", label=f"{name} (κ={r.kappa:.4f})")
  a.set_xlabel("layer l")
  a.set_ylabel("‖X̃X̃ᵀ − YYᵀ‖_F / ‖YYᵀ‖_F")
  a.set_title(f"Theorem 5.3: λ̂={next(iter(report.runs.values())).lambda_hat:g}, "
              f"λ_map={next(iter(report.runs.values())).lambda_map:g}")
  a.legend(fontsize=8)
  sw = report.sweep
  a = ax[0, 1]
  for i, rule in enumerate(sw.kappa_rules):
    for j, lm in enumerate(sw.lambda_maps):
      line = a.loglog(sw.ratios, sw.fitted_rate[i, j], marker="o" if i == 0 else "s",
                      linestyle="none", label=f"fitted, κ {rule}, λ_map={lm:g}")
      a.loglog(sw.ratios, sw.local_rate[i, j], color=line[0].get_color(), linewidth=0.8)
  a.loglog(sw.ratios, sw.ratios / (1 + sw.ratios), "k--", label="r/(1+r)")
  bound = sw.bound_rate[1, list(sw.lambda_maps).index(1.0)] if 1.0 in sw.lambda_maps \
      else sw.bound_rate[1, 0]
  a.loglog(sw.ratios, bound, "k:", label="proof's bound (κ fixed point, C=1)")
  a.axhline(1.0, color="grey", linewidth=0.5)
  a.set_xlabel("r = λ̂ / λ_map")
  a.set_ylabel("geometric rate per layer")
  a.set_title("fitted rate (markers) vs Jacobian rate (lines)")
  a.legend(fontsize=6)
  a = ax[1, 0]
  for i, rule in enumerate(sw.kappa_rules):
    for j, lm in enumerate(sw.lambda_maps):
      a.loglog(sw.ratios, np.maximum(sw.floor[i, j], 1e-16), marker="o" if i == 0 else "s",
               label=f"κ {rule}, λ_map={lm:g}")
  a.loglog(sw.ratios, sw.ratios ** 2, "k--", label="(λ̂/λ_map)²")
  a.set_xlabel("r = λ̂ / λ_map")
  a.set_ylabel("floor ‖X̃X̃ᵀ − YYᵀ‖_F at the last layer")
  a.set_title("floor (balanced classes)")
  a.legend(fontsize=6)
  a = ax[1, 1]
  c = report.comparison
  layers = np.arange(1, c.nc1_nonlinear.size + 1)
  a.semilogy(layers, c.nc1_nonlinear, "o-", label=f"{c.kernel} KRR + ReLU features (D={c.width})")
  a.semilogy(layers, c.nc1_linearised_kernels, "s-", label="same, kernels linearised")
  a.semilogy(layers, c.nc1_theorem, "^-",
             label=f"Thm 5.3 map, λ̂={c.lambda_hat_effective:.3g}, λ_map={c.lambda_map_effective:.3g}")
  a.set_xlabel("layer l")
  a.set_ylabel("NC1 of X̃_{l+1} = tr Σ_W / tr Σ_B")
  a.set_title("real kernels vs their linearisation")
  a.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_lemma_c2(results: Sequence[LemmaC2Result], path: str) -> str:
  """Bar chart of the Lemma C.2 errors and of the fixed-point residuals."""
  plt = _pyplot()
  fig, ax = plt.subplots(1, 2, figsize=(10, 4))
  names = [f"n_c={r.class_sizes.tolist()}" for r in results]
  ax[0].bar(names, [max(r.relative_error, 1e-18) for r in results])
  ax[0].set_yscale("log")
  ax[0].set_ylabel("‖closed form − inv(A*)‖_F / ‖inv(A*)‖_F")
  ax[0].set_title("Lemma C.2 (float64)")
  width = 0.35
  pos = np.arange(len(results))
  ax[1].bar(pos - width / 2, [max(r.fixed_point_residual_paper, 1e-18) for r in results], width,
            label="κ paper")
  ax[1].bar(pos + width / 2, [max(r.fixed_point_residual_fixed_point, 1e-18) for r in results],
            width, label="κ fixed point")
  ax[1].set_xticks(pos, names)
  ax[1].set_yscale("log")
  ax[1].set_ylabel("‖T(A*) − A*‖_F / ‖A*‖_F")
  ax[1].set_title("is A* = YYᵀ + λ_map I a fixed point?")
  # Beside the panel: inside, it covers the tallest bars.
  ax[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_theorem_5_4(report: Thm54Report, path: str) -> str:
  """Objective and distance to YYᵀ along the ascent; random kernels; Mahalanobis runs."""
  plt = _pyplot()
  r = report.relaxed
  fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
  steps = np.arange(1, r.history.shape[1] + 1)
  for s in range(r.history.shape[0]):
    ax[0].plot(steps, r.history[s], linewidth=1)
  ax[0].axhline(r.objective_at_target, color="k", linestyle="--",
                label=f"J(YYᵀ) = Σ n_c²/(n_c+μ) = {r.objective_at_target:.4g}")
  counts, edges = np.histogram(r.random_objectives, bins=30)
  ax[0].barh(0.5 * (edges[1:] + edges[:-1]), counts * (0.3 * steps[-1] / max(counts.max(), 1)),
             height=np.diff(edges), alpha=0.4,
             label=f"{r.random_objectives.size} random feasible k (histogram)")
  ax[0].set_xlabel("ascent step")
  ax[0].set_ylabel("J(k) = Σ_c Y_cᵀ(k+μI)⁻¹k Y_c")
  ax[0].set_title(f"Theorem 5.4, μ={r.mu:g}, n_c={r.class_sizes.tolist()}")
  ax[0].legend(fontsize=7)
  for s in range(r.distance_history.shape[0]):
    ax[1].semilogy(steps, np.maximum(r.distance_history[s], 1e-17), linewidth=1)
  ax[1].set_xlabel("ascent step")
  ax[1].set_ylabel("‖k − YYᵀ‖_F / ‖YYᵀ‖_F")
  ax[1].set_title("projected gradient ascent reaches YYᵀ")
  for kind, b in report.parametrised.items():
    st = np.arange(1, b.optimised_distance.size + 1) * b.record_every
    ax[2].semilogy(st, b.optimised_distance, label=f"{kind} kernel, L={b.bandwidth:g}: Adam on M")
  ax[2].set_xlabel("Adam step")
  ax[2].set_ylabel("‖k_M − YYᵀ‖_F / ‖YYᵀ‖_F")
  ax[2].set_title("Proposition B.1: Mahalanobis kernels")
  ax[2].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_proposition_a1(result: PropA1Result, path: str) -> str:
  """MC mean ± 2 SE against the arc-cosine formula; variance against D."""
  plt = _pyplot()
  r = result
  fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
  grid = np.linspace(0.0, np.pi, 200)
  ax[0].plot(grid, relu_product_expectation(grid), "k-", label="(sin θ + (π−θ) cos θ)/π")
  ax[0].errorbar(r.thetas, r.mc_mean, yerr=2 * r.mc_se, fmt="o", markersize=4,
                 label=f"Monte Carlo, D={r.width}, {r.num_draws} draws (±2 SE)")
  ax[0].set_xlabel("θ (radians)")
  ax[0].set_ylabel("ReLU(Wx)·ReLU(Wy)")
  ax[0].set_title("Proposition A.1, W ~ N(0, 2/D)")
  ax[0].legend(fontsize=8)
  keep = r.predicted_variance[0] > 1e-12
  for i in np.nonzero(keep)[0][:: max(1, keep.sum() // 4)]:
    line = ax[1].loglog(r.widths, r.mc_variance[:, i], "o", label=f"θ={r.thetas[i]:.2f}")
    ax[1].loglog(r.widths, r.predicted_variance[:, i], "-", color=line[0].get_color())
  ax[1].set_xlabel("width D")
  ax[1].set_ylabel("variance per draw")
  ax[1].set_title(f"variance ∝ 1/D (fitted slope {r.variance_slope:.3f}); lines: exact")
  ax[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
