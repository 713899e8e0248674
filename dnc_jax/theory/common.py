r"""Pieces every theory check shares: 0/1 targets, NC1 of a Gram matrix, full-rank
synthetic data, geometric-rate fits and the checks of their arguments.

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
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
# Predictor kernels of the real-kernel comparison and of Proposition B.1.
KERNELS = ("laplace", "gaussian")



def check_classes(labels, num_classes: int, *, min_per_class: int = 1) -> np.ndarray:
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


def labels32(labels) -> jax.Array:
  """Labels as an int32 array (one dtype, so jitted code compiles once per shape)."""
  return jnp.asarray(np.asarray(labels), dtype=jnp.int32)


def positive(name: str, value, why: str) -> float:
  """``value`` as a float; a :class:`ConfigError` naming ``why`` unless it is > 0 and finite."""
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


def symmetrise(a: jax.Array) -> jax.Array:
  r""":math:`(A + A^\top)/2` of a square ``[N, N]`` matrix."""
  return 0.5 * (a + a.T)


def cosine_gram(g: jax.Array) -> jax.Array:
  """The Gram matrix ``[N, N]`` of the normalised rows, from the Gram matrix ``g``."""
  d = jnp.sqrt(jnp.clip(jnp.diag(g), jnp.finfo(g.dtype).tiny))
  return symmetrise(g / d[:, None] / d[None, :])


def psd_factor(g: jax.Array) -> jax.Array:
  """Rows ``r`` ``[N, N]`` with ``r rᵀ = g`` (negative eigenvalues clipped)."""
  w, v = jnp.linalg.eigh(symmetrise(g))
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
  positive("noise", noise, "the within-class noise (it makes the Gram matrix full rank)")
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
