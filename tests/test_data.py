"""Tests of dnc_jax.data: the pipeline, digits, Fashion-MNIST, synthetic, the cache."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnc_jax import data as D
from dnc_jax.data import local, pipeline, synthetic
from dnc_jax.errors import ConfigError, DataError

from conftest import REPO

FIXTURE = pathlib.Path(__file__).parent / "data" / "fashion_mnist"
DEBIAN = pathlib.Path(D.DEBIAN_FASHION_MNIST_DIR)
needs_debian = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  """Every test gets its own cache folder, never the user's."""
  monkeypatch.setenv("DNC_JAX_CACHE", str(tmp_path / "cache"))


def _idx(path):
  """Independent IDX reader: 4-byte magic, big-endian dims, bytes."""
  raw = gzip.decompress(pathlib.Path(path).read_bytes())
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)


@pytest.fixture(scope="module")
def fixture_arrays():
  return {k: _idx(FIXTURE / f) for k, f in (
      ("x", "train-images-idx3-ubyte.gz"), ("y", "train-labels-idx1-ubyte.gz"),
      ("xt", "t10k-images-idx3-ubyte.gz"), ("yt", "t10k-labels-idx1-ubyte.gz"))}


def _reference(x_raw, x_test_raw, scale=255.0):
  """Float64 reference: scale to [0, 1], standardise with training statistics."""
  x = x_raw.reshape(len(x_raw), -1).astype(np.float64) / scale
  xt = x_test_raw.reshape(len(x_test_raw), -1).astype(np.float64) / scale
  mean, std = x.mean(0), x.std(0)
  const = np.ptp(x, axis=0) == 0
  std = np.where(const, 1.0, std)
  return np.where(const, 0.0, (x - mean) / std), np.where(const, 0.0, (xt - mean) / std)


def test_import_and_raw_loading_do_not_import_tfds(tmp_path):
  code = ("import sys, dnc_jax.data as d; print('tensorflow_datasets' in sys.modules); "
          f"d.load_dataset('fashion_mnist', n=100, data_dir={str(FIXTURE)!r}); "
          "print('tensorflow_datasets' in sys.modules)")
  env = dict(os.environ, DNC_JAX_CACHE=str(tmp_path / "c"), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=env)
  assert out.stdout.split() == ["False", "False"]


# The documented layering of dnc_jax/data/: each module imports only earlier ones.
_LAYERS = ("raw", "formats", "cache", "local", "tfds", "sources", "synthetic", "pipeline")


