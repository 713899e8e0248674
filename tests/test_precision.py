"""Matmul precision modes: TF32 rounding and bf16 products against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np

import dnc_jax as dj
import pytest

from dnc_jax.rfm import precision
from dnc_jax.errors import ConfigError

from dnc_jax.rfm import driver as drfm


def _np_round_tf32(x):
  # 11 significant bits (10 stored + the implicit one), round half to even.
  m, e = np.frexp(x.astype(np.float64))
  return np.ldexp(np.round(m * 2048.0) / 2048.0, e)


def test_round_tf32_is_nearest_with_ten_mantissa_bits():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=4096) * 10.0 ** rng.integers(-20, 20, size=4096)).astype(np.float32)
  x[:4] = [0.0, -0.0, 1.0, 1.0 + 2.0**-11]   # a tie rounds to even: 1 + 2^-11 -> 1
  got = np.asarray(precision.round_tf32(jnp.asarray(x)))
  np.testing.assert_array_equal(got, _np_round_tf32(x).astype(np.float32))
  special = np.array([np.inf, -np.inf, np.nan], np.float32)
  nan_payloads = np.array([0x7FFFFFFF, 0xFFFFFFFF], np.uint32).view(np.float32)
  out = np.asarray(precision.round_tf32(jnp.asarray(np.concatenate([special, nan_payloads]))))
  assert out[0] == np.inf and out[1] == -np.inf and np.all(np.isnan(out[2:]))
  assert np.all(got.view(np.uint32) & 0x1FFF == 0)
  assert got[3] == 1.0


@pytest.mark.parametrize("mode", ["highest", "tf32", "bf16"])
def test_matmul_modes_against_float64(mode):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(64, 300)).astype(np.float32)
  b = rng.normal(size=(300, 32)).astype(np.float32)
  if mode == "tf32":
    ra, rb = _np_round_tf32(a), _np_round_tf32(b)
  elif mode == "bf16":
    ra = np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)
    rb = np.asarray(jnp.asarray(b).astype(jnp.bfloat16).astype(jnp.float32), np.float64)
  else:
    ra, rb = a.astype(np.float64), b.astype(np.float64)
  ref = ra @ rb
  got = np.asarray(precision.matmul(jnp.asarray(a), jnp.asarray(b), mode), np.float64)
  assert got.dtype == np.float64 and precision.matmul(jnp.asarray(a), jnp.asarray(b), mode).dtype == jnp.float32
  np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())
  # ... and the cheaper modes really are cheaper: far from the exact product.
  exact = a.astype(np.float64) @ b.astype(np.float64)
  if mode != "highest":
    assert np.abs(got - exact).max() > 1e-4 * np.abs(exact).max()


def test_bad_mode_is_refused():
  with pytest.raises(ConfigError, match="highest, tf32, bf16"):
    drfm.preset_config("reference", matmul_precision="fp8")


def test_tf32_run_stays_close_to_highest(key):
  rng = np.random.default_rng(2)
  lab = np.repeat(np.arange(3), 60)
  x = (rng.normal(size=(3, 20))[lab] + rng.normal(size=(180, 20))).astype(np.float32)
  out = {}
  for mode in ("highest", "tf32"):
    cfg = drfm.preset_config("reference", depth=1, width=64, matmul_precision=mode)
    out[mode] = drfm.deep_rfm(x, lab, cfg, key=key).layers
  a = np.array([r["nc1"]["agop"] for r in out["highest"]])
  b = np.array([r["nc1"]["agop"] for r in out["tf32"]])
  assert not np.array_equal(a, b)
  np.testing.assert_allclose(b, a, rtol=0.05)


def test_cli_refuses_matmul_precision_with_float64(tmp_path, capsys):
  from dnc_jax.cli import deep_rfm as cli
  code = cli.main(["--matmul-precision", "tf32", "--precision", "float64", "--depth", "1",
                   "--out", str(tmp_path / "r"), "--no-progress"])
  assert code == 2 and "--precision float32" in capsys.readouterr().err


def test_sharded_path_refuses_a_cheaper_mode(key):
  from dnc_jax.rfm import sharded
  x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
  cfg = drfm.preset_config("reference", depth=1, width=8, matmul_precision="bf16")
  with pytest.raises(ConfigError, match="single-device Cholesky path"):
    dj.sharded_deep_rfm(x, np.repeat(np.arange(2), 20), cfg, key=key, devices=1)
