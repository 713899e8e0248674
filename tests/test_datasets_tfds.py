"""The tensorflow-datasets source: mocked builders, offline failure, TF-free copies."""

import json
import os
import pathlib
import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dnc_jax import data as D
from dnc_jax.data import local
from dnc_jax.data import tfds as data_tfds
from dnc_jax.errors import DataError

FIXTURE = pathlib.Path(__file__).parent / "data" / "fashion_mnist"
DEBIAN = pathlib.Path(D.DEBIAN_FASHION_MNIST_DIR)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
  monkeypatch.setenv("DNC_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))


@pytest.fixture
def no_network(monkeypatch):
  """Every TCP connection fails as on a machine without a network."""
  calls = []

  def refuse(address, *args, **kwargs):
    calls.append(address)
    raise OSError(101, "Network is unreachable")

  monkeypatch.setattr(socket, "create_connection", refuse)
  return calls


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3)),
                                        ("svhn_cropped", (32, 32, 3))])
def test_mock_data_through_tfds_data_source(tmp_path, monkeypatch, name, shape):
  # mock_data replaces tfds' download-and-prepare with a no-op; what remains to
  # stub is the check that a download could happen (network and TensorFlow).
  monkeypatch.setattr(data_tfds, "_check_can_prepare", lambda *a, **k: None)
  (tmp_path / "tfds").mkdir()
  with tfds.testing.mock_data(num_examples=60):
    expected = {s: tfds.data_source(name, split=s) for s in ("train", "test")}
    raw = D.load_raw(name, data_dir=tmp_path / "tfds")
    ds = D.load_dataset(name, data_dir=tmp_path / "tfds", n=50, n_test=20, flatten=False)
  for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
    src = expected[split]
    assert x.dtype == np.uint8 and x.shape == (60,) + shape
    np.testing.assert_array_equal(y, [int(src[i]["label"]) for i in range(len(src))])
    np.testing.assert_array_equal(x, np.stack([src[i]["image"] for i in range(len(src))]))
  assert raw.source == "tfds"
  assert ds.x_train.shape == (50,) + shape and ds.x_train.dtype == np.float32
  assert ds.y_train.dtype == np.int32 and np.all(np.diff(ds.y_train) >= 0)
  order = np.argsort(raw.y_train[:50], kind="stable")
  np.testing.assert_array_equal(ds.y_train, raw.y_train[:50][order])
  xs = raw.x_train[:50][order].reshape(50, -1) / 255.0
  std = xs.std(0)
  expected_x = np.where(std > 0, (xs - xs.mean(0)) / np.where(std > 0, std, 1), 0)
  np.testing.assert_allclose(ds.x_train.reshape(50, -1), expected_x, rtol=1e-5, atol=1e-5)
  json.dumps(ds.info)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "svhn_cropped"])
def test_offline_fails_fast_with_alternatives(tmp_path, no_network, name):
  start = time.monotonic()
  with pytest.raises(DataError) as err:
    D.load_dataset(name, data_dir=tmp_path)
  assert time.monotonic() - start < 10
  msg = str(err.value)
  assert "no network" in msg and "Offline alternatives" in msg
  assert "'digits'" in msg and "data_dir" in msg
  assert ("dataset-fashion-mnist" in msg) == (name == "fashion_mnist")
  expected_file = {"mnist": "train-images-idx3-ubyte", "fashion_mnist": "t10k-labels-idx1-ubyte",
                   "cifar10": "data_batch_1", "svhn_cropped": "train_32x32.mat"}[name]
  assert expected_file in msg
  assert no_network  # the network was really probed


def test_offline_with_tensorflow_installed_still_fails_fast(tmp_path, monkeypatch):
  """A blackholed network (connections hang) is cut off by the probe's timeout."""
  monkeypatch.setattr(data_tfds, "_tensorflow_installed", lambda: True)
  monkeypatch.setattr(data_tfds, "NETWORK_TIMEOUT_S", 0.5)
  downloads = []
  monkeypatch.setattr(tfds, "data_source", lambda *a, **k: downloads.append(a))

  def hang(address, timeout=None, **kwargs):
    time.sleep(timeout)
    raise socket.timeout("timed out")

  monkeypatch.setattr(socket, "create_connection", hang)
  start = time.monotonic()
  with pytest.raises(DataError, match="no network.*Offline alternatives") as err:
    D.load_dataset("mnist")  # no data_dir: the tfds default ($TFDS_DATA_DIR) is searched
  assert time.monotonic() - start < 10
  assert "TensorFlow is not installed" not in str(err.value)
  assert not downloads  # tfds was never asked to download