def test_package_modules_import_one_way():
  import ast

  package = pathlib.Path(D.__file__).parent
  assert sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__") == sorted(_LAYERS)
  for i, module in enumerate(_LAYERS):
    tree = ast.parse((package / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "dnc_jax.data":
        imported |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dnc_jax.data."):
        imported.add(node.module.split(".")[2])
      elif isinstance(node, ast.Import):
        imported |= {a.name.split(".")[2] for a in node.names
                     if a.name.startswith("dnc_jax.data.")}
    assert imported <= set(_LAYERS[:i]), (module, sorted(imported - set(_LAYERS[:i])))


def test_package_exports_resolve():
  assert all(hasattr(D, name) for name in D.__all__)
  ds = D.load_dataset("synthetic", n=20, n_test=5, num_classes=2, dim=3)
  assert isinstance(ds, D.Dataset)


def test_fixture_files_and_licence(fixture_arrays):
  assert fixture_arrays["x"].shape == (2000, 28, 28)
  assert fixture_arrays["xt"].shape == (500, 28, 28)
  assert fixture_arrays["y"].shape == (2000,) and fixture_arrays["yt"].shape == (500,)
  licence = (FIXTURE / "LICENSE").read_text()
  assert "MIT License" in licence and "Zalando SE" in licence


def test_fashion_mnist_fixture_pipeline(fixture_arrays):
  ds = D.load_dataset("fashion_mnist", n=2000, n_test=500, data_dir=FIXTURE)
  assert ds.x_train.shape == (2000, 784) and ds.x_train.dtype == np.float32
  assert ds.x_test.shape == (500, 784) and ds.x_test.dtype == np.float32
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.num_classes == 10 and ds.image_shape == (28, 28, 1) and ds.name == "fashion_mnist"
  y, yt = fixture_arrays["y"], fixture_arrays["yt"]
  order, order_t = np.argsort(y, kind="stable"), np.argsort(yt, kind="stable")
  np.testing.assert_array_equal(ds.y_train, y[order])
  np.testing.assert_array_equal(ds.y_test, yt[order_t])
  ex, ext = _reference(fixture_arrays["x"][order], fixture_arrays["xt"][order_t])
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  np.testing.assert_allclose(ds.x_test, ext, atol=2e-6, rtol=1e-5)
  # Training statistics: train columns have mean 0, std 1 (or are constant 0).
  np.testing.assert_allclose(ds.x_train.astype(np.float64).mean(0), 0, atol=1e-6)
  assert ds.info["constant_features"] == 1
  const = np.flatnonzero(np.ptp(fixture_arrays["x"].reshape(2000, -1), axis=0) == 0)
  assert (ds.x_train[:, const] == 0).all() and (ds.x_test[:, const] == 0).all()
  assert ds.info["counts_train"] == np.bincount(y, minlength=10).tolist()
  assert ds.info["counts_test"] == np.bincount(yt, minlength=10).tolist()
  assert ds.info["n"] == 2000 and ds.info["n_test"] == 500
  assert ds.info["source"] == "data_dir:idx" and len(ds.info["files"]) == 4
  json.dumps(ds.info)


def test_first_n_then_group(fixture_arrays):
  ds = D.load_dataset("fashion_mnist", n=300, n_test=40, data_dir=FIXTURE)
  y = fixture_arrays["y"][:300]
  order = np.argsort(y, kind="stable")
  np.testing.assert_array_equal(ds.y_train, y[order])
  ex, ext = _reference(fixture_arrays["x"][:300][order], fixture_arrays["xt"][:40])
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  # The test split is grouped too, standardised with the 300 training points.
  order_t = np.argsort(fixture_arrays["yt"][:40], kind="stable")
  np.testing.assert_allclose(ds.x_test, ext[order_t], atol=5e-6, rtol=1e-5)


def test_balanced_takes_first_per_class(fixture_arrays):
  ds = D.load_dataset("fashion_mnist", n=100, n_test=20, balanced=True, data_dir=FIXTURE)
  y = fixture_arrays["y"]
  idx = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(10)])
  assert ds.info["counts_train"] == [10] * 10 and ds.info["counts_test"] == [2] * 10
  np.testing.assert_array_equal(ds.y_train, y[idx])
  ex, _ = _reference(fixture_arrays["x"][idx], fixture_arrays["xt"][:1])
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  with pytest.raises(ConfigError, match="divisible"):
    D.load_dataset("fashion_mnist", n=105, balanced=True, data_dir=FIXTURE)


def test_classes_subset_relabelled_in_given_order(fixture_arrays):
  ds = D.load_dataset("fashion_mnist", classes=[7, 2], n=100, data_dir=FIXTURE)
  y = fixture_arrays["y"]
  keep = np.flatnonzero((y == 7) | (y == 2))[:100]
  new = np.where(y[keep] == 7, 0, 1)
  order = np.argsort(new, kind="stable")
  np.testing.assert_array_equal(ds.y_train, new[order])
  ex, _ = _reference(fixture_arrays["x"][keep][order], fixture_arrays["xt"][:1])
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  assert ds.num_classes == 2 and ds.info["class_names"] == ["Sneaker", "Pullover"]
  assert ds.info["original_classes"] == [7, 2]
  assert set(np.unique(ds.y_test)) == {0, 1}
  assert D.load_dataset("fashion_mnist", classes="7,2", n=100,
                        data_dir=FIXTURE).info["original_classes"] == [7, 2]


def test_flatten_false_keeps_images():
  flat = D.load_dataset("fashion_mnist", n=200, n_test=10, data_dir=FIXTURE)
  img = D.load_dataset("fashion_mnist", n=200, n_test=10, data_dir=FIXTURE, flatten=False)
  assert img.x_train.shape == (200, 28, 28, 1) and img.x_test.shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(img.x_train.reshape(200, -1), flat.x_train)
  assert img.dim == 784 and img.n == 200 and img.n_test == 10


def test_n_test_zero():
  ds = D.load_dataset("fashion_mnist", n=100, n_test=0, data_dir=FIXTURE)
  assert ds.x_test.shape == (0, 784) and ds.y_test.shape == (0,)


