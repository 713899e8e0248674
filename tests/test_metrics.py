"""Collapse metrics against float64 NumPy, closed forms and invariances."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax import metrics
from dnc_jax.errors import ConfigError


def _unbalanced(rng, k=4, d=6, counts=(5, 9, 3, 12)):
  lab = np.repeat(np.arange(k), counts).astype(np.int32)
  x = rng.normal(size=(len(lab), d)) + 2.0 * rng.normal(size=(k, d))[lab]
  return x, lab


def _np_metrics(x, lab, k, global_mean="sample"):
  mu = np.stack([x[lab == c].mean(0) for c in range(k)])
  mg = x.mean(0) if global_mean == "sample" else mu.mean(0)
  n = len(x)
  sw = sum(np.outer(x[i] - mu[lab[i]], x[i] - mu[lab[i]]) for i in range(n)) / n
  sb = sum(np.outer(mu[c] - mg, mu[c] - mg) for c in range(k)) / k
  st = sum(np.outer(x[i] - mg, x[i] - mg) for i in range(n)) / n
  mbar = (mu - mg) / np.linalg.norm(mu - mg, axis=1, keepdims=True)
  etf = k / (k - 1) * np.eye(k) - np.ones((k, k)) / (k - 1)
  var = np.array([np.mean(np.sum((x[lab == c] - mu[c]) ** 2, 1)) for c in range(k)])
  cd = [(var[a] + var[b]) / (2 * np.sum((mu[a] - mu[b]) ** 2))
        for a in range(k) for b in range(k) if a != b]
  return {
      "nc1": np.trace(sw) / np.trace(sb),
      "nc1_papyan": np.trace(sw @ np.linalg.pinv(sb)) / k,
      "cdnv": np.mean(cd),
      "nc2": np.linalg.norm(mbar @ mbar.T - etf),
      "nc2_orthogonal": np.linalg.norm(mbar @ mbar.T - np.eye(k)),
      "tr_w_over_t": np.trace(sw) / np.trace(st),
      "tr_b_over_t": np.trace(sb) / np.trace(st),
  }


@pytest.mark.parametrize("global_mean", ["sample", "class_means"])
def test_metrics_match_numpy_on_unbalanced_data(x64, global_mean):
  rng = np.random.default_rng(0)
  x, lab = _unbalanced(rng)
  got = dj.collapse_metrics(jnp.asarray(x), lab, num_classes=4, global_mean=global_mean)
  want = _np_metrics(x, lab, 4, global_mean)
  chex.assert_trees_all_close({k: got[k] for k in want}, want, rtol=1e-9)


def test_public_wrappers(x64):
  rng = np.random.default_rng(1)
  x, lab = _unbalanced(rng)
  want = _np_metrics(x, lab, 4)
  np.testing.assert_allclose(dj.nc1(x, lab, num_classes=4), want["nc1"], rtol=1e-10)
  np.testing.assert_allclose(dj.nc1(x, lab, num_classes=4, variant="papyan"), want["nc1_papyan"],
                             rtol=1e-9)
  np.testing.assert_allclose(dj.nc1(x, lab, num_classes=4, variant="cdnv"), want["cdnv"], rtol=1e-10)
  np.testing.assert_allclose(dj.nc2(x, lab, num_classes=4), want["nc2"], rtol=1e-10)
  np.testing.assert_allclose(dj.nc2(x, lab, num_classes=4, frame="orthogonal"),
                             want["nc2_orthogonal"], rtol=1e-10)
  np.testing.assert_allclose(dj.nc2(x, lab, num_classes=4, form="mean_squared"),
                             want["nc2"] ** 2 / 16, rtol=1e-10)


def test_collapsed_data_and_simplex_etf(x64):
  k, d = 5, 8
  rng = np.random.default_rng(2)
  # Simplex ETF: centred standard basis vectors of R^K, embedded by an orthogonal map.
  etf = np.eye(k) - 1.0 / k
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  means = etf @ q[:k]
  lab = np.repeat(np.arange(k), 4).astype(np.int32)
  x = means[lab] + 3.0
  assert float(dj.nc1(x, lab, num_classes=k)) < 1e-20
  assert float(dj.nc2(x, lab, num_classes=k)) < 1e-12
  # Against the orthogonal frame the ETF is off by ||Σ_ETF - I||_F = sqrt(K/(K-1)).
  np.testing.assert_allclose(dj.nc2(x, lab, num_classes=k, frame="orthogonal"),
                             np.sqrt(k / (k - 1)), rtol=1e-12)


def test_invariances(x64):
  rng = np.random.default_rng(3)
  x, lab = _unbalanced(rng)
  names = ("nc1", "nc1_papyan", "cdnv", "nc2", "nc2_orthogonal")
  base = dj.collapse_metrics(x, lab, num_classes=4)
  perm = rng.permutation(len(x))
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  for xx, ll in ((x[perm], lab[perm]), (x @ q, lab), (x + 5.0, lab), (3.0 * x, lab)):
    got = dj.collapse_metrics(xx, ll, num_classes=4)
    chex.assert_trees_all_close({k: got[k] for k in names}, {k: base[k] for k in names},
                                rtol=1e-8)


class JitAndNoJitTest(chex.TestCase):
  """The traceable metric functions give NumPy's numbers jitted and not jitted."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_class_stats_and_collapse_from_stats_match_numpy(self):
    x, lab = _unbalanced(np.random.default_rng(4))
    mu = np.stack([x[lab == c].mean(0) for c in range(4)])
    want_stats = {"counts": np.bincount(lab).astype(np.float64), "means": mu,
                  "global_mean": mu.mean(0), "within": x - mu[lab],
                  "class_var": np.array([np.mean(np.sum((x[lab == c] - mu[c]) ** 2, 1))
                                         for c in range(4)])}
    want = _np_metrics(x, lab, 4, "class_means")
    with jax.enable_x64(True):
      xx, ll = jnp.asarray(x), jnp.asarray(lab)
      st = self.variant(lambda a, b: metrics.class_stats(a, b, 4, "class_means"))(xx, ll)
      chex.assert_trees_all_close(st._asdict(), want_stats, rtol=1e-12, atol=1e-12)
      got = self.variant(metrics.collapse_from_stats)(xx, ll, st)
      chex.assert_trees_all_close({k: got[k] for k in want}, want, rtol=1e-9)


