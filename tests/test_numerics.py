"""The float32 default against float64 on the Fashion-MNIST fixture (docs/numerics.md)."""
import jax
import numpy as np

import dnc_jax as dj
from dnc_jax import data

from conftest import FASHION_FIXTURE


def _run(dtype, key):
  ds = data.load_dataset("fashion_mnist", n=500, n_test=50, balanced=True,
                         data_dir=FASHION_FIXTURE, cache=False)
  cfg = dj.preset_config("reference", depth=8, width=256)
  return dj.deep_rfm(ds.x_train.astype(dtype), ds.y_train, cfg, key=key).layers


def test_float32_within_one_percent_of_float64_over_8_layers(key):
  f32 = _run(np.float32, key)
  with jax.enable_x64(True):
    f64 = _run(np.float64, key)
  assert len(f32) == len(f64) == 8
  worst = 0.0
  for a, b in zip(f32, f64):
    for rep in ("input", "agop", "features"):
      worst = max(worst, abs(a["nc1"][rep] / b["nc1"][rep] - 1))
  assert f32[-1]["nc1"]["agop"] < 0.05 * f32[0]["nc1"]["agop"]  # collapse did happen
  assert worst < 0.01, worst
