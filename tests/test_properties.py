"""Property-based tests (hypothesis) of kernels and collapse metrics.

Example counts are small by default; set HYPOTHESIS_PROFILE=thorough for more.
"""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import dnc_jax as dj

settings.register_profile("default", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@st.composite
def labelled_data(draw):
  k = draw(st.integers(2, 5))
  d = draw(st.integers(1, 7))
  counts = draw(st.lists(st.integers(2, 8), min_size=k, max_size=k))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  lab = np.repeat(np.arange(k), counts).astype(np.int32)
  spread = draw(st.floats(0.1, 5.0))
  x = rng.normal(size=(len(lab), d)) + spread * rng.normal(size=(k, d))[lab]
  return x, lab, k, rng


def _oracle(x, lab, k):
  mu = np.stack([x[lab == c].mean(0) for c in range(k)])
  mg = x.mean(0)
  tr_w = np.sum((x - mu[lab]) ** 2) / len(x)
  tr_b = np.sum((mu - mg) ** 2) / k
  mbar = (mu - mg) / np.linalg.norm(mu - mg, axis=1, keepdims=True)
  etf = k / (k - 1) * np.eye(k) - np.ones((k, k)) / (k - 1)
  return tr_w / tr_b, np.linalg.norm(mbar @ mbar.T - etf)


@given(labelled_data())
def test_metrics_agree_with_float64_oracle(data):
  x, lab, k, _ = data
  with jax.enable_x64(True):
    m = dj.collapse_metrics(jnp.asarray(x), lab, num_classes=k)
    n1, n2 = _oracle(x, lab, k)
    np.testing.assert_allclose(m["nc1"], n1, rtol=1e-8)
    np.testing.assert_allclose(m["nc2"], n2, rtol=1e-8, atol=1e-10)


@given(labelled_data(), st.floats(0.01, 100.0), st.floats(-10.0, 10.0))
def test_metric_invariances(data, scale, shift):
  x, lab, k, rng = data
  with jax.enable_x64(True):
    base = dj.collapse_metrics(x, lab, num_classes=k)
    perm = rng.permutation(len(x))
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    names = ("nc1", "nc1_papyan", "cdnv", "nc2", "nc2_orthogonal", "tr_w_over_t")
    for xx, ll in ((x[perm], lab[perm]), (x @ q, lab), (x + shift, lab), (scale * x, lab)):
      got = dj.collapse_metrics(xx, ll, num_classes=k)
      chex.assert_trees_all_close({n: got[n] for n in names}, {n: base[n] for n in names},
                                  rtol=1e-7, atol=1e-12)


@given(labelled_data())
def test_metric_bounds(data):
  x, lab, k, _ = data
  with jax.enable_x64(True):
    m = dj.collapse_metrics(x, lab, num_classes=k)
    # ‖G − Σ_ETF‖_F for a Gram G of unit vectors: the diagonal of G − Σ_ETF is 0 and
    # its K(K-1) other entries lie in [-1 + 1/(K-1), 1 + 1/(K-1)], so the norm is at
    # most sqrt(K(K-1)) · K/(K-1).
    assert 0.0 <= float(m["nc2"]) <= np.sqrt(k * (k - 1)) * k / (k - 1) + 1e-9
    assert float(m["nc1"]) >= 0.0 and float(m["cdnv"]) >= 0.0
    # Σ_T = Σ_W + (weighted) between-class: tr Σ_W ≤ tr Σ_T.
    assert float(m["tr_w_over_t"]) <= 1.0 + 1e-12


@given(st.integers(0, 2**31 - 1), st.integers(2, 6))
def test_correlations_are_bounded(seed, d):
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
  with jax.enable_x64(True):
    for v in (dj.nfa_correlation(a, b), dj.cosine_similarity(a, b)):
      assert -1.0 - 1e-12 <= float(v) <= 1.0 + 1e-12
    np.testing.assert_allclose(dj.nfa_correlation(a, 3.0 * a + 2.0), 1.0, rtol=1e-12)


@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.floats(0.3, 10.0))
def test_kernel_invariances_and_values(seed, d, bandwidth):
  rng = np.random.default_rng(seed)
  x, z = rng.normal(size=(5, d)), rng.normal(size=(4, d))
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  with jax.enable_x64(True):
    for kern in (dj.laplace_kernel, dj.gaussian_kernel):
      k0 = np.asarray(kern(x, z, bandwidth=bandwidth))
      assert np.all((k0 > 0) & (k0 <= 1.0))
      np.testing.assert_allclose(kern(x @ q, z @ q, bandwidth=bandwidth), k0, rtol=1e-9)
      np.testing.assert_allclose(kern(x + 1.5, z + 1.5, bandwidth=bandwidth), k0, rtol=1e-9)
      np.testing.assert_allclose(kern(z, x, bandwidth=bandwidth), k0.T, rtol=1e-12)
      np.testing.assert_allclose(np.diag(np.asarray(kern(x, x, bandwidth=bandwidth))), 1.0,
                                 atol=1e-6)