def test_gram_picture(x64):
  k = 3
  lab = np.array([2, 0, 1, 0, 2, 1], np.int32)
  means = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
  x = means[lab]
  g, gl = dj.gram_picture(x, lab, num_classes=k)
  np.testing.assert_array_equal(gl, [0, 0, 1, 1, 2, 2])
  want = np.where(gl[:, None] == gl[None, :], 1.0, -1.0 / (k - 1))
  np.testing.assert_allclose(g, want, atol=1e-12)
  g1, gl1 = dj.gram_picture(x, lab, num_classes=k, per_class=1)
  chex.assert_shape(g1, (3, 3))
  np.testing.assert_array_equal(gl1, [0, 1, 2])
  np.testing.assert_allclose(g1, np.where(np.eye(k) > 0, 1.0, -1.0 / (k - 1)), atol=1e-12)


def test_nfa_correlation_and_cosine(x64):
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
  ac, bc = a - a.mean(), b - b.mean()
  np.testing.assert_allclose(dj.nfa_correlation(a, b),
                             np.sum(ac * bc) / np.linalg.norm(ac) / np.linalg.norm(bc), rtol=1e-12)
  np.testing.assert_allclose(dj.cosine_similarity(a, b),
                             np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-12)
  np.testing.assert_allclose(dj.nfa_correlation(a, 2 * a + 1), 1.0, rtol=1e-12)


def test_psd_sqrt_clips_negative_eigenvalues(x64):
  rng = np.random.default_rng(6)
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  ev = np.array([4.0, 1.0, 0.25, 0.0, -1e-3])
  m = (q * ev) @ q.T
  want = (q * np.sqrt(np.maximum(ev, 0))) @ q.T
  np.testing.assert_allclose(dj.psd_sqrt(m), want, atol=1e-12)


@pytest.mark.parametrize("labels, num_classes, match", [
    (np.array([0, 0, 1, 1, 5]), 2, r"labels must lie in 0..1"),
    (np.array([0, 0, 1, 1, 1]), 3, r"classes \[2\] have fewer than 2 points"),
    (np.array([0, 0, 0, 1, 1]), 1, r"num_classes must be ≥ 2"),
    (np.array([0.0, 0, 1, 1, 1]), 2, r"labels must be integers"),
    (np.array([0, 1, 1]), 2, r"labels must have shape \[N\] = \[5\]"),
])
def test_bad_labels(labels, num_classes, match):
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  with pytest.raises(ConfigError, match=match):
    dj.collapse_metrics(x, labels, num_classes=num_classes)
