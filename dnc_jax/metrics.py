r"""Neural-collapse metrics, Gram pictures and NFA correlations.

Rows are examples: ``x`` is ``[N, d]``, ``labels`` is ``[N]`` integers in
``0..K-1``. With class means :math:`\mu_c` (``n_c`` rows each) and global mean
:math:`\mu_G`:

.. math::
   \Sigma_W = \tfrac{1}{N}\sum_c\sum_{i\in c}(x_i-\mu_c)(x_i-\mu_c)^\top,\quad
   \Sigma_B = \tfrac{1}{K}\sum_c(\mu_c-\mu_G)(\mu_c-\mu_G)^\top,\quad
   \Sigma_T = \tfrac{1}{N}\sum_i(x_i-\mu_G)(x_i-\mu_G)^\top.

* NC1 (paper): :math:`\mathrm{tr}\,\Sigma_W / \mathrm{tr}\,\Sigma_B`;
  Papyan et al.: :math:`\mathrm{tr}(\Sigma_W\Sigma_B^+)/K`; CDNV: mean over class
  pairs of :math:`(\sigma_c^2+\sigma_{c'}^2)/(2\|\mu_c-\mu_{c'}\|^2)`.
* NC2: :math:`\|\bar\mu\bar\mu^\top - \Sigma_{ETF}\|_F` with
  :math:`\bar\mu_c = (\mu_c-\mu_G)/\|\mu_c-\mu_G\|` and
  :math:`\Sigma_{ETF} = \tfrac{K}{K-1}I - \tfrac{1}{K-1}\mathbf{1}\mathbf{1}^\top`;
  or against the orthogonal frame ``I``. The authors' code plots
  ``mean((μ̄μ̄ᵀ - Σ_ETF)²) = NC2²/K²`` (``form="mean_squared"``).

No ``d × d`` matrix is built: traces are sums of squared rows and the Papyan
form is reduced to ``K × K`` Gram matrices of the centred class means.

Global mean convention: ``"sample"`` (mean of all rows, the default) or
``"class_means"`` (unweighted mean of the class means, the authors' code);
identical for balanced classes.

References:
  Papyan, Han, Donoho. Prevalence of neural collapse during the terminal phase
  of deep learning training. PNAS 2020.
  Galanti, György, Hutter. On the role of neural collapse in transfer learning.
  ICLR 2022 (CDNV).
  Beaglehole et al., NeurIPS 2024, Section 3.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import validate
from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
GLOBAL_MEANS = ("sample", "class_means")

CONVENTIONS = {
    "nc1": "tr(Sigma_W)/tr(Sigma_B), Sigma_W = (1/N) sum_i (x_i-mu_c)(x_i-mu_c)^T, "
           "Sigma_B = (1/K) sum_c (mu_c-mu_G)(mu_c-mu_G)^T (paper; the authors' code plots this / K)",
    "nc1_papyan": "tr(Sigma_W Sigma_B^+)/K (Papyan et al. 2020)",
    "cdnv": "mean over class pairs c != c' of (var_c + var_c')/(2 ||mu_c - mu_c'||^2)",
    "nc2": "||Mbar Mbar^T - Sigma_ETF||_F, Mbar rows (mu_c-mu_G)/||mu_c-mu_G||, "
           "Sigma_ETF = K/(K-1) I - 1/(K-1) 11^T (paper; the authors' code plots mean squared = nc2^2/K^2)",
    "nc2_orthogonal": "||Mbar Mbar^T - I||_F",
    "tr_w_over_t": "tr(Sigma_W)/tr(Sigma_T)",
    "tr_b_over_t": "tr(Sigma_B)/tr(Sigma_T)",
}


class ClassStats(NamedTuple):
  """Sufficient class statistics of rows ``x`` ``[N, d]``."""
  counts: jax.Array     # [K]
  means: jax.Array      # [K, d]
  global_mean: jax.Array  # [d]
  within: jax.Array     # [N, d] x_i - mu_{c_i}
  class_var: jax.Array  # [K] mean squared distance to the class mean


def class_stats(x: jax.Array, labels: jax.Array, num_classes: int,
                global_mean: str = "sample") -> ClassStats:
  """Class counts, means, global mean and within-class residuals (traceable)."""
  ones = jnp.ones((x.shape[0],), x.dtype)
  counts = jax.ops.segment_sum(ones, labels, num_segments=num_classes)
  means = jax.ops.segment_sum(x, labels, num_segments=num_classes) / counts[:, None]
  if global_mean == "sample":
    mu_g = jnp.mean(x, axis=0)
  elif global_mean == "class_means":
    mu_g = jnp.mean(means, axis=0)
  else:
    raise ConfigError(f"unknown global mean {global_mean!r}; choose one of {', '.join(GLOBAL_MEANS)}")
  within = x - means[labels]
  class_var = jax.ops.segment_sum(jnp.sum(within * within, axis=1), labels,
                                  num_segments=num_classes) / counts
  return ClassStats(counts, means, mu_g, within, class_var)


def _pinv_sym(g: jax.Array) -> jax.Array:
  """Pseudo-inverse of a symmetric PSD ``[K, K]`` matrix (relative cut-off)."""
  evals, evecs = jnp.linalg.eigh(g)
  cut = g.shape[0] * jnp.finfo(g.dtype).eps * jnp.max(jnp.abs(evals))
  inv = jnp.where(evals > cut, 1.0 / jnp.where(evals > cut, evals, 1.0), 0.0)
  return jnp.matmul(evecs * inv, evecs.T, precision=HIGHEST)


def _etf(k: int, dtype) -> jax.Array:
  return (k / (k - 1.0)) * jnp.eye(k, dtype=dtype) - jnp.full((k, k), 1.0 / (k - 1.0), dtype)


def collapse_from_stats(x: jax.Array, labels: jax.Array, st: ClassStats) -> dict:
  """All NC metrics from class statistics; a dict of scalars (traceable)."""
  k = st.means.shape[0]
  n = x.shape[0]
  tr_w = jnp.sum(st.within * st.within) / n
  centred = st.means - st.global_mean            # [K, d]
  tr_b = jnp.sum(centred * centred) / k
  xc = x - st.global_mean
  tr_t = jnp.sum(xc * xc) / n
  # Papyan: tr(Σ_W Σ_B⁺)/K = tr(G⁺² A), G = C Cᵀ, A = C Σ_W Cᵀ (all K × K).
  g = jnp.matmul(centred, centred.T, precision=HIGHEST)
  p = jnp.matmul(st.within, centred.T, precision=HIGHEST)   # [N, K]
  a = jnp.matmul(p.T, p, precision=HIGHEST) / n
  gp = _pinv_sym(g)
  papyan = jnp.trace(jnp.matmul(jnp.matmul(gp, gp, precision=HIGHEST), a, precision=HIGHEST))
  # CDNV over class pairs, with exact differences of means.
  diff = st.means[:, None, :] - st.means[None, :, :]
  dist2 = jnp.sum(diff * diff, axis=-1)
  off = ~jnp.eye(k, dtype=bool)
  ratio = (st.class_var[:, None] + st.class_var[None, :]) / (2.0 * jnp.where(off, dist2, 1.0))
  cdnv = jnp.sum(jnp.where(off, ratio, 0.0)) / (k * (k - 1))
  # NC2 on normalised centred means.
  mbar = centred / jnp.linalg.norm(centred, axis=1, keepdims=True)
  gram = jnp.matmul(mbar, mbar.T, precision=HIGHEST)
  nc2 = jnp.linalg.norm(gram - _etf(k, x.dtype))
  nc2_orth = jnp.linalg.norm(gram - jnp.eye(k, dtype=x.dtype))
  return {
      "nc1": tr_w / tr_b, "nc1_papyan": papyan, "cdnv": cdnv,
      "nc2": nc2, "nc2_orthogonal": nc2_orth,
      "tr_w": tr_w, "tr_b": tr_b, "tr_t": tr_t,
      "tr_w_over_t": tr_w / tr_t, "tr_b_over_t": tr_b / tr_t,
  }


@functools.partial(jax.jit, static_argnames=("num_classes", "global_mean"))
def _collapse(x, labels, num_classes, global_mean):
  return collapse_from_stats(x, labels, class_stats(x, labels, num_classes, global_mean))


def check_labels(x, labels, num_classes: int, *, min_per_class: int = 2) -> None:
  """Validates rows, labels and class counts (host-side; raises ConfigError)."""
  if getattr(x, "ndim", None) != 2:
    raise ConfigError(f"x must have shape [N, d], got {getattr(x, 'shape', None)}; "
                      "flatten images with x.reshape(len(x), -1)")
  if num_classes is None or int(num_classes) < 2:
    raise ConfigError(f"num_classes must be ≥ 2 for collapse metrics, got {num_classes}")
  lab = np.asarray(labels)
  if lab.shape != (x.shape[0],):
    raise ConfigError(f"labels must have shape [N] = [{x.shape[0]}], got {lab.shape}")
  if not np.issubdtype(lab.dtype, np.integer):
    raise ConfigError(f"labels must be integers 0..K-1, got dtype {lab.dtype}")
  if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
    raise ConfigError(f"labels must lie in 0..{num_classes - 1}, found range "
                      f"[{lab.min()}, {lab.max()}]; relabel or raise num_classes")
  validate.finite(x, "x")
  counts = np.bincount(lab, minlength=num_classes)
  small = [c for c in range(num_classes) if counts[c] < min_per_class]
  if small:
    raise ConfigError(f"classes {small} have fewer than {min_per_class} points "
                      f"(counts {counts[small].tolist()}); collapse metrics need at least "
                      f"{min_per_class} per class: drop those classes or add data")


def collapse_metrics(x: jax.Array, labels: jax.Array, *, num_classes: int,
                     global_mean: str = "sample") -> dict:
  """Every collapse metric of rows ``x`` ``[N, d]`` in one pass.

  Returns:
    dict of scalars: ``nc1``, ``nc1_papyan``, ``cdnv``, ``nc2``, ``nc2_orthogonal``,
    ``tr_w``, ``tr_b``, ``tr_t``, ``tr_w_over_t``, ``tr_b_over_t`` (see
    :data:`CONVENTIONS`).
  """
  if not (isinstance(x, jax.core.Tracer) or isinstance(labels, jax.core.Tracer)):
    check_labels(x, labels, num_classes)  # host-side; skipped under jit
  if global_mean not in GLOBAL_MEANS:
    raise ConfigError(f"unknown global mean {global_mean!r}; choose one of {', '.join(GLOBAL_MEANS)}")
  return _collapse(x, jnp.asarray(labels), int(num_classes), global_mean)


def nc1(x: jax.Array, labels: jax.Array, *, num_classes: int, variant: str = "trace",
        global_mean: str = "sample") -> jax.Array:
  r"""Within-class variability collapse.

  Args:
    x: ``[N, d]``.
    labels: ``[N]`` integers in ``0..K-1``.
    num_classes: ``K``.
    variant: ``"trace"`` (paper, :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`),
      ``"papyan"`` (:math:`\mathrm{tr}(\Sigma_W\Sigma_B^+)/K`) or ``"cdnv"``.
    global_mean: ``"sample"`` or ``"class_means"``.

  Returns:
    scalar.
  """
  key = {"trace": "nc1", "papyan": "nc1_papyan", "cdnv": "cdnv"}.get(variant)
  if key is None:
    raise ConfigError(f"unknown NC1 variant {variant!r}; choose trace, papyan or cdnv")
  return collapse_metrics(x, labels, num_classes=num_classes, global_mean=global_mean)[key]


def nc2(x: jax.Array, labels: jax.Array, *, num_classes: int, frame: str = "etf",
        form: str = "frobenius", global_mean: str = "sample") -> jax.Array:
  r"""Convergence of the centred, normalised class means to a frame.

  Args:
    x: ``[N, d]``.
    labels: ``[N]`` integers.
    num_classes: ``K``.
    frame: ``"etf"`` (simplex ETF) or ``"orthogonal"`` (``I``).
    form: ``"frobenius"`` (paper, :math:`\|\bar\mu\bar\mu^\top-\Sigma\|_F`) or
      ``"mean_squared"`` (the authors' code: Frobenius² / K²).
    global_mean: ``"sample"`` or ``"class_means"``.

  Returns:
    scalar.
  """
  if frame not in ("etf", "orthogonal"):
    raise ConfigError(f"unknown NC2 frame {frame!r}; choose etf or orthogonal")
  if form not in ("frobenius", "mean_squared"):
    raise ConfigError(f"unknown NC2 form {form!r}; choose frobenius or mean_squared")
  m = collapse_metrics(x, labels, num_classes=num_classes, global_mean=global_mean)
  v = m["nc2"] if frame == "etf" else m["nc2_orthogonal"]
  return v if form == "frobenius" else (v / num_classes) ** 2


def covariance_traces(x, labels, *, num_classes: int, global_mean: str = "sample") -> dict:
  """``tr Σ_W``, ``tr Σ_B``, ``tr Σ_T`` and the ratios to ``tr Σ_T``."""
  m = collapse_metrics(x, labels, num_classes=num_classes, global_mean=global_mean)
  return {k: m[k] for k in ("tr_w", "tr_b", "tr_t", "tr_w_over_t", "tr_b_over_t")}


def gram_order(labels, *, num_classes: int, per_class: int | None = None) -> np.ndarray:
  """Row indices of a Gram picture: by class (stable), the first ``per_class`` of each."""
  lab = np.asarray(labels)
  order = np.argsort(lab, kind="stable")
  if per_class is not None:
    order = np.concatenate([order[lab[order] == c][:per_class] for c in range(num_classes)])
  return order


@jax.jit
def _gram_rows(x, order):
  # One program per shape: op by op, the picture compiled a dozen small programs per shape.
  xs = x[order] - jnp.mean(x, axis=0)
  xs = xs / jnp.linalg.norm(xs, axis=1, keepdims=True)
  return jnp.matmul(xs, xs.T, precision=HIGHEST)


def gram_picture(x, labels, *, num_classes: int, per_class: int | None = None):
  """Fig. 1's Gram matrix: rows centred by the sample mean, unit-normalised.

  Args:
    x: ``[N, d]``.
    labels: ``[N]`` integers.
    num_classes: ``K``.
    per_class: keep the first ``per_class`` rows of each class (``None``: all).

  Returns:
    ``(gram [m, m], labels [m])`` with rows ordered by class; collapsed data give
    +1 within a class and -1/(K-1) across classes.
  """
  order = gram_order(labels, num_classes=num_classes, per_class=per_class)
  return _gram_rows(jnp.asarray(x), jnp.asarray(order)), np.asarray(labels)[order]


def _same_shape(a, b):
  if np.shape(a) != np.shape(b):
    raise ConfigError(f"the two matrices must have the same shape, got {np.shape(a)} and "
                      f"{np.shape(b)}")


@jax.jit
def _pearson(a, b):
  a = a - jnp.mean(a)
  b = b - jnp.mean(b)
  return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def nfa_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pearson correlation of the entries of two matrices (each minus its mean entry).

  Used for the Neural Feature Ansatz: ``nfa_correlation(WᵀW, psd_sqrt(AGOP))``.
  """
  _same_shape(a, b)
  return _pearson(a, b)


@jax.jit
def _cosine(a, b):
  return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine of the angle between two matrices seen as vectors (ρ of Ansatz 3.1)."""
  _same_shape(a, b)
  return _cosine(a, b)


PSD_SQRT_METHODS = ("eigh", "newton_schulz")


def _newton_schulz_sqrt(m: jax.Array, iters: int) -> jax.Array:
  """Coupled Newton–Schulz square root of a symmetric ``m`` ``[d, d]`` (see :func:`psd_sqrt`)."""
  mm = functools.partial(jnp.matmul, precision=HIGHEST)
  fro = jnp.linalg.norm(m)
  fro = jnp.where(fro > 0, fro, 1.0)
  a = m / fro                          # entries in [-1, 1]: a @ a cannot overflow
  a2 = mm(a, a)
  c = jnp.sqrt(jnp.linalg.norm(a2))    # (Σ μ⁴)^{1/4} ≥ μ_max, from the product step 1 needs
  c = jnp.where(c > 0, c, 1.0)
  a, a2 = a / c, a2 / (c * c)
  eye = jnp.eye(m.shape[0], dtype=m.dtype)
  y, z = 1.5 * a - 0.5 * a2, 1.5 * eye - 0.5 * a   # step 1, where Z_0 = I
  if iters > 1:
    def step(_, yz):
      y, z = yz
      t = 1.5 * eye - 0.5 * mm(z, y)
      return mm(y, t), mm(t, z)

    y, z = jax.lax.fori_loop(0, iters - 2, step, (y, z))
    y = mm(y, 1.5 * eye - 0.5 * mm(z, y))           # last step: Z is no longer needed
  return 0.5 * (y + y.T) * jnp.sqrt(fro * c)


@functools.partial(jax.jit, static_argnames=("method", "iters"))
def psd_sqrt(m: jax.Array, *, method: str = "eigh", iters: int = 24) -> jax.Array:
  r"""Square root of a symmetric PSD matrix ``m`` ``[d, d]`` (symmetrised first).

  * ``"eigh"``: :math:`m = Q\,\mathrm{diag}(\lambda)\,Q^\top`, root
    :math:`Q\,\mathrm{diag}(\sqrt{\max(\lambda, 0)})\,Q^\top` (negative
    eigenvalues, from round-off, are clipped to 0).
  * ``"newton_schulz"``: matmuls only (``precision=HIGHEST``). With
    :math:`A = m/c`, :math:`Y_0 = A`, :math:`Z_0 = I`,

    .. math::
       T_k = \tfrac12(3I - Z_kY_k),\quad Y_{k+1} = Y_kT_k,\quad Z_{k+1} = T_kZ_k,

    :math:`Y_k \to A^{1/2}`, :math:`Z_k \to A^{-1/2}`; the root is
    :math:`\sqrt{c}\,Y_{\rm iters}`, symmetrised. The scale
    :math:`c = \|m^2\|_F^{1/2} = (\sum\lambda^4)^{1/4} \in [\lambda_{\max},
    d^{1/4}\lambda_{\max}]` puts the spectrum in :math:`[0, 1]` and is tighter than
    :math:`\|m\|_F`; :math:`m^2` is what step 1 needs anyway. Cost:
    ``3 iters - 3`` matmuls of :math:`2d^3` flops (step 1 needs only :math:`m^2`,
    the last step no :math:`Z`).

  Convergence: the iterates are polynomials in :math:`A`, so each eigenvalue
  :math:`\mu = \lambda/c` follows the scalar map :math:`x_{k+1} = \tfrac14 x_k(3-x_k)^2`,
  :math:`x_0 = \mu`, and the root's eigenvalue is :math:`\sqrt{\lambda x_k}`.
  Near 1 it converges quadratically; for :math:`\mu \ll 1`, :math:`x` grows only by
  :math:`9/4` a step. After ``k`` steps the relative error :math:`1 - \sqrt{x_k}` is
  ≤ 1e-2 for :math:`\mu \ge 4.4\,(4/9)^k` and ≤ 1e-6 for :math:`\mu \ge 17\,(4/9)^k`
  (``k = 24``: :math:`\mu \ge 1.6\cdot10^{-8}` and :math:`6\cdot10^{-8}`); an
  eigenvalue :math:`\mu \ll (4/9)^k` comes out as about :math:`\sqrt{c}\,\mu\,(3/2)^k`
  instead of :math:`\sqrt{c\mu}`. Round-off: :math:`\|Z_k\|` grows to
  :math:`\mu_{\min}^{-1/2}`, so the float32 error grows with the condition number.
  Measured in float32 at ``iters=24`` (``bench/sqrt.py``, ``d`` = 256 to 1024): a
  spectrum log-spaced in [1e-2, 1] gives eigh's errors (‖R² − m‖_F/‖m‖_F ≤ 2.4e-6,
  ‖R − m^{1/2}‖_F/‖m^{1/2}‖_F ≤ 1.5e-6); 10 eigenvalues in [0.1, 1] and the rest
  1e-6 give root errors 1.9e-4 to 5.6e-4 (eigh: 1.6e-4 to 2.8e-4) but residuals
  3.8e-4 to 1.2e-3 (eigh: ≤ 2e-6); Deep RFM's AGOPs on digits, root errors ≤ 6.4e-5
  (eigh: ≤ 7.4e-4).
  Negative eigenvalues are not clipped: :math:`-\nu` (after scaling) is harmless while
  :math:`\nu(9/4)^k \ll 1` and diverges beyond.

  Args:
    m: ``[d, d]`` symmetric PSD.
    method: ``"eigh"`` or ``"newton_schulz"``.
    iters: Newton–Schulz steps (static; ignored by ``"eigh"``).

  Returns:
    ``[d, d]`` symmetric PSD root.

  References:
    Higham, Functions of Matrices: Theory and Computation, SIAM 2008, §6.7.
  """
  m = 0.5 * (m + m.T)
  if method == "eigh":
    evals, evecs = jnp.linalg.eigh(m)
    return jnp.matmul(evecs * jnp.sqrt(jnp.maximum(evals, 0.0)), evecs.T, precision=HIGHEST)
  if method != "newton_schulz":
    raise ConfigError(f"unknown psd_sqrt method {method!r}; choose one of "
                      f"{', '.join(PSD_SQRT_METHODS)}")
  if int(iters) < 1:
    raise ConfigError(f"psd_sqrt needs iters ≥ 1 Newton–Schulz steps, got {iters}")
  return _newton_schulz_sqrt(m, int(iters))
