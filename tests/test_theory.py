"""Tests of dnc_jax.theory against closed forms and independent float64 NumPy code."""
import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from dnc_jax import theory as th
from dnc_jax.errors import ConfigError
from dnc_jax.theory import linearised_rfm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _labels(sizes):
  return np.repeat(np.arange(len(sizes)), sizes)


def _data(sizes, dim, seed=0, noise=1.0):
  with jax.enable_x64(True):
    x, lab = th.make_full_rank_data(jax.random.key(seed), class_sizes=sizes, dim=dim, noise=noise)
  return np.asarray(x), np.asarray(lab)


# ---------------------------------------------------------------------------
# Independent NumPy references.


def np_map(g, y, lambda_hat, lambda_map, kappa):
  """One layer of Theorem 5.3's map, written from the AGOP definition.

  With rows R (R Rᵀ = g), the linear predictor f(x) = αᵀ R x has the Jacobian αᵀ R at
  every sample, so the AGOP (mean over samples) is M = Rᵀ α αᵀ R and the new Gram
  matrix is R M Rᵀ / κ.
  """
  w, v = np.linalg.eigh(g)
  r = v * np.sqrt(np.clip(w, 0, None))
  alpha = np.linalg.solve(g + lambda_hat * np.eye(len(g)), y)
  m = r.T @ alpha @ alpha.T @ r
  gt = r @ m @ r.T / kappa
  gt = 0.5 * (gt + gt.T)
  return gt, gt + lambda_map * np.eye(len(g))


def np_nc1_rows(x, lab):
  k = lab.max() + 1
  mu = np.stack([x[lab == c].mean(0) for c in range(k)])
  mg = x.mean(0)
  tw = sum(((x[lab == c] - mu[c]) ** 2).sum() for c in range(k)) / len(x)
  tb = ((mu - mg) ** 2).sum() / k
  return tw / tb


# ---------------------------------------------------------------------------
# Helpers.


def test_collapse_target_and_gram_nc1(x64):
  lab = np.array([0, 1, 0, 2, 1, 1, 2])
  t = np.asarray(th.collapse_target(jnp.asarray(lab), num_classes=3))
  np.testing.assert_array_equal(t, (lab[:, None] == lab[None, :]).astype(float))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 5)) + 2.0 * np.eye(3)[lab] @ rng.normal(size=(3, 5))
  got = float(th.gram_nc1(jnp.asarray(x @ x.T), jnp.asarray(lab), num_classes=3))
  np.testing.assert_allclose(got, np_nc1_rows(x, lab), rtol=1e-12)


def test_fit_geometric_rate_recovers_rate():
  v = 3.0 * 0.37 ** np.arange(12)
  v[9:] = 1e-20  # round-off tail is ignored
  rate, pts = th.fit_geometric_rate(v, noise_floor=1e-15)
  assert pts == 8 and abs(rate - 0.37) < 1e-12


def test_make_full_rank_data_assumptions(x64):
  x, lab = _data((3, 4, 5), 16)
  chex.assert_shape(x, (12, 16))
  np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
  assert np.linalg.eigvalsh(x @ x.T)[0] > 1e-3
  with pytest.raises(ConfigError, match="Assumption 5.1"):
    th.make_full_rank_data(jax.random.key(0), class_sizes=(3, 4, 5), dim=11)
  with pytest.raises(ConfigError, match="K >= 2"):
    th.make_full_rank_data(jax.random.key(0), class_sizes=(6,), dim=11)


# ---------------------------------------------------------------------------
# Theorem 5.3.


