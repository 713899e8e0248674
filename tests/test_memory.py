"""Memory planning: the layer estimate bounds XLA's buffer assignment; budgets are enforced."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.rfm import kernels
from dnc_jax.rfm import krr
from dnc_jax.rfm import memory
from dnc_jax.errors import ConfigError

from dnc_jax.rfm import driver as drfm
from dnc_jax.rfm import layer


def _compiled_layer_bytes(n, nt, d, width, k, bs, agop):
  s = jax.ShapeDtypeStruct
  opts = drfm.preset_config("reference", width=width, agop=agop).layer_options()
  c = layer._rfm_layer.lower(
      s((n, d), jnp.float32), s((nt, d), jnp.float32), s((n, k), jnp.float32),
      s((n,), jnp.int32), jax.random.key(0), 2.0, 1e-3, 0.05, options=opts,
      batch_size=bs).compile()
  ma = c.memory_analysis()
  return ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes


@pytest.mark.parametrize("agop", ["rules", "closed_form"])
@pytest.mark.parametrize("n,nt,d,width,bs", [(1200, 100, 64, 128, 256), (2000, 50, 32, 64, 16),
                                             (1500, 300, 512, 512, 250)])
def test_estimate_bounds_the_compiled_layer(n, nt, d, width, bs, agop):
  actual = _compiled_layer_bytes(n, nt, d, width, 10, bs, agop)
  est = memory.plan_layer(n, nt, d, width, 10, budget=2**40, batch_size=bs,
                          agop=agop).estimate_bytes
  assert actual <= est <= 1.8 * actual, (actual, est)


def test_auto_agop_takes_the_closed_form_when_it_fits():
  n, nt, d, w, k = 3000, 500, 256, 256, 10
  rules = memory.plan_layer(n, nt, d, w, k, budget=2**40, agop="rules")
  closed = memory.plan_layer(n, nt, d, w, k, budget=2**40, agop="closed_form")
  # The closed form keeps the [N, N] distances: about N² floats more.
  assert closed.estimate_bytes - rules.estimate_bytes >= n * n * 4
  assert memory.plan_layer(n, nt, d, w, k, budget=2**40, agop="auto").agop == "closed_form"
  tight = (rules.estimate_bytes + closed.fixed_bytes + closed.solve_bytes) // 2
  assert memory.plan_layer(n, nt, d, w, k, budget=tight, agop="auto").agop == "rules"
  with pytest.raises(ConfigError, match="agop='rules'"):
    memory.plan_layer(n, nt, d, w, k, budget=tight, agop="closed_form")
  # A fixed block size is checked against the budget too.
  assert memory.plan_layer(n, nt, d, w, k, budget=tight, batch_size=64, agop="auto").agop == "rules"
  assert memory.plan_layer(n, nt, d, w, k, budget=2**40, batch_size=64,
                           agop="auto").agop == "closed_form"
  # Room for only a few closed-form rows: the rules, with their larger blocks.
  few = closed.fixed_bytes + closed.solve_bytes + 4 * closed.per_row_bytes
  assert memory.plan_layer(n, nt, d, w, k, budget=few, agop="auto").agop == "rules"


def test_solve_holds_no_avoidable_n_by_n_copy():
  # distances + kernel values in the factor's layout: two [N, N] buffers at most
  # (a symmetrised copy or a kept kernel matrix would make it three or more).
  n, d, k = 1500, 32, 10

  def fit(x, y, lab):
    fr = kernels.centred_frame(x, lab, k)
    return layer._fit_predict(x, y, x[:1], fr, 2.0, 1e-3, "laplace")

  s = jax.ShapeDtypeStruct
  c = jax.jit(fit).lower(s((n, d), jnp.float32), s((n, k), jnp.float32),
                         s((n,), jnp.int32)).compile()
  assert c.memory_analysis().temp_size_in_bytes < 2.6 * n * n * 4


def test_cholesky_fit_matches_float64_numpy(x64):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(60, 5))
  kmat = np.exp(-np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1)) / 2.0)
  y = rng.normal(size=(60, 3))
  alpha, ok, fitted = krr.cholesky_fit(jnp.asarray(kmat), jnp.asarray(y), 1e-2)
  ref = np.linalg.solve(kmat + 1e-2 * np.eye(60), y)
  assert bool(ok)
  np.testing.assert_allclose(np.asarray(alpha), ref, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(np.asarray(fitted), kmat @ ref, rtol=1e-9, atol=1e-9)


def test_cholesky_reads_the_lower_triangle_only(x64):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(20, 20))
  spd = a @ a.T + 20 * np.eye(20)
  junk_upper = np.tril(spd) + np.triu(rng.normal(size=(20, 20)) * 100, 1)
  y = rng.normal(size=(20, 2))
  alpha, ok = krr.cholesky_solve(jnp.asarray(junk_upper), jnp.asarray(y), 0.0)
  np.testing.assert_allclose(np.asarray(alpha), np.linalg.solve(spd, y), rtol=1e-9)


def test_block_size_follows_the_budget():
  n, nt, d, w, k = 20000, 1000, 1024, 1024, 10
  fixed, solve, per_row = memory.layer_bytes(n, nt, d, w, k)
  # The solve and AGOP phases share memory: 3000 AGOP rows (5.5 GB) outweigh the 4 GB solve.
  assert 3000 * per_row > solve
  budget = fixed + 3000 * per_row
  plan = memory.plan_layer(n, nt, d, w, k, budget=budget, backend="gpu")
  assert plan.batch_size == 2858                         # 3000 rows fit: 7 blocks of 2858
  assert plan.estimate_bytes <= budget
  # A CPU caps blocks at 256 rows: 20000 rows in 79 blocks of 254.
  assert memory.plan_layer(n, nt, d, w, k, budget=10 * budget, backend="cpu").batch_size == 254


def test_budget_too_small_is_refused_with_the_fix():
  with pytest.raises(ConfigError, match=r"N = 50000.*--memory-gb"):
    memory.plan_layer(50000, 10000, 3072, 1024, 10, budget=8 * memory.GiB)
  with pytest.raises(ConfigError, match="memory_gb must be > 0"):
    memory.budget_bytes(0.0)


def test_deep_rfm_refuses_before_any_work(key):
  x = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
  lab = np.repeat(np.arange(4), 100)
  cfg = drfm.preset_config("reference", depth=2, width=16, memory_gb=1e-4)
  calls = []
  with pytest.raises(ConfigError, match="--memory-gb"):
    drfm.deep_rfm(x, lab, cfg, key=key, callback=calls.append)
  assert calls == []


def test_peak_bytes_reports_the_host():
  peak = memory.peak_bytes()
  big = np.ones((64, 2**20), np.float32)   # 256 MiB resident
  big[:, ::1024] = 2.0
  after = memory.peak_bytes()
  assert after["host"] >= max(peak["host"], big.nbytes)
  assert (peak["device"] is None) == (jax.devices()[0].platform == "cpu")
