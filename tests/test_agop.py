"""AGOP against closed forms in float64 NumPy; the kernel predictor's three implementations."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import dnc_jax as dj
from dnc_jax.errors import ConfigError
from dnc_jax.rfm import kernels, predictor
from dnc_jax.rfm.agop import agop_sum, kernel_predictor

IMPLEMENTATIONS = ("autodiff", "rules", "closed_form")


def _closed_form_kernel_agop(x, alpha, kernel, bandwidth, m=None, queries=None):
  """Σ_i J_iᵀJ_i / n with J_i = Σ_j α_j ∇_x k(x_j, x_i), written out by hand.

  ``queries=None``: the rows of ``x``, each one's own term dropped (j ≠ i).
  """
  n, d = x.shape
  mask_self = queries is None
  queries = x if queries is None else queries
  m = np.eye(d) if m is None else m
  total = np.zeros((d, d))
  for i, q in enumerate(queries):
    diff = q[None, :] - x                         # [n, d]
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
  return total / len(queries)


def _rel_err(got, want):
  return np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
@pytest.mark.parametrize("use_m", [False, True])
@pytest.mark.parametrize("use_queries", [False, True])
def test_implementations_match_numpy_and_each_other(x64, kernel, use_m, use_queries):
  """autodiff, rules and closed_form: the float64 NumPy AGOP, self term masked or queries."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 6))
  alpha = rng.normal(size=(40, 3))
  a = rng.normal(size=(6, 6))
  m = a @ a.T / 6 if use_m else None
  queries = rng.normal(size=(13, 6)) if use_queries else None
  want = _closed_form_kernel_agop(x, alpha, kernel, 1.7, m, queries)
  got = {impl: np.asarray(dj.kernel_agop(
      jnp.asarray(x), jnp.asarray(alpha), kernel=kernel, bandwidth=1.7,
      M=None if m is None else jnp.asarray(m), x=None if queries is None else jnp.asarray(queries),
      batch_size=9, implementation=impl)) for impl in IMPLEMENTATIONS}
  chex.assert_shape(list(got.values()), (6, 6))
  for impl in IMPLEMENTATIONS:
    assert _rel_err(got[impl], want) < 1e-10, impl
  np.testing.assert_allclose(got["autodiff"], got["rules"], rtol=1e-10, atol=1e-10 * np.abs(want).max())
  np.testing.assert_allclose(got["closed_form"], got["rules"], rtol=1e-10,
                             atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("use_frame", [False, True])
def test_closed_form_with_precomputed_distances_equals_without(x64, use_frame):
  """Distances passed in (as a layer's solve holds them, diagonal zeroed) give the same AGOP."""
  rng = np.random.default_rng(6)
  labels = np.repeat(np.arange(3), 9)
  x = jnp.asarray(rng.normal(size=(3, 5))[labels] + 0.3 * rng.normal(size=(27, 5)))
  alpha = jnp.asarray(rng.normal(size=(27, 3)))
  frame = kernels.centred_frame(x, jnp.asarray(labels), 3) if use_frame else None
  sq = (kernels.frame_sq_distances(frame, x, frame.labels) if use_frame
        else kernels.sq_distances(x, x))
  sq = jnp.where(jnp.eye(27, dtype=bool), 0.0, sq)
  fn = jax.jit(functools.partial(predictor.closed_form_agop_sum, kernel="laplace", bandwidth=2.0,
                                 frame=frame, batch_size=8))
  got = fn(x, alpha, sq_distances=sq)
  np.testing.assert_allclose(got, fn(x, alpha), rtol=1e-12)
  want = _closed_form_kernel_agop(np.asarray(x), np.asarray(alpha), "laplace", 2.0)
  assert _rel_err(got / 27, want) < 1e-10


def test_closed_form_frame_queries_match_numpy(x64):
  """Queries off the training rows: centred on their nearest class mean, no term dropped."""
  rng = np.random.default_rng(11)
  labels = np.repeat(np.arange(3), 8)
  means = rng.normal(size=(3, 5))
  x = means[labels] + 0.3 * rng.normal(size=(24, 5))
  q = means[rng.integers(0, 3, size=7)] + 0.3 * rng.normal(size=(7, 5))
  alpha = rng.normal(size=(24, 2))
  frame = kernels.centred_frame(jnp.asarray(x), jnp.asarray(labels), 3)
  fn = jax.jit(functools.partial(predictor.closed_form_agop_sum, kernel="gaussian", bandwidth=1.5,
                                 frame=frame, batch_size=4))
  got = fn(jnp.asarray(x), jnp.asarray(alpha), jnp.asarray(q)) / 7
  assert _rel_err(got, _closed_form_kernel_agop(x, alpha, "gaussian", 1.5, queries=q)) < 1e-10


def test_kernel_agop_reads_given_distances(x64):
  """kernel_agop(sq_distances=...) uses the matrix it is given (scaled distances: another AGOP)."""
  rng = np.random.default_rng(7)
  x, alpha = rng.normal(size=(10, 4)), rng.normal(size=(10, 2))
  q = rng.normal(size=(6, 4))
  sq = 4.0 * np.sum((q[:, None] - x[None]) ** 2, axis=-1)   # ‖2q − 2x‖², not ‖q − x‖²
  got = dj.kernel_agop(jnp.asarray(x), jnp.asarray(alpha), x=jnp.asarray(q), bandwidth=2.0,
                       implementation="closed_form", sq_distances=jnp.asarray(sq))
  # k(2q, 2x_j) has gradient 2 k'(‖2q − 2x_j‖) (2q − 2x_j)/‖·‖ in 2q: J = ½ J of 2q over 2x.
  want = _closed_form_kernel_agop(2 * x, alpha, "laplace", 2.0, queries=2 * q) / 4
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_kernel_agop_option_errors():
  x, alpha = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
  with pytest.raises(ConfigError, match="unknown implementation 'jvp'.*closed_form"):
    dj.kernel_agop(x, alpha, implementation="jvp")
  with pytest.raises(ConfigError, match="sq_distances is read by implementation='closed_form'"):
    dj.kernel_agop(x, alpha, sq_distances=np.zeros((4, 4), np.float32))
  with pytest.raises(ConfigError, match=r"sq_distances must have shape \[m, N\] = \[4, 4\]"):
    dj.kernel_agop(x, alpha, implementation="closed_form", sq_distances=np.zeros((4, 3), np.float32))


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


def _frame_agop(x, alpha, labels, k, batch_size, kernel="laplace", implementation="rules"):
  x = jnp.asarray(x)
  alpha = jnp.asarray(alpha, x.dtype)
  frame = kernels.centred_frame(x, jnp.asarray(labels), k)
  if implementation == "closed_form":
    fn = functools.partial(predictor.closed_form_agop_sum, kernel=kernel, bandwidth=2.0,
                           frame=frame, batch_size=batch_size)
    return np.asarray(jax.jit(lambda z: fn(z, alpha))(x)) / x.shape[0]
  f = kernel_predictor(x, alpha, kernel=kernel, bandwidth=2.0, frame=frame)
  return np.asarray(jax.jit(lambda z: agop_sum(f, z, batch_size=batch_size))(x)) / x.shape[0]


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
@pytest.mark.parametrize("implementation", ["rules", "closed_form"])
def test_centred_frame_agop_matches_closed_form(x64, kernel, implementation):
  """The Deep RFM path (class-centred distances) in float64, by rules and in closed form."""
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(3), 14)
  x = rng.normal(size=(3, 8))[labels] + 0.5 * rng.normal(size=(42, 8))
  alpha = rng.normal(size=(42, 3))
  got = _frame_agop(x, alpha, labels, 3, batch_size=10, kernel=kernel,
                    implementation=implementation)
  assert _rel_err(got, _closed_form_kernel_agop(x, alpha, kernel, 2.0)) < 1e-10


