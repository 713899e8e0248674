"""Tests of dnc_jax.data: pipeline, digits, Fashion-MNIST IDX, synthetic, cache."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dnc_jax import data as D
from dnc_jax.errors import ConfigError, DataError

FIXTURE = pathlib.Path(__file__).parent / "data" / "fashion_mnist"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  """Every test gets its own cache folder, never the user's."""
  monkeypatch.setenv("DNC_JAX_CACHE", str(tmp_path / "cache"))


def _expected_standardise(x_raw, x_test_raw):
  """Independent float64 reference of the pipeline's standardisation."""
  x = x_raw.reshape(len(x_raw), -1).astype(np.float64) / 255.0
  xt = x_test_raw.reshape(len(x_test_raw), -1).astype(np.float64) / 255.0
  mean, std = x.mean(0), x.std(0)
  const = np.ptp(x, axis=0) == 0
  std = np.where(const, 1.0, std)
  return (np.where(const, 0.0, (x - mean) / std), np.where(const, 0.0, (xt - mean) / std))


def test_import_does_not_import_tfds():
  code = "import sys, dnc_jax.data; print('tensorflow_datasets' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_fashion_mnist_fixture_pipeline():
  ds = D.load_dataset("fashion_mnist", n=2000, n_test=500, data_dir=FIXTURE)
  assert ds.x_train.shape == (2000, 784) and ds.x_train.dtype == np.float32
  assert ds.x_test.shape == (500, 784) and ds.x_test.dtype == np.float32
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  raw_x = D.read_idx(FIXTURE / "train-images-idx3-ubyte.gz", expected_magic=2051)
  raw_y = D.read_idx(FIXTURE / "train-labels-idx1-ubyte.gz", expected_magic=2049)
  raw_xt = D.read_idx(FIXTURE / "t10k-images-idx3-ubyte.gz", expected_magic=2051)
  raw_yt = D.read_idx(FIXTURE / "t10k-labels-idx1-ubyte.gz", expected_magic=2049)
  order, order_t = np.argsort(raw_y, kind="stable"), np.argsort(raw_yt, kind="stable")
  np.testing.assert_array_equal(ds.y_train, raw_y[order])
  np.testing.assert_array_equal(ds.y_test, raw_yt[order_t])
  ex, ext = _expected_standardise(raw_x[order], raw_xt[order_t])
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  np.testing.assert_allclose(ds.x_test, ext, atol=2e-6, rtol=1e-5)
  assert ds.info["counts_train"] == np.bincount(raw_y, minlength=10).tolist()
  assert ds.info["n"] == 2000 and ds.info["n_test"] == 500
  json.dumps(ds.info)
  np.testing.assert_array_equal(D.one_hot_pm1(ds.y_train[:3], 10)[0], [1] + [-1] * 9)
