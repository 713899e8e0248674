"""Deep RFM: the authors' layer-1 reference numbers, collapse, tracing, bad input."""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax import data
from dnc_jax.errors import ConfigError, SolveError

from conftest import FASHION_FIXTURE

from dnc_jax.rfm import driver as drfm

# SPEC §3: authors' code, Fashion-MNIST first 2000 training points, reference preset.
REF_SAMPLE_MEAN = {"nc1_input": 1.7629, "nc1_agop": 0.5219, "nc2_input": 4.3178, "nc2_agop": 3.3305}
REF_CLASS_MEANS = {"nc1_input": 1.7636, "nc1_agop": 0.5221, "nc2_input": 4.3003, "nc2_agop": 3.3214}
REF_AUTHORS_CODE = {"nc1_input": 0.1764, "nc1_agop": 0.05221, "nc2_input": 0.1849, "nc2_agop": 0.1103}


@functools.lru_cache(maxsize=None)
def _fashion(n=2000):
  return data.load_dataset("fashion_mnist", n=n, n_test=500, data_dir=FASHION_FIXTURE, cache=False)


def _layer1(dtype, global_mean):
  ds = _fashion()
  cfg = dj.preset_config("reference", depth=1, global_mean=global_mean)
  res = dj.deep_rfm(ds.x_train.astype(dtype), ds.y_train, cfg, key=jax.random.key(0))
  rec = res.layers[0]
  return {"nc1_input": rec["nc1"]["input"], "nc1_agop": rec["nc1"]["agop"],
          "nc2_input": rec["nc2"]["input"], "nc2_agop": rec["nc2"]["agop"]}


def _check(got, want, rtol=2e-3):
  for name, value in want.items():
    assert abs(got[name] - value) <= rtol * abs(value), (name, got[name], value)


def test_reference_layer1_float32():
  got = _layer1(np.float32, "sample")
  _check(got, REF_SAMPLE_MEAN)


def test_reference_layer1_float64_and_authors_conventions(x64):
  got = _layer1(np.float64, "class_means")
  _check(got, REF_CLASS_MEANS)
  # The authors' code plots NC1 / K and mean((M̄M̄ᵀ - Σ_ETF)²) = NC2² / K².
  k = 10
  authors = {"nc1_input": got["nc1_input"] / k, "nc1_agop": got["nc1_agop"] / k,
             "nc2_input": (got["nc2_input"] / k) ** 2, "nc2_agop": (got["nc2_agop"] / k) ** 2}
  _check(authors, REF_AUTHORS_CODE, rtol=5e-3)


@pytest.mark.parametrize("name", ["digits", "fashion_mnist"])
def test_collapse_deepens_with_depth(name):
  """NC1 of the AGOP projection is below the input's at every layer and falls ≥ 100×."""
  kw = {"data_dir": FASHION_FIXTURE} if name == "fashion_mnist" else {}
  ds = data.load_dataset(name, n=600, n_test=100, balanced=True, cache=False, **kw)
  cfg = dj.preset_config("reference", depth=19, width=256)
  res = dj.deep_rfm(ds.x_train, ds.y_train, cfg, key=jax.random.key(0), x_test=ds.x_test,
                    labels_test=ds.y_test)
  inp = np.array([r["nc1"]["input"] for r in res.layers])
  agp = np.array([r["nc1"]["agop"] for r in res.layers])
  assert np.all(agp < inp)
  assert agp[0] / agp[-1] >= 100.0
  assert res.final["test_acc"] > 0.6


def test_layer_traces_once_per_width(monkeypatch):
  """One trace for the input width and one for the feature width, not one per layer."""
  from dnc_jax.rfm import layer
  counted = jax.jit(chex.assert_max_traces(layer._rfm_layer.__wrapped__, n=2),
                    static_argnames=("options", "batch_size"))
  monkeypatch.setattr(layer, "_rfm_layer", counted)
  ds = data.load_dataset("synthetic", n=120, n_test=30, seed=1, cache=False)
  cfg = dj.preset_config("reference", depth=5, width=48)
  res = dj.deep_rfm(ds.x_train, ds.y_train, cfg, key=jax.random.key(0))
  assert len(res.layers) == 5
  # Another depth, bandwidth, ridge or Gram choice changes no traced program: no new trace.
  for other in (dict(depth=3), dict(bandwidth=1.5, ridge=1e-2), dict(gram_layers=(2,))):
    dj.deep_rfm(ds.x_train, ds.y_train, dataclasses.replace(cfg, **other), key=jax.random.key(1))