def test_online_without_tensorflow_says_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setattr(data_tfds, "_network_reachable", lambda *a, **k: True)
  monkeypatch.setattr(data_tfds, "_tensorflow_installed", lambda: False)
  with pytest.raises(DataError, match=r"TensorFlow is not installed.*pip install '\.\[tfds\]'"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_proxy_is_probed_instead_of_the_host(monkeypatch, no_network):
  monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
  assert not data_tfds._network_reachable("storage.googleapis.com", 443)
  assert no_network == [("proxy.example", 3128)]


def _prepare_fixture_copy(data_dir):
  return D.prepare_tfds_from_raw("fashion_mnist", raw_dir=FIXTURE, data_dir=data_dir)


def test_tfds_copy_of_raw_files_gives_identical_arrays(tmp_path, no_network):
  prepared = _prepare_fixture_copy(tmp_path / "tfds")
  assert prepared == tmp_path / "tfds" / "fashion_mnist" / "1.0.0"
  assert list(prepared.glob("*.array_record*"))
  via_tfds = D.load_dataset("fashion_mnist", data_dir=tmp_path / "tfds")
  assert via_tfds.info["source"] == "tfds"
  assert via_tfds.info["tfds_order"]["train"].startswith("original order")
  via_raw = D.load_dataset("fashion_mnist", data_dir=FIXTURE)
  for a in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(via_tfds, a), getattr(via_raw, a))
  raw_t = D.load_raw("fashion_mnist", data_dir=tmp_path / "tfds")
  raw_r = D.load_raw("fashion_mnist", data_dir=FIXTURE)
  np.testing.assert_array_equal(raw_t.x_train, raw_r.x_train)
  np.testing.assert_array_equal(raw_t.y_test, raw_r.y_test)
  assert raw_t.extra["cache"] == "hit"  # the second read came from the cache
  # The copy is an ordinary tfds dataset: tfds reads it without dnc_jax's help.
  src = tfds.builder_from_directory(prepared).as_data_source(split="train")
  ex = src[0]
  np.testing.assert_array_equal(ex["image"], raw_r.x_train[int(ex["index"])])


def test_tfds_default_data_dir_from_environment(tmp_path, monkeypatch, no_network):
  _prepare_fixture_copy(tmp_path / "elsewhere")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "elsewhere"))
  monkeypatch.setattr(local, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))
  ds = D.load_dataset("fashion_mnist", n=100)
  assert ds.info["source"] == "tfds"
  assert str(tmp_path / "elsewhere") in ds.info["files"][0]


def test_tfrecord_copy_without_tensorflow_is_explained(tmp_path, monkeypatch):
  prepared = _prepare_fixture_copy(tmp_path / "tfds")
  info_file = prepared / "dataset_info.json"
  info = json.loads(info_file.read_text())
  info["fileFormat"] = "tfrecord"
  info_file.write_text(json.dumps(info))
  monkeypatch.setattr(data_tfds, "_tensorflow_installed", lambda: False)
  with pytest.raises(DataError, match=r"needs TensorFlow to read.*--file_format=array_record"):
    D.load_dataset("fashion_mnist", data_dir=tmp_path / "tfds", cache=False)


@pytest.mark.slow
@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.skipif(os.environ.get("DNC_JAX_FULL_DATA") != "1",
                    reason="about a minute on 2 cores; set DNC_JAX_FULL_DATA=1 to run")
def test_real_fashion_mnist_raw_and_tfds_identical(tmp_path, no_network):
  """All 70,000 Debian images: raw IDX path == tfds copy prepared from the same files."""
  D.prepare_tfds_from_raw("fashion_mnist", raw_dir=DEBIAN, data_dir=tmp_path / "tfds")
  via_tfds = D.load_raw("fashion_mnist", data_dir=tmp_path / "tfds", cache=False)
  via_raw = D.load_raw("fashion_mnist", data_dir=DEBIAN, cache=False)
  assert via_tfds.source == "tfds" and via_raw.source == "data_dir:idx"
  assert via_raw.x_train.shape == (60000, 28, 28, 1) and via_raw.x_test.shape == (10000, 28, 28, 1)
  for a in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(via_tfds, a), getattr(via_raw, a))