def test_digits_split_and_pixels():
  from sklearn.datasets import load_digits

  d = load_digits()
  ds = D.load_dataset("digits")
  assert ds.x_train.shape == (1500, 64) and ds.x_test.shape == (297, 64)
  assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10
  y, yt = d.target[:1500], d.target[1500:]
  order, order_t = np.argsort(y, kind="stable"), np.argsort(yt, kind="stable")
  np.testing.assert_array_equal(ds.y_train, y[order])
  np.testing.assert_array_equal(ds.y_test, yt[order_t])
  ex, ext = _reference(d.images[:1500][order], d.images[1500:][order_t], scale=16.0)
  np.testing.assert_allclose(ds.x_train, ex, atol=2e-6, rtol=1e-6)
  np.testing.assert_allclose(ds.x_test, ext, atol=1e-5, rtol=1e-5)
  assert ds.info["source"] == "sklearn.datasets.load_digits"
  raw = D.load_raw("digits")
  np.testing.assert_array_equal(raw.x_train[..., 0], d.images[:1500])
  assert raw.x_train.dtype == np.uint8 and raw.max_value == 16.0


def test_digits_read_through_the_cache_without_scikit_learn(tmp_path):
  """A warm cache serves digits without importing scikit-learn (about 1 s), with the
  same pixels as scikit-learn's own reader."""
  from sklearn.datasets import load_digits
  code = ("import sys, json, numpy as np; from dnc_jax import data as D; "
          "ds = D.load_dataset('digits'); raw = D.load_raw('digits'); "
          "np.save(sys.argv[1], raw.x_train[..., 0]); "
          "print(json.dumps([ds.info['cache'], 'sklearn' in sys.modules]))")
  env = {**os.environ, "DNC_JAX_CACHE": str(tmp_path / "cache")}
  seen = []
  for i in range(2):
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"x{i}.npy")], env=env,
                         capture_output=True, text=True, cwd=REPO, check=True)
    seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
  assert seen == [["written", True], ["hit", False]]
  pixels = load_digits().images[:1500]
  for i in range(2):
    np.testing.assert_array_equal(np.load(tmp_path / f"x{i}.npy"), pixels)


def test_digits_cache_entry_follows_the_split(monkeypatch):
  """The cache holds split arrays: another split size must not be served the old entry."""
  from dnc_jax.data import sources
  assert D.load_raw("digits").x_train.shape[0] == 1500
  monkeypatch.setattr(sources, "DIGITS_TRAIN_SIZE", 1200)
  raw = D.load_raw("digits")
  assert raw.x_train.shape[0] == 1200 and raw.x_test.shape[0] == 597