def test_layer_map_matches_agop_definition(x64):
  x, lab = _data((4, 5, 3), 16)
  y = np.eye(3)[lab]
  lh, lm, kap = 0.05, 0.7, 0.93
  it = th.linearised_deep_rfm(jnp.asarray(x @ x.T), jnp.asarray(lab), num_classes=3,
                              lambda_hat=lh, lambda_map=lm, kappa=kap, num_layers=2)
  chex.assert_shape(it.gram_tilde, (2, 12, 12))
  # the AGOP of the predictor computed by autodiff on the original rows
  alpha = np.linalg.solve(x @ x.T + lh * np.eye(12), y)
  f = lambda z: jnp.asarray(alpha).T @ (jnp.asarray(x) @ z)  # noqa: E731
  jac = jax.vmap(jax.jacrev(f))(jnp.asarray(x))                # [N, K, d]
  m = np.asarray(jnp.einsum("nkd,nke->de", jac, jac)) / 12  # mean over the 12 samples
  np.testing.assert_allclose(np.asarray(it.gram_tilde[0]), x @ m @ x.T / kap, rtol=1e-10,
                             atol=1e-12)
  # later layers against the NumPy map
  g = x @ x.T
  for layer in range(2):
    gt, g = np_map(g, y, lh, lm, kap)
    np.testing.assert_allclose(np.asarray(it.gram_tilde[layer]), gt, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(float(it.gram_error[layer]),
                               np.linalg.norm(gt - y @ y.T), rtol=1e-9)
    np.testing.assert_allclose(float(it.nc1[layer]), np_nc1_rows(_factor(gt), lab), rtol=1e-6,
                               atol=1e-14)


def _factor(g):
  w, v = np.linalg.eigh(g)
  return v * np.sqrt(np.clip(w, 0, None))


def _np_jacobian_radius(sizes, lh, lm, kap):
  """Spectral radius of the symmetrised map's Jacobian at its fixed point, by finite
  differences on a basis of symmetric matrices (independent of the closed form)."""
  lab = _labels(sizes)
  y = np.eye(len(sizes))[lab]
  n = len(lab)
  g = np.eye(n) * lm + y @ y.T
  for _ in range(200):  # converge to the fixed point
    _, g = np_map(g, y, lh, lm, kap)
  iu = np.triu_indices(n)
  basis = []
  for i, j in zip(*iu):
    e = np.zeros((n, n))
    e[i, j] = e[j, i] = 1.0
    basis.append(e)
  h = 1e-6
  base = np_map(g, y, lh, lm, kap)[1]
  cols = [((np_map(g + h * e, y, lh, lm, kap)[1] - np_map(g - h * e, y, lh, lm, kap)[1])
           / (2 * h))[iu] for e in basis]
  jac = np.stack(cols, axis=1)
  del base
  return np.max(np.abs(np.linalg.eigvals(jac)))


@pytest.mark.parametrize("sizes,lh,lm,kap", [((3, 3), 0.05, 1.0, 0.99), ((2, 3, 4), 0.4, 0.5, 0.8),
                                             ((3, 5), 1.0, 2.0, 0.7)])
def test_local_rate_closed_form_vs_finite_difference_jacobian(sizes, lh, lm, kap):
  got = th.local_rate(sizes, lambda_hat=lh, lambda_map=lm, kappa=kap)
  np.testing.assert_allclose(got, _np_jacobian_radius(sizes, lh, lm, kap), rtol=1e-5)


def test_fixed_point_scales_and_floor(x64):
  x, lab = _data((6, 8, 10), 30)
  r = th.check_theorem_5_3(x, lab, num_classes=3, lambda_hat=0.02, lambda_map=1.0,
                           num_layers=20, kappa="paper")
  kap = 1 - 2 * 0.02 * 2.0
  assert r.kappa == pytest.approx(kap, abs=1e-15)
  n = np.array([6.0, 8.0, 10.0])
  s = r.fixed_point_scales
  # s solves s = kappa^-1 (1 - lh/(s n + lm + lh))^2
  np.testing.assert_allclose(s, (1 - 0.02 / (s * n + 1.02)) ** 2 / kap, rtol=1e-14)
  np.testing.assert_allclose(r.floor, np.sqrt(np.sum(((s - 1) * n) ** 2)), rtol=1e-8)
  # the paper's kappa leaves a first-order floor: far above (lambda_hat/lambda_map)^2
  assert r.floor > 100 * r.floor_order * np.sqrt(np.sum(n ** 2))


def test_fixed_point_kappa_balanced_collapses_exactly(x64):
  x, lab = _data((8, 8, 8), 30)
  r = th.check_theorem_5_3(x, lab, num_classes=3, lambda_hat=0.01, lambda_map=1.0,
                           num_layers=20, kappa="fixed_point")
  assert r.kappa == pytest.approx((9.0 / 9.01) ** 2, rel=1e-14)
  assert r.floor < 1e-12 * np.sqrt(3 * 64)
  assert r.floor_predicted < 1e-12
  assert r.nc1[-1] < 1e-12


def test_rate_geometric_under_condition_and_grows_with_ratio(x64):
  x, lab = _data((8, 8, 8), 30, seed=1)
  ratios = [0.001, 0.004, 0.016, 0.064, 0.25, 1.0]
  sw = th.sweep_theorem_5_3(x, lab, num_classes=3, ratios=ratios, lambda_maps=[1.0],
                            num_layers=20)
  chex.assert_shape(sw.fitted_rate, (2, 1, 6))
  r = np.asarray(ratios)
  # A cell is NaN exactly where its kappa is <= 0: the paper's 1 - 2 lambda_hat (1 + 1/lambda_map)
  # = 1 - 4r here (the first four ratios), never for the fixed-point kappa.
  defined = {"paper": 1.0 - 4.0 * r > 0.0, "fixed_point": np.ones(r.size, bool)}
  assert defined["paper"].sum() == 4
  for i, rule in enumerate(sw.kappa_rules):
    valid = np.isfinite(sw.fitted_rate[i, 0])
    np.testing.assert_array_equal(valid, defined[rule], err_msg=rule)
    np.testing.assert_array_equal(np.isfinite(sw.local_rate[i, 0]), defined[rule], err_msg=rule)
    fitted = sw.fitted_rate[i, 0][valid]
    # the theorem's condition (C = 1) holds for the smallest ratios, and there the
    # error falls geometrically
    cond = sw.condition_holds[i, 0][valid]
    assert cond[:2].all(), rule
    assert np.all(fitted[cond] < 0.05), rule
    assert np.all(fitted < 1.0), rule
    # the rate grows with the ratio and matches the Jacobian's closed form
    assert np.all(np.diff(fitted) > 0), rule
    np.testing.assert_allclose(fitted, sw.local_rate[i, 0][valid], rtol=0.03)
  # rate ~ r/(1+r) for n >> lambda_map: a function of the ratio
  np.testing.assert_allclose(sw.local_rate[1, 0], r / (1 + r), rtol=0.15)


def test_rate_depends_on_ratio_not_scale(x64):
  rates = [th.local_rate((20, 20), lambda_hat=0.05 * lm, lambda_map=lm,
                         kappa=th.kappa_value(0.05 * lm, lm, rule="fixed_point", class_size=20))
           for lm in (0.25, 1.0, 4.0)]
  assert max(rates) / min(rates) < 1.25
  other = th.local_rate((20, 20), lambda_hat=0.5, lambda_map=1.0,
                        kappa=th.kappa_value(0.5, 1.0, rule="fixed_point", class_size=20))
  assert other > 5 * max(rates)


def test_theorem_5_3_invalid_parameters(x64):
  x, lab = _data((4, 4, 4), 16)
  with pytest.raises(ConfigError, match="lambda_hat"):
    th.check_theorem_5_3(x, lab, num_classes=3, lambda_hat=0.0, lambda_map=1.0)
  with pytest.raises(ConfigError, match="lambda_map"):
    th.check_theorem_5_3(x, lab, num_classes=3, lambda_hat=0.01, lambda_map=-1.0)
  with pytest.raises(ConfigError, match="Assumption 5.1"):
    th.check_theorem_5_3(x[:, :10], lab, num_classes=3, lambda_hat=0.01, lambda_map=1.0)
  with pytest.raises(ConfigError, match="K >= 2"):
    th.check_theorem_5_3(x, np.zeros(12, int), num_classes=1, lambda_hat=0.01, lambda_map=1.0)
  with pytest.raises(ConfigError, match="kappa"):
    th.check_theorem_5_3(x, lab, num_classes=3, lambda_hat=0.3, lambda_map=1.0, kappa="paper")
  dup = np.concatenate([x[:4], x[:4], x[4:8]])
  with pytest.raises(ConfigError, match="Assumption 5.2"):
    th.check_theorem_5_3(dup, lab, num_classes=3, lambda_hat=0.01, lambda_map=1.0)


def test_kernel_linearisation_coefficients():
  for kind, fn in [("laplace", lambda r: np.exp(-np.sqrt(2 - 2 * r) / 1.5)),
                   ("gaussian", lambda r: np.exp(-(2 - 2 * r) / (2 * 1.5 ** 2))),
                   ("relu", lambda r: (np.sqrt(1 - r * r) + (np.pi - np.arccos(r)) * r) / np.pi)]:
    c0, c1, c2 = th.kernel_linearisation(kind, bandwidth=1.5)
    h = 1e-6
    np.testing.assert_allclose(c0, fn(0.0), rtol=1e-12)
    np.testing.assert_allclose(c1, (fn(h) - fn(-h)) / (2 * h), rtol=1e-7)
    np.testing.assert_allclose(c0 + c1 + c2, fn(1.0), rtol=1e-12)


def test_nonlinear_layer_agop_matches_numpy(x64):
  """Laplace KRR + AGOP (self term masked by index) against an explicit NumPy loop."""
  rng = np.random.default_rng(3)
  n, p = 24, 24
  lab = _labels((8, 8, 8))
  x = rng.normal(size=(n, p)) + 1.5 * np.eye(3)[lab] @ rng.normal(size=(3, p))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y = np.eye(3)[lab]
  bw = 2.0
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  k = np.exp(-d / bw)
  alpha = np.linalg.solve(k, y)
  m = np.zeros((p, p))
  for i in range(n):
    jac = np.zeros((3, p))
    for j in range(n):
      if j != i:
        jac += np.outer(alpha[j], -k[i, j] / (bw * d[i, j]) * (x[i] - x[j]))
    m += jac.T @ jac / n
  w, v = np.linalg.eigh(m)
  xt = x @ (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  _, g_tilde, res_p, _, nc1 = linearised_rfm._nonlinear_layer(
      jnp.asarray(x), jnp.asarray(lab, dtype=jnp.int32), jax.random.key(0), 0.0, width=256,
      bandwidth=bw, num_classes=3, kind="laplace")
  np.testing.assert_allclose(np.asarray(g_tilde), xt @ xt.T, rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(float(nc1), np_nc1_rows(xt, lab), rtol=1e-7)
  c0, c1, c2 = th.kernel_linearisation("laplace", bandwidth=bw)
  lin = c0 + c1 * x @ x.T + c2 * np.eye(n)
  np.testing.assert_allclose(float(res_p), np.linalg.norm(k - lin) / np.linalg.norm(k), rtol=1e-10)


def test_compare_with_nonlinear_kernels_runs(x64):
  x, lab = _data((8, 8, 8), 30)
  c = th.compare_with_nonlinear_kernels(x, lab, num_classes=3, key=jax.random.key(0),
                                        num_layers=3, width=256)
  for v in (c.nc1_nonlinear, c.nc1_linearised_kernels, c.nc1_theorem):
    chex.assert_shape(v, (3,))
    assert np.all(np.isfinite(v)) and np.all(v < 1.0)
  assert c.nc1_nonlinear[-1] < c.nc1_nonlinear[0]
  assert c.lambda_map_effective == pytest.approx(1 - 2 / np.pi, rel=1e-12)


# ---------------------------------------------------------------------------
# Lemma C.2.


@pytest.mark.parametrize("sizes", [(4, 4, 4), (7, 7), (3, 6, 9, 2)])
@pytest.mark.parametrize("lambda_map", [0.1, 1.0, 5.0])
def test_lemma_c2_closed_form(x64, sizes, lambda_map):
  lab = _labels(sizes)
  y = np.eye(len(sizes))[lab]
  a = y @ y.T + lambda_map * np.eye(len(lab))
  ref = np.linalg.inv(a)
  got = np.asarray(th.lemma_c2_inverse(jnp.asarray(lab), num_classes=len(sizes),
                                       lambda_map=lambda_map))
  assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-10
  if len(set(sizes)) == 1:  # the paper's balanced formula, written out
    n = sizes[0]
    paper = np.eye(len(lab)) / lambda_map - y @ y.T / (lambda_map * (lambda_map + n))
    assert np.linalg.norm(paper - ref) / np.linalg.norm(ref) < 1e-10
    # a wrong class size in the formula is caught by the tolerance
    wrong = np.eye(len(lab)) / lambda_map - y @ y.T / (lambda_map * (lambda_map + n + 1))
    assert np.linalg.norm(wrong - ref) / np.linalg.norm(ref) > 1e-3


def test_check_lemma_c2_fixed_point(x64):
  r = th.check_lemma_c2(_labels((4, 4, 4)), num_classes=3, lambda_map=1.0, lambda_hat=0.02)
  assert r.relative_error < 1e-10 and r.inverse_residual < 1e-10
  assert r.fixed_point_residual_fixed_point < 1e-12
  np.testing.assert_allclose(r.mapped_scale_fixed_point, 1.0, rtol=1e-13)
  kap = 1 - 2 * 0.02 * 2.0
  np.testing.assert_allclose(r.mapped_scale_paper, (5.0 / 5.02) ** 2 / kap, rtol=1e-13)
  assert r.fixed_point_residual_paper > 1e-2
  with pytest.raises(ConfigError, match="lambda_map"):
    th.check_lemma_c2(_labels((2, 2)), num_classes=2, lambda_map=0.0, lambda_hat=0.1)


# ---------------------------------------------------------------------------
# Theorem 5.4 and Proposition B.1.


def test_kernel_objective_matches_numpy(x64):
  lab = _labels((2, 4, 6))
  y = np.eye(3)[lab]
  k = np.asarray(th.random_feasible_kernel(jax.random.key(1), 12, dtype=jnp.float64))
  ref = sum(y[:, c] @ np.linalg.solve(k + 0.7 * np.eye(12), k @ y[:, c]) for c in range(3))
  got = float(th.kernel_objective(jnp.asarray(k), jnp.asarray(lab), num_classes=3, mu=0.7))
  np.testing.assert_allclose(got, ref, rtol=1e-12)
  at = float(th.kernel_objective(jnp.asarray(y @ y.T), jnp.asarray(lab), num_classes=3, mu=0.7))
  np.testing.assert_allclose(at, th.objective_at_target((2, 4, 6), mu=0.7), rtol=1e-12)
  np.testing.assert_allclose(th.objective_at_target((4, 4, 4), mu=1.0), 3 * 16 / 5, rtol=1e-15)


def test_projection_is_the_projection(x64):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(12, 12))
  z = z + z.T
  p = np.asarray(th.make_feasible(th.project_feasible(jnp.asarray(z), num_iters=2000)))
  np.testing.assert_allclose(np.diag(p), 1.0, rtol=1e-14)
  assert p.min() >= 0 and np.linalg.eigvalsh(p)[0] > -1e-12
  # variational inequality <z - P(z), k - P(z)> <= 0 for feasible k
  for s in range(20):
    k = np.asarray(th.random_feasible_kernel(jax.random.key(s), 12, dtype=jnp.float64))
    assert np.sum((z - p) * (k - p)) < 1e-6
  # feasible points are fixed
  k = np.asarray(th.random_feasible_kernel(jax.random.key(99), 12, dtype=jnp.float64))
  np.testing.assert_allclose(np.asarray(th.project_feasible(jnp.asarray(k))), k, atol=1e-12)


def test_theorem_5_4_optimiser_reaches_collapse(x64):
  lab = _labels((4, 4, 4))
  mu = 1.0
  r = th.check_theorem_5_4(lab, num_classes=3, mu=mu, key=jax.random.key(7), num_starts=3,
                           num_steps=120, projection_iters=60, step_size=2.0, num_random=300)
  bound = 3 * 4 ** 2 / (4 + mu)
  assert r.objective_at_target == pytest.approx(bound, rel=1e-15)
  assert np.all(r.relative_distance < 1e-3)
  assert np.all(r.start_objectives < bound - 1.0)  # the starts were far away
  np.testing.assert_allclose(r.objectives, bound, rtol=1e-8)
  # never above the bound: finals, random feasible kernels and every iterate
  assert np.all(r.objectives <= bound * (1 + 1e-12))
  assert np.all(r.random_objectives < bound)
  assert np.all(r.history <= bound * (1 + 1e-10))
  assert r.min_eigenvalue > -1e-12 and r.min_entry >= 0.0
  with pytest.raises(ConfigError, match="μ"):
    th.check_theorem_5_4(lab, num_classes=3, mu=0.0, key=jax.random.key(0))
  with pytest.raises(ConfigError, match="K >= 2"):
    th.check_theorem_5_4(np.zeros(4, int), num_classes=1, mu=1.0, key=jax.random.key(0))


def test_proposition_b1_construction(x64):
  x, lab = _data((4, 4, 4), 16)
  y = np.eye(3)[lab]
  beta = 1.3
  f, km = th.realise_collapsed_kernel(jnp.asarray(x), jnp.asarray(lab), num_classes=3, beta=beta,
                                      kind="laplace", bandwidth=0.8)
  f = np.asarray(f)
  # Mahalanobis distances equal the target configuration's Euclidean ones
  dm = np.linalg.norm((x[:, None] - x[None]) @ f.T, axis=-1)
  want = beta * math.sqrt(2) * (1 - y @ y.T)
  np.testing.assert_allclose(dm, want, atol=1e-9)
  np.testing.assert_allclose(np.asarray(km), np.where(y @ y.T > 0, 1.0, np.exp(-want / 0.8)),
                             atol=1e-9)
  with pytest.raises(ConfigError, match="d >= N"):
    th.realise_collapsed_kernel(jnp.asarray(x[:, :10]), jnp.asarray(lab), num_classes=3, beta=1.0)


def test_proposition_b1_optimisation_improves(x64):
  x, lab = _data((4, 4, 4), 16)
  r = th.check_proposition_b1(x, lab, num_classes=3, mu=1.0, key=jax.random.key(0),
                              betas=(1.0, 3.0), num_steps=200, every=50)
  np.testing.assert_allclose(r.constructive_distance, r.constructive_distance_predicted,
                             rtol=1e-8)
  assert r.final_objective > r.initial_objective
  assert r.final_objective <= r.objective_at_target * (1 + 1e-12)
  assert r.optimised_distance[-1] < r.optimised_distance[0]


# ---------------------------------------------------------------------------
# Proposition A.1.


def _gauss_expect(fn, theta):
  """E[fn(g1, g2)] for standard normals with correlation cos(theta), by quadrature."""
  c, s = math.cos(theta), math.sin(theta)

  def integrand(v, u):
    return fn(u, c * u + s * v) * math.exp(-(u * u + v * v) / 2) / (2 * math.pi)

  return integrate.dblquad(integrand, -9, 9, -9, 9, epsabs=1e-11)[0]


def test_arccos_formulas_by_quadrature():
  relu = lambda t: max(t, 0.0)  # noqa: E731
  for theta in (0.3, 1.2, 2.5):
    e1 = 2 * _gauss_expect(lambda a, b: relu(a) * relu(b), theta)
    np.testing.assert_allclose(th.relu_product_expectation(theta), e1, rtol=1e-7)
    e2 = _gauss_expect(lambda a, b: relu(a) ** 2 * relu(b) ** 2, theta)
    var = 4.0 / 100 * (e2 - (e1 / 2) ** 2)
    np.testing.assert_allclose(th.relu_product_variance(theta, width=100), var, rtol=1e-6)


def test_proposition_a1_monte_carlo(x64):
  r = th.check_proposition_a1(jax.random.key(11), thetas=np.linspace(0, np.pi, 12), width=4096,
                              widths=(64, 4096), num_draws=256)
  assert r.thetas.size >= 10
  assert np.all(np.abs(r.z_scores) < 4.0)
  np.testing.assert_allclose(r.expected, th.relu_product_expectation(r.thetas))
  # the test discriminates: a formula off by 2% would sit more than 4 SE away
  assert np.all(4 * r.mc_se[:5] < 0.02 * r.expected[:5])
  # variance ~ 1/D: sample variances agree with the exact value (chi-square spread
  # ~ sqrt(2/255) = 9% per angle, averaged over angles) and the slope is -1
  np.testing.assert_allclose(r.variance_ratio, 1.0, atol=0.2)
  assert abs(r.variance_slope + 1.0) < 0.1
  with pytest.raises(ConfigError, match="multiple"):
    th.check_proposition_a1(jax.random.key(0), num_draws=20)


# ---------------------------------------------------------------------------
# Command line.


def test_cli_all_small(tmp_path):
  from dnc_jax.cli import theory as cli
  out = tmp_path / "run"
  # shapes and static options shared with the tests above, so compiled code is reused
  rc = cli.main(["all", "--out", str(out), "--class-sizes", "8,8,8", "--unbalanced-sizes",
                 "6,8,10", "--dim", "30", "--layers", "20", "--ratios", "0.01,0.1",
                 "--lambda-maps", "1", "--compare-layers", "3", "--width", "256",
                 "--c2-class-sizes", "4,4,4", "--classes", "3", "--per-class", "4",
                 "--steps", "120", "--projection-iters", "60", "--step-size", "2", "--starts", "3",
                 "--random", "300", "--b1-dim", "16", "--b1-kernels", "gaussian",
                 "--b1-steps", "200", "--angles", "12", "--a1-widths", "64,4096",
                 "--a1-width", "4096", "--draws", "256"])
  assert rc == 0
  res = json.loads((out / "results.json").read_text())
  assert set(res) >= {"thm53", "lemma_c2", "thm54", "prop_a1", "conventions", "seconds"}
  run = res["thm53"]["runs"]["balanced/fixed_point"]
  assert run["fitted_rate"] < 1 and run["floor"] < 1e-10
  assert res["lemma_c2"][0]["relative_error"] < 1e-10
  assert "gram_error" in res["conventions"]
  for name in ("thm53", "lemma_c2", "thm54", "prop_a1"):
    assert (out / f"{name}.png").stat().st_size > 1000
  assert "### Theorem 5.3" in (out / "summary.md").read_text()
  assert json.loads((out / "config.json").read_text())["config"]["check"] == "all"


def test_cli_errors(tmp_path):
  from dnc_jax.cli import theory as cli
  rc = cli.main(["thm53", "--out", str(tmp_path / "a"), "--dim", "5", "--class-sizes", "4,4"])
  assert rc == 2
  rc = cli.main(["lemma_c2", "--out", str(tmp_path / "b"), "--c2-lambda-map", "-1"])
  assert rc == 2


def test_script_and_lazy_matplotlib():
  """bin/theory runs as a script, and importing dnc_jax.theory does not import matplotlib."""
  code = ("import runpy, sys, dnc_jax.theory; print('matplotlib loaded:', 'matplotlib' in "
          "sys.modules); sys.argv = ['theory', '--help']; "
          "runpy.run_path('bin/theory', run_name='__main__')")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                     cwd=REPO)
  assert p.returncode == 0, p.stderr
  assert "matplotlib loaded: False" in p.stdout
  assert "thm53" in p.stdout and "--lambda-hat" in p.stdout
  assert os.access(os.path.join(REPO, "bin", "theory"), os.X_OK)


def test_sweep_reports_data_errors(x64):
  x, lab = _data((4, 4, 4), 16)
  with pytest.raises(ConfigError, match="Assumption 5.1"):
    th.sweep_theorem_5_3(x[:, :10], lab, num_classes=3, ratios=[0.01], lambda_maps=[1.0])
