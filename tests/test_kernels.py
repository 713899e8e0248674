"""Kernels and KRR against float64 NumPy."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax.errors import ConfigError, SolveError


def _np_dist(x, z, m=None):
  m = np.eye(x.shape[1]) if m is None else m
  diff = x[:, None, :] - z[None, :, :]
  return np.sqrt(np.einsum("ijd,de,ije->ij", diff, m, diff))


@pytest.mark.parametrize("use_m", [False, True])
def test_kernels_match_numpy(x64, use_m):
  rng = np.random.default_rng(0)
  x, z = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
  a = rng.normal(size=(5, 5))
  m = a @ a.T if use_m else None
  dist = _np_dist(x, z, m)
  lap = dj.laplace_kernel(jnp.asarray(x), jnp.asarray(z), bandwidth=2.0,
                          M=None if m is None else jnp.asarray(m))
  gau = dj.gaussian_kernel(jnp.asarray(x), jnp.asarray(z), bandwidth=1.5,
                           M=None if m is None else jnp.asarray(m))
  chex.assert_shape(lap, (7, 4))
  np.testing.assert_allclose(lap, np.exp(-dist / 2.0), rtol=1e-12)
  np.testing.assert_allclose(gau, np.exp(-dist**2 / (2 * 1.5**2)), rtol=1e-12)


def test_kernel_float32_uses_full_precision():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 300)).astype(np.float32)
  z = rng.normal(size=(40, 300)).astype(np.float32)
  ref = np.exp(-_np_dist(x.astype(np.float64), z.astype(np.float64)) / 2.0)
  np.testing.assert_allclose(dj.laplace_kernel(x, z, bandwidth=2.0), ref, rtol=2e-5)


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan")])
def test_bad_bandwidth(bandwidth):
  x = np.ones((2, 2), np.float32)
  with pytest.raises(ConfigError, match="bandwidth must be a positive"):
    dj.laplace_kernel(x, x, bandwidth=bandwidth)


def test_krr_matches_numpy_solve(x64):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(30, 4))
  y = rng.normal(size=(30, 3))
  kmat = np.exp(-_np_dist(x, x) / 2.0)
  for ridge in (0.0, 0.1):
    alpha = dj.krr_fit(jnp.asarray(x), jnp.asarray(y), bandwidth=2.0, ridge=ridge)
    np.testing.assert_allclose(alpha, np.linalg.solve(kmat + ridge * np.eye(30), y), rtol=1e-8)
  xt = rng.normal(size=(5, 4))
  pred = dj.krr_predict(jnp.asarray(x), alpha, jnp.asarray(xt), bandwidth=2.0)
  np.testing.assert_allclose(pred, np.exp(-_np_dist(xt, x) / 2.0) @ np.asarray(alpha), rtol=1e-10)


def test_ridgeless_singular_solve_is_a_clear_error():
  x = np.ones((4, 3), np.float32)  # four identical rows: singular kernel matrix
  y = np.eye(4, dtype=np.float32)
  with pytest.raises(SolveError, match="singular.*--ridge"):
    dj.krr_fit(x, y, bandwidth=2.0, ridge=0.0)


def test_negative_ridge_rejected():
  x = np.eye(3, dtype=np.float32)
  with pytest.raises(ConfigError, match="ridge must be"):
    dj.krr_fit(x, x, bandwidth=2.0, ridge=-1.0)


def test_unknown_kernel():
  x = np.eye(3, dtype=np.float32)
  with pytest.raises(ConfigError, match="unknown kernel 'cauchy'.*laplace, gaussian"):
    dj.krr_fit(x, x, kernel="cauchy", bandwidth=2.0)


def test_safe_sqrt_and_laplace_slope_at_zero(x64):
  """sqrt's derivative is 1/(2√s) for s > 0 and 0 (not inf or NaN) at s = 0; so is the Laplace rule's."""
  from dnc_jax.rfm import kernels
  sq = jnp.asarray([0.0, 0.25, 4.0])
  _, dsqrt = jax.jvp(kernels.safe_sqrt, (sq,), (jnp.ones_like(sq),))
  np.testing.assert_allclose(dsqrt, [0.0, 1.0, 0.25], rtol=1e-15)
  _, dk = jax.jvp(lambda s: kernels.laplace_from_sq(s, 2.0), (sq,), (jnp.ones_like(sq),))
  r = np.sqrt([0.25, 4.0])
  np.testing.assert_allclose(dk, [0.0, *(-np.exp(-r / 2.0) / (4.0 * r))], rtol=1e-14)


@pytest.mark.parametrize("mode,tol", [("highest", 1e-5), ("tf32", 2e-3)])
def test_frame_distances_match_float64_in_every_matmul_precision(mode, tol):
  """Class columns in the distance GEMM: ‖q − x_j‖² against float64 NumPy (other centres too)."""
  from dnc_jax.rfm import kernels
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(4), 15)
  x = rng.normal(size=(4, 20))[labels] + 0.3 * rng.normal(size=(60, 20))
  q = rng.normal(size=(7, 20))
  frame = kernels.centred_frame(jnp.asarray(x, jnp.float32), jnp.asarray(labels), 4)
  centre = jnp.asarray([0, 1, 2, 3, 0, 1, 2])
  got = np.asarray(kernels.frame_sq_distances(frame, jnp.asarray(q, jnp.float32), centre,
                                              matmul_precision=mode))
  want = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * want.max())