def test_jit_and_no_jit_agree(x64):
  ds = data.load_dataset("synthetic", n=40, n_test=10, seed=2, dim=12, cache=False)
  x = jnp.asarray(ds.x_train, jnp.float64)
  xt = jnp.asarray(ds.x_test, jnp.float64)
  y = jnp.asarray(data.one_hot_pm1(ds.y_train, ds.num_classes), jnp.float64)
  lab = jnp.asarray(ds.y_train)
  cfg = drfm.preset_config("paper", width=16, bandwidth=2.0, ridge=1e-3, sigma=0.05)
  args = (x, xt, y, lab, jax.random.key(3), cfg)
  jitted = drfm.rfm_layer(*args, batch_size=40)
  with jax.disable_jit():
    eager = drfm.rfm_layer(*args, batch_size=40)
  # Everything up to the AGOP projection agrees to float64 round-off ...
  chex.assert_trees_all_close(
      (jitted[2].m, jitted[2].train_pred, jitted[2].test_pred, jitted[2].metrics["input"],
       jitted[2].metrics["agop"]),
      (eager[2].m, eager[2].train_pred, eager[2].test_pred, eager[2].metrics["input"],
       eager[2].metrics["agop"]), rtol=1e-9, atol=1e-12)
  # ... the random features to float32 round-off: their weights are drawn in float32 (so
  # that float32 and float64 runs share them) and XLA may fuse that sampling differently.
  chex.assert_trees_all_close((jitted[0], jitted[1], jitted[2].metrics["features"]),
                              (eager[0], eager[1], eager[2].metrics["features"]), rtol=1e-6,
                              atol=1e-7)


