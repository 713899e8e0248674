"""AGOP against closed forms in float64."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax.errors import ConfigError


def _closed_form_kernel_agop(x, alpha, kernel, bandwidth, m=None, mask_self=True):
  """Σ_i J_iᵀJ_i / n with J_i = Σ_{j≠i} α_j ∇_x k(x_j, x_i), written out by hand."""
  n, d = x.shape
  m = np.eye(d) if m is None else m
  total = np.zeros((d, d))
  for i in range(n):
    diff = x[i][None, :] - x                      # [n, d]
    dist = np.sqrt(np.einsum("jd,de,je->j", diff, m, diff))
    if kernel == "laplace":
      kv = np.exp(-dist / bandwidth)
      coef = -kv / (bandwidth * np.where(dist > 0, dist, 1.0))
    else:
      kv = np.exp(-dist**2 / (2 * bandwidth**2))
      coef = -kv / bandwidth**2
    if mask_self:
      coef[i] = 0.0
    grad = (coef[:, None] * diff) @ m              # [n, d] rows ∇_x k(x_j, x)
    jac = alpha.T @ grad                           # [K, d]
    total += jac.T @ jac
  return total / n


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
@pytest.mark.parametrize("use_m", [False, True])
def test_kernel_agop_matches_closed_form(x64, kernel, use_m):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 6))
  alpha = rng.normal(size=(40, 3))
  a = rng.normal(size=(6, 6))
  m = a @ a.T / 6 if use_m else None
  got = dj.kernel_agop(jnp.asarray(x), jnp.asarray(alpha), kernel=kernel, bandwidth=1.7,
                       M=None if m is None else jnp.asarray(m), batch_size=9)
  want = _closed_form_kernel_agop(x, alpha, kernel, 1.7, m)
  chex.assert_shape(got, (6, 6))
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-10


def test_integer_bandwidth_is_accepted(x64):
  rng = np.random.default_rng(5)
  x, alpha = rng.normal(size=(15, 3)), rng.normal(size=(15, 2))
  got = dj.kernel_agop(jnp.asarray(x), jnp.asarray(alpha), bandwidth=3)
  np.testing.assert_allclose(got, _closed_form_kernel_agop(x, alpha, "laplace", 3.0), rtol=1e-10)


def test_self_term_is_masked_by_index(x64):
  """At a training point the own term adds nothing, even though its distance is 0."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 4))
  alpha = rng.normal(size=(12, 2))
  got = dj.kernel_agop(jnp.asarray(x), jnp.asarray(alpha), bandwidth=2.0)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, _closed_form_kernel_agop(x, alpha, "laplace", 2.0), rtol=1e-10)
  # Masking by index, not distance: a second copy of a point still contributes 0 gradient
  # from the coincident copy (defined 0), but the other points' terms are kept.
  xd = np.concatenate([x, x[:1]])
  ad = np.concatenate([alpha, alpha[:1]])
  got_dup = dj.kernel_agop(jnp.asarray(xd), jnp.asarray(ad), bandwidth=2.0)
  assert np.all(np.isfinite(got_dup))


def test_self_mask_is_by_index_not_distance(x64):
  """Points 3e-4 apart (depth-10 scale) keep their mutual terms; only j = i is dropped."""
  rng = np.random.default_rng(2)
  centre = rng.normal(size=(1, 16))
  x = centre + 3e-4 * rng.normal(size=(20, 16)) / 4
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  alpha = rng.normal(size=(20, 2))
  got = np.asarray(dj.kernel_agop(jnp.asarray(x), jnp.asarray(alpha), bandwidth=2.0))
  want = _closed_form_kernel_agop(x, alpha, "laplace", 2.0)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6
  # A distance threshold of 1e-3 would have removed every term: M = 0.
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  assert d[~np.eye(20, dtype=bool)].max() < 1e-3 and np.linalg.norm(want) > 1.0


def test_agop_of_linear_map_is_wtw(x64):
  rng = np.random.default_rng(3)
  w = rng.normal(size=(4, 7))
  fn = functools.partial(jnp.matmul, jnp.asarray(w))
  x = jnp.asarray(rng.normal(size=(11, 7)))
  for bs in (None, 1, 4, 11):
    np.testing.assert_allclose(dj.agop(fn, x, batch_size=bs), w.T @ w, rtol=1e-12)


def test_agop_of_nonlinear_function_matches_numpy(x64):
  rng = np.random.default_rng(4)
  w = rng.normal(size=(3, 5))
  x = rng.normal(size=(9, 5))

  def fn(v):
    return jnp.tanh(jnp.asarray(w) @ v)

  want = np.zeros((5, 5))
  for xi in x:
    jac = (1 - np.tanh(w @ xi) ** 2)[:, None] * w
    want += jac.T @ jac
  np.testing.assert_allclose(dj.agop(fn, jnp.asarray(x), batch_size=4), want / 9, rtol=1e-12)


def test_agop_rejects_a_single_vector():
  with pytest.raises(ConfigError, match=r"rows of shape \[n, d\]"):
    dj.agop(jnp.sin, jnp.ones((5,)))


def _frame_agop(x, alpha, labels, k, batch_size, kernel="laplace"):
  from dnc_jax.rfm import kernels
  from dnc_jax.rfm.agop import agop_sum, kernel_predictor
  x = jnp.asarray(x)
  frame = kernels.centred_frame(x, jnp.asarray(labels), k)
  f = kernel_predictor(x, jnp.asarray(alpha, x.dtype), kernel=kernel, bandwidth=2.0,
                       frame=frame)
  return np.asarray(jax.jit(lambda z: agop_sum(f, z, batch_size=batch_size))(x)) / x.shape[0]


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_centred_frame_agop_matches_closed_form(x64, kernel):
  """The Deep RFM path (class-centred distances, hand-written reverse rules) in float64."""
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(3), 14)
  x = rng.normal(size=(3, 8))[labels] + 0.5 * rng.normal(size=(42, 8))
  alpha = rng.normal(size=(42, 3))
  got = _frame_agop(x, alpha, labels, 3, batch_size=10, kernel=kernel)
  want = _closed_form_kernel_agop(x, alpha, kernel, 2.0)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-10


def test_centred_frame_agop_is_accurate_in_float32_for_collapsed_classes():
  """Classes 1e-4 wide around unit-norm means: float32 stays within 1e-3 of float64."""
  rng = np.random.default_rng(4)
  labels = np.repeat(np.arange(4), 25)
  means = rng.normal(size=(4, 32))
  means /= np.linalg.norm(means, axis=1, keepdims=True)
  x = means[labels] + 1e-4 * rng.normal(size=(100, 32)) / np.sqrt(32)
  alpha = rng.normal(size=(100, 4))
  want = _closed_form_kernel_agop(x, alpha, "laplace", 2.0)
  got = _frame_agop(x.astype(np.float32), alpha.astype(np.float32), labels, 4, batch_size=32)
  assert got.dtype == np.float32
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-3