def test_synthetic_seeded_and_parameterised():
  a = D.load_dataset("synthetic", num_classes=4, dim=12, n=200, n_test=80, imbalance=4.0,
                     noise=0.5, seed=3)
  b = D.load_dataset("synthetic", num_classes=4, dim=12, n=200, n_test=80, imbalance=4.0,
                     noise=0.5, seed=3)
  c = D.load_dataset("synthetic", num_classes=4, dim=12, n=200, n_test=80, imbalance=4.0,
                     noise=0.5, seed=4)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.x_train, c.x_train)
  assert a.x_train.shape == (200, 12) and a.x_test.shape == (80, 12)
  assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
  assert a.image_shape == (1, 12, 1) and a.num_classes == 4
  counts = a.info["counts_train"]
  assert sum(counts) == 200 and counts == sorted(counts, reverse=True)
  assert counts[0] / counts[-1] == pytest.approx(4.0, rel=0.1)
  assert np.all(np.diff(a.y_train) >= 0)
  np.testing.assert_allclose(a.x_train.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(a.x_train.std(0), 1, atol=1e-5)
  assert a.info["options"]["imbalance"] == 4.0 and a.info["options"]["seed"] == 3
  json.dumps(a.info)
  balanced = D.load_dataset("synthetic", num_classes=5, n=100, n_test=50)
  assert balanced.info["counts_train"] == [20] * 5
  # Less noise → tighter classes (within-class spread relative to class means).
  tight = D.load_dataset("synthetic", num_classes=3, dim=8, n=300, noise=0.01)
  mu = np.stack([tight.x_train[tight.y_train == k].mean(0) for k in range(3)])
  assert np.abs(tight.x_train - mu[tight.y_train]).max() < 0.1


def test_one_hot_pm1():
  y = D.one_hot_pm1(np.array([2, 0]), 3)
  assert y.dtype == np.float32
  np.testing.assert_array_equal(y, [[-1, -1, 1], [1, -1, -1]])
  with pytest.raises(DataError, match="0..2"):
    D.one_hot_pm1(np.array([3]), 3)


# -- bad input -----------------------------------------------------------------


def test_unknown_dataset_lists_names():
  with pytest.raises(ConfigError, match="unknown dataset 'cifar100'.*digits.*svhn_cropped"):
    D.load_dataset("cifar100")


def test_missing_data_dir(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    D.load_dataset("fashion_mnist", data_dir=tmp_path / "nope")


def test_n_larger_than_dataset_names_size():
  with pytest.raises(DataError, match="n=2001 .* has 2000 points"):
    D.load_dataset("fashion_mnist", n=2001, data_dir=FIXTURE)
  with pytest.raises(DataError, match="n_test=501 .* has 500 points"):
    D.load_dataset("fashion_mnist", n=100, n_test=501, data_dir=FIXTURE)
  with pytest.raises(DataError, match="1500 points"):
    D.load_dataset("digits", n=1501)
  with pytest.raises(ConfigError, match=">= 1"):
    D.load_dataset("digits", n=0)
  with pytest.raises(ConfigError, match="integer"):
    D.load_dataset("digits", n=10.5)


def test_class_with_fewer_than_two_points():
  with pytest.raises(DataError, match="at least 2"):
    D.load_dataset("fashion_mnist", n=5, data_dir=FIXTURE)


def test_classes_absent_or_invalid():
  with pytest.raises(DataError, match="no class 12.*0..9"):
    D.load_dataset("fashion_mnist", classes=[3, 12], data_dir=FIXTURE)
  with pytest.raises(ConfigError, match="at least 2"):
    D.load_dataset("fashion_mnist", classes=[3], data_dir=FIXTURE)
  with pytest.raises(ConfigError, match="duplicates"):
    D.load_dataset("fashion_mnist", classes=[3, 3], data_dir=FIXTURE)
  with pytest.raises(ConfigError, match="integers"):
    D.load_dataset("fashion_mnist", classes=["a", "b"], data_dir=FIXTURE)


def test_nan_inf_rejected():
  with pytest.raises(DataError, match="NaN or Inf"):
    D.load_dataset("synthetic", noise=float("inf"), n=50, num_classes=2)
  with pytest.raises(ConfigError):
    D.load_dataset("synthetic", separation=float("nan"), n=50, num_classes=2)


def test_option_validation():
  with pytest.raises(ConfigError, match="only to the synthetic"):
    D.load_dataset("digits", noise=0.1)
  with pytest.raises(ConfigError, match="unknown synthetic options"):
    D.load_dataset("synthetic", nosie=0.1)
  with pytest.raises(ConfigError, match="imbalance"):
    D.load_dataset("synthetic", imbalance=0.5)
  with pytest.raises(ConfigError, match="balanced"):
    D.load_dataset("synthetic", imbalance=2.0, balanced=True)
  with pytest.raises(ConfigError, match="data_dir"):
    D.load_dataset("digits", data_dir="x")


# -- sources and cache ---------------------------------------------------------


def test_debian_location_is_the_default(monkeypatch):
  monkeypatch.setattr(local, "DEBIAN_FASHION_MNIST_DIR", str(FIXTURE))
  ds = D.load_dataset("fashion_mnist", n=100, n_test=10)
  assert ds.info["source"] == "debian:idx"
  ref = D.load_dataset("fashion_mnist", n=100, n_test=10, data_dir=FIXTURE)
  np.testing.assert_array_equal(ds.x_train, ref.x_train)


@needs_debian
def test_fixture_is_the_start_of_the_debian_files():
  real = D.load_dataset("fashion_mnist", n=2000, n_test=500)
  assert real.info["source"] == "debian:idx"
  fix = D.load_dataset("fashion_mnist", n=2000, n_test=500, data_dir=FIXTURE)
  for a in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(real, a), getattr(fix, a))
  assert real.info["size_train"] == 60000 and real.info["size_test"] == 10000


@needs_debian
def test_fixture_script_reproduces_the_committed_files(tmp_path):
  import importlib.util

  script = FIXTURE.parent / "make_fashion_mnist_fixture.py"
  spec = importlib.util.spec_from_file_location("make_fashion_mnist_fixture", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  module.main(["--out", str(tmp_path)])
  for f in FIXTURE.iterdir():
    assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_cache_written_then_hit(tmp_path):
  cache = tmp_path / "cache"
  first = D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  assert first.info["cache"] == "written"
  entries = list(cache.glob("fashion_mnist/*/meta.json"))
  assert len(entries) == 1
  assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temporary files
  second = D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  assert second.info["cache"] == "hit"
  np.testing.assert_array_equal(first.x_train, second.x_train)
  raw = D.load_raw("fashion_mnist", data_dir=FIXTURE)
  assert raw.extra["cache"] == "hit" and raw.x_train.dtype == np.uint8
  assert raw.x_train.shape == (2000, 28, 28, 1)


def test_cache_disabled(tmp_path):
  ds = D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE, cache=False)
  assert ds.info["cache"] == "disabled"
  assert not (tmp_path / "cache").exists()


def test_cache_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.delenv("DNC_JAX_CACHE")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert D.cache_dir() == tmp_path / "xdg" / "dnc_jax"
  D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  assert list((tmp_path / "xdg" / "dnc_jax" / "fashion_mnist").glob("*/meta.json"))


def test_cache_invalidated_by_changed_files(tmp_path):
  data = tmp_path / "fm"
  data.mkdir()
  for f in FIXTURE.glob("*.gz"):
    (data / f.name).write_bytes(f.read_bytes())
  assert D.load_dataset("fashion_mnist", n=100, data_dir=data).info["cache"] == "written"
  labels = _idx(FIXTURE / "train-labels-idx1-ubyte.gz").copy()
  labels[:100] = labels[100:200]
  D.write_idx(data / "train-labels-idx1-ubyte.gz", labels)
  ds = D.load_dataset("fashion_mnist", n=100, data_dir=data)
  assert ds.info["cache"] == "written"
  np.testing.assert_array_equal(np.sort(ds.y_train), np.sort(labels[:100]))


def test_corrupt_cache_entry_is_ignored(tmp_path):
  D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  (entry,) = (tmp_path / "cache").glob("fashion_mnist/*")
  (entry / "train_images.npy").write_bytes(b"garbage")
  with pytest.warns(UserWarning, match="unreadable cache"):
    ds = D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  assert ds.info["cache"] == "written"
  assert D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE).info["cache"] == "hit"