@pytest.mark.parametrize("implementation", ["rules", "closed_form"])
def test_centred_frame_agop_is_accurate_in_float32_for_collapsed_classes(implementation):
  """Classes 1e-4 wide around unit-norm means: float32 stays within 1e-3 of float64."""
  rng = np.random.default_rng(4)
  labels = np.repeat(np.arange(4), 25)
  means = rng.normal(size=(4, 32))
  means /= np.linalg.norm(means, axis=1, keepdims=True)
  x = means[labels] + 1e-4 * rng.normal(size=(100, 32)) / np.sqrt(32)
  alpha = rng.normal(size=(100, 4))
  want = _closed_form_kernel_agop(x, alpha, "laplace", 2.0)
  got = _frame_agop(x.astype(np.float32), alpha.astype(np.float32), labels, 4, batch_size=32,
                    implementation=implementation)
  assert got.dtype == np.float32
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-3


def _grad_args(rng):
  labels = np.repeat(np.arange(3), 6)
  x = jnp.asarray(rng.normal(size=(3, 5))[labels] + 0.4 * rng.normal(size=(18, 5)))
  return x, jnp.asarray(labels), jnp.asarray(rng.normal(size=(18, 2)))


def test_laplace_rule_matches_finite_differences(x64):
  sq = jnp.asarray(np.random.default_rng(8).uniform(0.05, 3.0, size=(7,)))
  check_grads(jax.jit(kernels.laplace_from_sq), (sq, jnp.asarray(1.3)), order=1, modes=["rev"])


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_contract_rule_matches_finite_differences(x64, kernel):
  """_contract's rule in sq, alpha and bandwidth (every term kept: keep = 1)."""
  rng = np.random.default_rng(9)
  sq = jnp.asarray(rng.uniform(0.05, 3.0, size=(8,)))
  alpha = jnp.asarray(rng.normal(size=(8, 3)))
  kfn = kernels.kernel_from_sq(kernel)

  def contract(s, a, b):
    return predictor._contract(s, a, b, jnp.ones_like(s), kfn)

  check_grads(jax.jit(contract), (sq, alpha, jnp.asarray(1.3)), order=1, modes=["rev"])


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_frame_predictor_rules_match_finite_differences(x64, kernel):
  """frame_row_sq_distances' and _contract's reverse rules, composed as the AGOP uses them.

  A query off the training rows (index n: no term masked) whose nearest class mean is
  not near a tie, so the function is smooth where it is differenced.
  """
  rng = np.random.default_rng(10)
  x, labels, alpha = _grad_args(rng)
  frame = kernels.centred_frame(x, labels, 3)
  f = kernel_predictor(x, alpha, kernel=kernel, bandwidth=1.5, frame=frame)
  q = frame.means[1] + 0.3 * jnp.asarray(rng.normal(size=(5,)))
  check_grads(jax.jit(lambda v: f(v, x.shape[0])), (q,), order=1, modes=["rev"])
  row_sq = predictor.frame_row_sq_distances(frame)
  onehot = jax.nn.one_hot(1, 3, dtype=q.dtype)
  check_grads(jax.jit(lambda v: row_sq(v, onehot)), (q,), order=1, modes=["rev"])
