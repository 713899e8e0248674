"""psd_sqrt by eigh and by Newton–Schulz against float64 NumPy and the scalar recurrence."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax import metrics
from dnc_jax.errors import ConfigError

NS = "newton_schulz"


def _psd(evals, seed=0):
  """``(A, A^{1/2}, Q)`` in float64 for ``A = Q diag(evals) Qᵀ``, ``Q`` random orthogonal."""
  d = len(evals)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return (q * evals) @ q.T, (q * np.sqrt(np.maximum(evals, 0.0))) @ q.T, q


def _rel(x, y):
  return np.linalg.norm(x - y) / np.linalg.norm(y)


def _errors(r, a, root=None):
  """``(‖R² − A‖_F/‖A‖_F, ‖R − A^{1/2}‖_F/‖A^{1/2}‖_F)`` in float64; ``A`` as rounded."""
  a = np.asarray(a, np.float64)
  root = _root(a) if root is None else root
  r = np.asarray(r, np.float64)
  return _rel(r @ r, a), _rel(r, root)


def _root(a):
  """Float64 NumPy square root of a symmetric ``a``, negative eigenvalues clipped."""
  evals, q = np.linalg.eigh(np.asarray(a, np.float64))
  return (q * np.sqrt(np.maximum(evals, 0.0))) @ q.T


def _scalar_map(mu, steps):
  """The Newton–Schulz map of one eigenvalue: ``x ← x (3 − x)² / 4`` from ``x = μ``."""
  x = np.array(mu, np.float64)
  for _ in range(steps):
    x = 0.25 * x * (3.0 - x) ** 2
  return x


@pytest.mark.parametrize("iters", [1, 2, 5, 12, 30])
def test_newton_schulz_eigenvalues_follow_the_scalar_map(x64, iters):
  # Iterates are polynomials in A: in exact arithmetic eigenvalue λ becomes
  # sqrt(λ x_k(λ/c)) with c = (Σλ⁴)^{1/4}; float64 keeps that to round-off.
  evals = np.concatenate([np.logspace(-7, 0, 40), [0.0, 0.0]])
  a, _, q = _psd(evals, seed=1)
  c = np.sum(evals**4) ** 0.25
  want = (q * np.sqrt(evals * _scalar_map(evals / c, iters))) @ q.T
  got = dj.psd_sqrt(jnp.asarray(a), method=NS, iters=iters)
  np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("steps", [8, 16, 24, 32])
def test_stated_convergence_rule(steps):
  # psd_sqrt's docstring: relative root error 1 − sqrt(x_k) ≤ 1e-2 for μ ≥ 4.4 (4/9)^k,
  # ≤ 1e-6 for μ ≥ 17 (4/9)^k; far below, the root eigenvalue is about μ (3/2)^k.
  floor = (4.0 / 9.0) ** steps
  mu = np.logspace(0, 6, 50) * floor
  mu = mu[mu <= 1.0]
  err = 1.0 - np.sqrt(_scalar_map(mu, steps))
  assert np.all(err[mu >= 4.4 * floor] <= 1e-2)
  assert np.all(err[mu >= 17.0 * floor] <= 1e-6)
  tiny = 1e-3 * floor
  np.testing.assert_allclose(np.sqrt(tiny * _scalar_map(tiny, steps)), tiny * 1.5**steps, rtol=1e-2)


@pytest.mark.parametrize("kappa, resid_tol, root_tol", [(1e1, 3e-6, 3e-6), (1e2, 6e-6, 5e-6),
                                                        (1e4, 3e-5, 2e-5)])
def test_newton_schulz_float32_well_conditioned(kappa, resid_tol, root_tol):
  # Spectrum log-spaced in [λ_max/κ, λ_max]; default iters (24) converge every
  # eigenvalue, so what is left is float32 round-off, growing with κ.
  a, _, _ = _psd(3.0 * np.logspace(-np.log10(kappa), 0, 128), seed=2)
  a32 = jnp.asarray(a, jnp.float32)
  resid, root = _errors(dj.psd_sqrt(a32, method=NS), a32)
  assert resid <= resid_tol and root <= root_tol, (resid, root)


def test_newton_schulz_float32_agop_like_spectrum():
  # K = 10 eigenvalues log-spaced in [0.1, 1], the other 118 at 1e-6 (rank-deficient
  # AGOP). With 24 steps the 1e-6 eigenvalues converge and ‖Z‖ ≈ 1e3 lifts the float32
  # errors to about 7e-5 (eigh: 1e-6, 1.3e-4; d = 1024: 1.2e-3, 5.6e-4). With 12 they
  # do not: their root is about 1e-6 · 1.5¹² · √c instead of 1e-3, a root error ≈ 5e-3.
  evals = np.concatenate([np.logspace(-1, 0, 10), np.full(118, 1e-6)])
  a, _, _ = _psd(evals, seed=3)
  a32 = jnp.asarray(a, jnp.float32)
  root = _root(a32)
  resid, err = _errors(dj.psd_sqrt(a32, method=NS), a32, root)
  assert resid <= 5e-4 and err <= 5e-4, (resid, err)
  resid12, err12 = _errors(dj.psd_sqrt(a32, method=NS, iters=12), a32, root)
  assert resid12 <= 1e-4 and 2e-3 <= err12 <= 3e-2, (resid12, err12)


def test_zero_rows_zero_matrix_and_tiny_negative_eigenvalues(x64):
  # Constant input pixels give an AGOP with zero rows: they stay exactly zero.
  a, _, _ = _psd(np.logspace(-3, 0, 6), seed=4)
  padded = np.zeros((8, 8))
  padded[1:7, 1:7] = a
  got = np.asarray(dj.psd_sqrt(jnp.asarray(padded), method=NS))
  assert np.all(got[0] == 0) and np.all(got[:, 7] == 0)
  for method in ("eigh", NS):
    np.testing.assert_array_equal(dj.psd_sqrt(jnp.zeros((5, 5)), method=method), 0.0)
  # -1e-10 · 2.25²⁴ ≈ 0.03 ≪ 1: still harmless (eigh clips it; the map moves it little).
  a, want, _ = _psd(np.array([1.0, 0.3, 1e-4, -1e-10]), seed=5)
  np.testing.assert_allclose(dj.psd_sqrt(jnp.asarray(a), method=NS), want, atol=1e-5)


def test_bad_method_or_iters():
  m = jnp.eye(3)
  with pytest.raises(ConfigError, match="unknown psd_sqrt method"):
    dj.psd_sqrt(m, method="schur")
  with pytest.raises(ConfigError, match="iters"):
    dj.psd_sqrt(m, method=NS, iters=0)


class JitAndNoJitTest(chex.TestCase):
  """Both methods give NumPy's root jitted and not jitted."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_both_methods_match_numpy(self):
    a, want, _ = _psd(np.logspace(-2, 0, 24), seed=6)
    a32 = jnp.asarray(a, jnp.float32)
    for method in ("eigh", NS):
      got = self.variant(lambda m, method=method: metrics.psd_sqrt.__wrapped__(
          m, method=method, iters=20))(a32)
      chex.assert_shape(got, (24, 24))
      np.testing.assert_allclose(got, want, atol=2e-6)
