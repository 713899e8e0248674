"""Layer probes against independent float64 NumPy computations and closed forms."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.nets import models as nets
from dnc_jax.nets import probes


def _np_nc1(x, y, k):
  x = np.asarray(x, np.float64)
  mu_g = x.mean(0)
  means = np.stack([x[y == c].mean(0) for c in range(k)])
  tr_w = sum(((x[y == c] - means[c]) ** 2).sum() for c in range(k)) / len(x)
  tr_b = ((means - mu_g) ** 2).sum() / k
  tr_t = ((x - mu_g) ** 2).sum() / len(x)
  return tr_w / tr_b, tr_w / tr_t, tr_b / tr_t, means - mu_g


def _np_nc2(x, y, k):
  *_, c = _np_nc1(x, y, k)
  m = c / np.linalg.norm(c, axis=1, keepdims=True)
  etf = k / (k - 1) * np.eye(k) - np.ones((k, k)) / (k - 1)
  return np.linalg.norm(m @ m.T - etf)


def _np_sqrtm(g):
  ev, evec = np.linalg.eigh(0.5 * (g + g.T))
  return (evec * np.sqrt(np.clip(ev, 0, None))) @ evec.T


def _head(key, d, k=3, depth=2, width=6, gain=1.0, dtype=jnp.float32):
  model = nets.MLPHead(num_classes=k, depth=depth, width=width, init_gain=gain, param_dtype=dtype)
  return model.init(key, jnp.zeros((1, d), dtype))["params"]


def _np_params(hp):
  ws = [np.asarray(w, np.float64) for w in nets.head_weights(hp)]
  return ws, np.asarray(nets.readout_weight(hp), np.float64)


def test_linear_tail_agop_is_wtw(x64, key):
  """The tail from the readout is linear: its AGOP is W_outᵀ W_out exactly."""
  hp = _head(key, 5, dtype=jnp.float64)
  h = jax.random.normal(jax.random.fold_in(key, 1), (37, 6), jnp.float64)
  g = probes.tail_agop(hp, h, layer=2, batch_size=8)
  _, wo = _np_params(hp)
  np.testing.assert_allclose(np.asarray(g), wo.T @ wo, rtol=1e-12, atol=1e-14)


def test_one_layer_tail_agop_closed_form(x64, key):
  """Tail ReLU(h W_Lᵀ) W_outᵀ: J_i = W_out diag(1[W_L h_i > 0]) W_L, averaged in NumPy."""
  hp = _head(key, 5, dtype=jnp.float64)
  h = jax.random.normal(jax.random.fold_in(key, 2), (41, 6), jnp.float64)
  g = probes.tail_agop(hp, h, layer=1, batch_size=16)
  (w1, w2), wo = _np_params(hp)
  hn = np.asarray(h)
  ref = np.zeros((6, 6))
  for hi in hn:
    j = wo @ np.diag((w2 @ hi > 0).astype(float)) @ w2
    ref += j.T @ j
  np.testing.assert_allclose(np.asarray(g), ref / len(hn), rtol=1e-10, atol=1e-13)


def test_probe_layer_matches_numpy(x64, key):
  k, d, n = 3, 5, 60
  hp = _head(key, d, k=k, dtype=jnp.float64)
  x = np.asarray(jax.random.normal(jax.random.fold_in(key, 3), (n, d), jnp.float64))
  y = np.repeat(np.arange(k), n // k).astype(np.int32)
  x = x + 2.0 * np.eye(k, d)[y]   # some class structure
  recs = probes.probe_head(hp, jnp.asarray(x), y, num_classes=k, batch_size=7)
  assert [r["layer"] for r in recs] == [1, 2]
  (w1, w2), wo = _np_params(hp)
  h = x
  for rec, w, layer in zip(recs, (w1, w2), (0, 1)):
    # Independent AGOP of the tail by NumPy chain rule.
    g = np.zeros((h.shape[1], h.shape[1]))
    for hi in h:
      if layer == 0:
        a1 = (w1 @ hi > 0).astype(float)
        a2 = (w2 @ np.maximum(w1 @ hi, 0) > 0).astype(float)
        j = wo @ np.diag(a2) @ w2 @ np.diag(a1) @ w1
      else:
        j = wo @ np.diag((w2 @ hi > 0).astype(float)) @ w2
      g += j.T @ j
    g /= len(h)
    nfm = w.T @ w
    sq = _np_sqrtm(g)
    assert rec["nfa"]["sqrt_agop"] == pytest.approx(np.corrcoef(nfm.ravel(), sq.ravel())[0, 1], abs=1e-9)
    assert rec["nfa"]["agop"] == pytest.approx(np.corrcoef(nfm.ravel(), g.ravel())[0, 1], abs=1e-9)
    cos = (nfm * sq).sum() / np.linalg.norm(nfm) / np.linalg.norm(sq)
    assert rec["nfa"]["cosine_sqrt_agop"] == pytest.approx(cos, abs=1e-9)
    out = np.maximum(h @ w.T, 0)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    nc1_in = _np_nc1(h, y, k)[0]
    nc1_w = _np_nc1(h @ w.T, y, k)[0]
    nc1_vs = _np_nc1(h @ vt.T * s, y, k)[0]
    nc1_full, rw, rb, _ = _np_nc1(out, y, k)
    # The trace identity of Section 6: NC1 of φ(X) V Sᵀ equals NC1 of φ(X) Wᵀ.
    assert nc1_vs == pytest.approx(nc1_w, rel=1e-10)
    assert rec["nc1"]["right_singular"] == pytest.approx(nc1_w, rel=1e-9)
    assert rec["nc1"]["input"] == pytest.approx(nc1_in, rel=1e-9)
    assert rec["nc1"]["full_layer"] == pytest.approx(nc1_full, rel=1e-9)
    assert rec["nc1"]["agop_projection"] == pytest.approx(_np_nc1(h @ sq, y, k)[0], rel=1e-8)
    assert rec["tr_w_over_t"] == pytest.approx(rw, rel=1e-9)
    assert rec["tr_b_over_t"] == pytest.approx(rb, rel=1e-9)
    assert rec["nc2"] == pytest.approx(_np_nc2(out, y, k), rel=1e-8)
    h = out


def test_trace_identity_float32_wide_layer(key):
  """NC1 of φ(X)VSᵀ = NC1 of φ(X)Wᵀ also when the layer widens (U not square), float32."""
  hp = _head(key, 4, k=2, depth=1, width=9)
  x = jax.random.normal(jax.random.fold_in(key, 5), (40, 4))
  y = np.repeat(np.arange(2), 20).astype(np.int32)
  rec = probes.probe_head(hp, x, y, num_classes=2)[0]
  w = np.asarray(nets.head_weights(hp)[0], np.float64)
  assert rec["nc1"]["right_singular"] == pytest.approx(_np_nc1(np.asarray(x) @ w.T, y, 2)[0], rel=1e-4)


def test_nc1_shares_add_up():
  rec = {"nc1": {"input": 2.0, "right_singular": 0.5, "full_layer": 0.4}}
  s = probes.nc1_shares(rec)
  assert s["right_singular"] + s["relu"] == pytest.approx(s["total"])
  assert s["total"] == pytest.approx(np.log(5.0))
  assert 0 < s["fraction_right_singular"] <= 1


def test_probe_layers_selection_and_errors(key):
  hp = _head(key, 4, k=2, depth=3, width=5)
  x = jax.random.normal(jax.random.fold_in(key, 6), (20, 4))
  y = np.repeat(np.arange(2), 10).astype(np.int32)
  all_recs = probes.probe_head(hp, x, y, num_classes=2)
  sel = probes.probe_head(hp, x, y, num_classes=2, layers=[3])
  assert [r["layer"] for r in sel] == [3]
  assert sel[0]["nc1"]["input"] == pytest.approx(all_recs[2]["nc1"]["input"], rel=1e-6)
  with pytest.raises(probes.ConfigError, match="out of range"):
    probes.probe_head(hp, x, y, num_classes=2, layers=[4])


def test_all_layer_agops_equal_per_layer_jacobians(x64, key):
  """The one-pass AGOPs (block-symmetric Grams, mask formula for the last layer, padded
  blocks) equal the per-layer vmap(jacrev) of each tail and a NumPy chain rule."""
  hp = _head(key, 9, k=4, depth=3, width=70, dtype=jnp.float64)
  h1 = jax.random.normal(jax.random.fold_in(key, 7), (53, 9), jnp.float64)
  grams = probes.preactivation_grams(hp, h1, batch_size=16)     # 53 = 3 * 16 + 5
  assert len(grams) == len(probes._head_kernels(hp)) == 3
  (w1, w2, w3), wo = _np_params(hp)
  ws = (w1, w2, w3)
  h = np.asarray(h1)
  for l, (kern, g_pre) in enumerate(zip(probes._head_kernels(hp), grams)):
    g = np.asarray(kern @ g_pre @ kern.T) / h1.shape[0]
    direct = np.asarray(probes.tail_agop(hp, jnp.asarray(h), layer=l, batch_size=8))
    np.testing.assert_allclose(g, direct, rtol=1e-10, atol=1e-14)
    ref = np.zeros_like(g)
    for hi in h:
      # Chain rule written out: J = W_out D_L W_L ... D_l W_l.
      acts, a = [], hi
      for w in ws[l:]:
        acts.append((w @ a > 0).astype(float))
        a = np.maximum(w @ a, 0)
      j = ws[l]
      for m, w_next in zip(acts[:-1], ws[l + 1:]):
        j = w_next @ (m[:, None] * j)
      j = wo @ (acts[-1][:, None] * j)
      ref += j.T @ j
    np.testing.assert_allclose(g, ref / len(h), rtol=1e-9, atol=1e-13)
    h = np.maximum(h @ ws[l].T, 0)


def test_sym_gram_is_ata(x64):
  a = np.random.default_rng(0).standard_normal((31, 67))
  np.testing.assert_allclose(np.asarray(probes.sym_gram(jnp.asarray(a))), a.T @ a, rtol=1e-12)


def test_probe_compiles_once_per_shape(key, monkeypatch):
  """Measurements with new parameters of the same shapes reuse one compilation."""
  fn = probes.probe_all.__wrapped__
  counted = jax.jit(chex.assert_max_traces(fn, n=1),
                    static_argnames=("layers", "num_classes", "batch_size", "global_mean"))
  calls = []

  def probe_all(*args, **kwargs):
    calls.append(1)
    return counted(*args, **kwargs)

  monkeypatch.setattr(probes, "probe_all", probe_all)
  x = jax.random.normal(jax.random.fold_in(key, 8), (30, 4))
  y = np.repeat(np.arange(2), 15).astype(np.int32)
  for k in jax.random.split(key, 3):
    hp = _head(k, 4, k=2, depth=2, width=5)
    probes.probe_head(hp, x, y, num_classes=2)
  assert len(calls) == 3    # the measurements went through the counted function


def test_nfa_baseline_against_numpy_monte_carlo(x64, key):
  """Mean of the random-eigenvector baseline agrees with an independent NumPy draw set."""
  rng = np.random.default_rng(0)
  d = 12
  a = np.diag(np.linspace(1.0, 3.0, d)) + 0.1 * np.ones((d, d))
  b = np.diag(np.linspace(0.5, 1.0, d)) ** 2
  la, lb = np.linalg.eigvalsh(a), np.linalg.eigvalsh(b)
  got = np.asarray(probes.nfa_baseline(jnp.asarray(la), jnp.asarray(lb), dim=d, key=key,
                                       draws=400))
  ref = []
  for _ in range(400):
    q1, r1 = np.linalg.qr(rng.standard_normal((d, d)))
    q2, r2 = np.linalg.qr(rng.standard_normal((d, d)))
    q1, q2 = q1 * np.sign(np.diag(r1)), q2 * np.sign(np.diag(r2))
    ref.append(np.corrcoef(((q1 * la) @ q1.T).ravel(), ((q2 * lb) @ q2.T).ravel())[0, 1])
  ref = np.asarray(ref)
  se = np.hypot(got.std() / np.sqrt(len(got)), ref.std() / np.sqrt(len(ref)))
  assert abs(got.mean() - ref.mean()) < 4 * se
  assert got.std() == pytest.approx(ref.std(), rel=0.2)
  # Diagonal-heavy spectra keep a large correlation whatever the eigenvectors.
  assert got.mean() > 0.3


def test_low_rank_nfa_path_matches_numpy(x64, key):
  """A widening-input layer (d > m: WᵀW and G have rank m) goes through [d, m] factors;
  its NFA values equal NumPy's on the full [d, d] matrices, and its spectra those of eigh."""
  hp = _head(key, 11, k=3, depth=2, width=4, dtype=jnp.float64)
  x = jax.random.normal(jax.random.fold_in(key, 9), (40, 11), jnp.float64)
  y = np.repeat(np.arange(2), 20).astype(np.int32)
  rec = probes.probe_head(hp, x, y, num_classes=2)[0]
  w1 = np.asarray(nets.head_weights(hp)[0], np.float64)
  g = np.asarray(probes.tail_agop(hp, x, layer=0, batch_size=8))
  nfm, sq = w1.T @ w1, _np_sqrtm(g)
  assert rec["nfa"]["sqrt_agop"] == pytest.approx(np.corrcoef(nfm.ravel(), sq.ravel())[0, 1], abs=1e-9)
  assert rec["nfa"]["agop"] == pytest.approx(np.corrcoef(nfm.ravel(), g.ravel())[0, 1], abs=1e-9)
  cos = (nfm * sq).sum() / np.linalg.norm(nfm) / np.linalg.norm(sq)
  assert rec["nfa"]["cosine_sqrt_agop"] == pytest.approx(cos, abs=1e-9)
  d, spec_w, spec_g = probes.layer_spectra(hp, x)[0]
  assert d == 11 and spec_w.shape == (4,)
  np.testing.assert_allclose(np.sort(np.asarray(spec_w)), np.linalg.eigvalsh(nfm)[-4:], rtol=1e-9)
  np.testing.assert_allclose(np.sort(np.asarray(spec_g)),
                             np.sqrt(np.clip(np.linalg.eigvalsh(g), 0, None))[-4:], rtol=1e-6)