def test_unwritable_cache_warns_and_loads(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("DNC_JAX_CACHE", str(blocker / "cache"))
  with pytest.warns(UserWarning, match="could not write"):
    ds = D.load_dataset("fashion_mnist", n=100, data_dir=FIXTURE)
  assert ds.info["cache"] == "unwritable" and ds.x_train.shape == (100, 784)


def test_file_permissions_follow_umask(tmp_path):
  D.write_idx(tmp_path / "a.gz", np.zeros((2, 2), np.uint8))
  old = os.umask(0o022)
  os.umask(old)
  assert (tmp_path / "a.gz").stat().st_mode & 0o777 == 0o666 & ~old


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 500), k=st.integers(2, 12), imbalance=st.floats(1.0, 50.0))
def test_class_counts_sum_and_order(n, k, imbalance):
  counts = synthetic._class_counts(n, k, imbalance)
  assert counts.sum() == n and (counts >= 0).all()
  assert (np.diff(counts) <= 1).all()  # non-increasing up to rounding


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]), gz=st.booleans())
def test_idx_round_trip_property(tmp_path_factory, shape, dtype, gz):
  rng = np.random.default_rng(0)
  arr = (rng.standard_normal(shape) * 100).astype(dtype)
  path = tmp_path_factory.mktemp("idx") / ("a.gz" if gz else "a")
  D.write_idx(path, arr)
  back = D.read_idx(path)
  assert back.shape == arr.shape and back.dtype == arr.dtype
  np.testing.assert_array_equal(back, arr)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_standardise_matches_float64_reference(data):
  n = data.draw(st.integers(2, 30))
  d = data.draw(st.integers(1, 8))
  seed = data.draw(st.integers(0, 2**31 - 1))
  x = np.random.default_rng(seed).integers(0, 256, size=(n + 3, d)).astype(np.uint8)
  x[:, 0] = 7  # a constant feature
  a, b, n_const = pipeline._standardise(x[:n], x[n:])
  ea, eb = _reference(x[:n], x[n:])
  assert n_const == int((np.ptp(x[:n], axis=0) == 0).sum())
  np.testing.assert_allclose(a, ea, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(b, eb, rtol=1e-5, atol=1e-4)
