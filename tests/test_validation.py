"""Bad input at the public entry points: one clear message each, before any work."""
import functools

import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax.errors import ConfigError

X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
NAN = X.copy()
NAN[2, 1] = np.nan
LAB = np.array([0, 0, 1, 1, 2, 2], np.int32)


@pytest.mark.parametrize("call, match", [
    (lambda: dj.laplace_kernel(X, X[:, :2], bandwidth=1.0), r"z has 2 features per row but 3"),
    (lambda: dj.laplace_kernel(X[0], X, bandwidth=1.0), r"x must have shape \[n, d\]"),
    (lambda: dj.gaussian_kernel(NAN, X, bandwidth=1.0), r"x contains NaN or Inf"),
    (lambda: dj.laplace_kernel(X, X, bandwidth=1.0, M=np.eye(2, dtype=np.float32)),
     r"M must be a square matrix of shape \[3, 3\]"),
    (lambda: dj.laplace_kernel(X.astype(np.int32), X, bandwidth=1.0), r"x must be floating point"),
    (lambda: dj.krr_fit(X, np.ones((5, 2), np.float32), bandwidth=1.0), r"y must have shape \[n, K\] = \[6, K\]"),
    (lambda: dj.krr_fit(NAN, np.ones((6, 2), np.float32), bandwidth=1.0), r"x contains NaN"),
    (lambda: dj.krr_predict(X, np.ones((6, 2), np.float32), X[:, :1], bandwidth=1.0),
     r"x has 1 features per row but 3"),
    (lambda: dj.kernel_agop(X, np.ones((4, 2), np.float32), bandwidth=1.0),
     r"alpha must have shape \[n, K\] with n = 6"),
    (lambda: dj.kernel_agop(NAN, np.ones((6, 2), np.float32), bandwidth=1.0), r"x_train contains NaN"),
    (lambda: dj.agop(jnp.sin, NAN), r"x contains NaN"),
    (lambda: dj.agop(jnp.sin, X, batch_size=0), r"batch_size must be ≥ 1"),
    (lambda: dj.nc1(NAN, LAB, num_classes=3), r"x contains NaN or Inf"),
    (lambda: dj.nc1(X, LAB, num_classes=3, variant="median"), r"unknown NC1 variant 'median'"),
    (lambda: dj.nc2(X, LAB, num_classes=3, frame="square"), r"unknown NC2 frame 'square'"),
    (lambda: dj.nc1(X, LAB, num_classes=3, global_mean="median"), r"unknown global mean 'median'"),
    (lambda: dj.nfa_correlation(np.eye(3), np.eye(4)), r"same shape, got \(3, 3\) and \(4, 4\)"),
    (lambda: dj.deep_rfm(X, LAB, dj.preset_config(depth=1), key=None, x_test=X[:, :2],
                         labels_test=LAB), r"x_test must have shape \[n_test, 3\]"),
])
def test_clear_errors(call, match):
  with pytest.raises(ConfigError, match=match):
    call()


def test_checks_are_skipped_under_jit():
  import jax
  f = jax.jit(lambda a: dj.laplace_kernel(a, a, bandwidth=2.0))
  assert f(X).shape == (6, 6)


def test_metrics_work_under_jit():
  import jax
  f = jax.jit(lambda a, l: dj.collapse_metrics(a, l, num_classes=3)["nc1"])
  np.testing.assert_allclose(f(X, LAB), dj.nc1(X, LAB, num_classes=3), rtol=1e-6)