def test_layer_matches_independent_numpy_layer(x64):
  """Steps 1–5 written out in float64 NumPy: M, X̃ and the predictions."""
  ds = data.load_dataset("synthetic", n=60, n_test=10, seed=4, cache=False)
  k = ds.num_classes
  x = ds.x_train.astype(np.float64)
  y = data.one_hot_pm1(ds.y_train, k).astype(np.float64)
  res = dj.deep_rfm(x, ds.y_train, dj.preset_config("reference", depth=1, width=16, keep_m=True),
                    key=jax.random.key(0))
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  dist = np.linalg.norm(xn[:, None] - xn[None], axis=-1)
  kmat = np.exp(-dist / 2.0)
  alpha = np.linalg.solve(kmat + 1e-3 * np.eye(len(x)), y)
  g = np.zeros((x.shape[1],) * 2)
  for i in range(len(x)):
    coef = -kmat[i] / (2.0 * np.where(dist[i] > 0, dist[i], 1.0))
    coef[i] = 0.0
    jac = alpha.T @ (coef[:, None] * (xn[i] - xn))
    g += jac.T @ jac
  m = g / len(x)
  m /= m.max()
  np.testing.assert_allclose(res.ms[0], m, rtol=1e-8, atol=1e-12)
  ev, vec = np.linalg.eigh(m)
  xa = xn @ (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
  mu = np.stack([xa[ds.y_train == c].mean(0) for c in range(k)])
  sw = np.sum((xa - mu[ds.y_train]) ** 2) / len(x)
  sb = np.sum((mu - xa.mean(0)) ** 2) / k
  np.testing.assert_allclose(res.layers[0]["nc1"]["agop"], sw / sb, rtol=1e-8)


def test_same_seed_same_numbers_different_seed_different_features():
  ds = data.load_dataset("synthetic", n=80, n_test=20, seed=5, cache=False)
  cfg = dj.preset_config("reference", depth=2, width=32)
  a = dj.deep_rfm(ds.x_train, ds.y_train, cfg, key=jax.random.key(7))
  b = dj.deep_rfm(ds.x_train, ds.y_train, cfg, key=jax.random.key(7))
  c = dj.deep_rfm(ds.x_train, ds.y_train, cfg, key=jax.random.key(8))
  assert a.layers[1]["metrics"] == b.layers[1]["metrics"]
  assert a.layers[1]["nc1"]["features"] != c.layers[1]["nc1"]["features"]


def test_presets():
  ref = dj.preset_config("reference")
  assert (ref.ridge, ref.kernel, ref.bandwidth, ref.weight_init, ref.width, ref.depth) == (
      1e-3, "laplace", 2.0, "uniform", 1024, 19)
  paper = dj.preset_config("paper")
  assert (paper.ridge, paper.weight_init, paper.width) == (0.0, "normal", 1024)
  assert dj.preset_config("paper", features="cos").width == 4096
  assert dj.preset_config("reference", features="cos").width is None
  assert dj.preset_config("paper", ridge=0.5).ridge == 0.5


@pytest.mark.parametrize("overrides, match", [
    ({"depth": 0}, "depth must be an integer ≥ 1"),
    ({"bandwidth": 0.0}, "bandwidth must be a positive"),
    ({"bandwidth": -2.0}, "bandwidth must be a positive"),
    ({"ridge": -1e-3}, "ridge must be a finite number ≥ 0"),
    ({"features": "tanh"}, "unknown feature map 'tanh'"),
    ({"kernel": "cauchy"}, "unknown kernel 'cauchy'"),
    ({"width": 0}, "width must be a positive integer"),
])
def test_bad_options(overrides, match):
  with pytest.raises(ConfigError, match=match):
    dj.preset_config("reference", **overrides)


def test_bad_data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20, 5)).astype(np.float32)
  lab = np.repeat(np.arange(4), 5).astype(np.int32)
  cfg = dj.preset_config("reference", depth=1, width=8)
  bad = x.copy()
  bad[3, 2] = np.nan
  with pytest.raises(ConfigError, match="NaN or Inf"):
    dj.deep_rfm(bad, lab, cfg, key=jax.random.key(0))
  lab1 = lab.copy()
  lab1[:5] = 1
  lab1[0] = 0
  with pytest.raises(ConfigError, match=r"classes \[0\] have fewer than 2 points"):
    dj.deep_rfm(x, lab1, cfg, key=jax.random.key(0), num_classes=4)


def test_ridgeless_singular_system_is_reported_with_the_layer():
  x = np.repeat(np.eye(3, 6, dtype=np.float32), 4, axis=0)  # duplicate rows
  lab = np.repeat(np.arange(3), 4).astype(np.int32)
  with pytest.raises(SolveError, match=r"layer 1: the ridgeless kernel system .* --ridge 1e-3"):
    dj.deep_rfm(x, lab, dj.preset_config("paper", depth=2, width=8), key=jax.random.key(0))


def test_ridgeless_paper_preset_runs():
  ds = data.load_dataset("synthetic", n=100, n_test=20, seed=6, cache=False)
  res = dj.deep_rfm(ds.x_train, ds.y_train, dj.preset_config("paper", depth=3, width=64),
                    key=jax.random.key(0), x_test=ds.x_test, labels_test=ds.y_test)
  assert all(np.isfinite(r["nc1"]["agop"]) for r in res.layers)
  assert res.layers[0]["train_acc"] == 1.0  # ridgeless interpolation


def test_closed_form_agop_layer_matches_the_rules(x64, key):
  """agop='closed_form' (the solve's distances reused) gives the rules' run in float64."""
  ds = data.load_dataset("synthetic", n=90, n_test=20, seed=4, dim=10, cache=False)
  x = np.asarray(ds.x_train, np.float64)
  runs = {impl: dj.deep_rfm(x, ds.y_train, dj.preset_config("reference", depth=3, width=24,
                                                             agop=impl), key=key)
          for impl in ("rules", "closed_form")}
  for rec_a, rec_b in zip(runs["rules"].layers, runs["closed_form"].layers):
    chex.assert_trees_all_close(rec_b["metrics"], rec_a["metrics"], rtol=1e-8)
  with pytest.raises(dj.ConfigError, match="unknown AGOP implementation"):
    dj.preset_config("reference", agop="jacfwd")
