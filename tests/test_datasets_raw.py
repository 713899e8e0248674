"""Raw formats written here byte by byte and read back exactly: IDX, CIFAR-10, SVHN.

Each writer below follows the published format description, independently of
the reader in dnc_jax.data.
"""

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from dnc_jax import data as D
from dnc_jax.errors import DataError


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  monkeypatch.setenv("DNC_JAX_CACHE", str(tmp_path / "cache"))


def _rng_images(n, shape, seed):
  return np.random.default_rng(seed).integers(0, 256, size=(n,) + shape, dtype=np.uint8)


def _balanced_labels(n, seed, k=10):
  y = np.arange(n) % k
  np.random.default_rng(seed).shuffle(y)
  return y.astype(np.uint8)


# -- IDX -------------------------------------------------------------------------


def _idx_bytes(array, magic):
  header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder, x, y, xt, yt, *, gz=True, dotted=False):
  folder.mkdir(parents=True, exist_ok=True)
  sep = "." if dotted else "-"
  for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
    for kind, arr, magic in (("images", images, 2051), ("labels", labels, 2049)):
      ndim = 3 if kind == "images" else 1
      name = f"{prefix}-{kind}{sep}idx{ndim}-ubyte" + (".gz" if gz else "")
      payload = _idx_bytes(arr, magic)
      (folder / name).write_bytes(gzip.compress(payload) if gz else payload)


@pytest.fixture
def mnist_arrays():
  return (_rng_images(60, (28, 28), 0), _balanced_labels(60, 1),
          _rng_images(20, (28, 28), 2), _balanced_labels(20, 3))


@pytest.mark.parametrize("gz,dotted,sub", [(True, False, ""), (False, False, ""),
                                           (True, True, ""), (False, False, "MNIST/raw")])
def test_idx_round_trip_exact(tmp_path, mnist_arrays, gz, dotted, sub):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path / "d" / sub if sub else tmp_path / "d", x, y, xt, yt, gz=gz,
               dotted=dotted)
  raw = D.load_raw("mnist", data_dir=tmp_path / "d")
  assert raw.x_train.dtype == np.uint8 and raw.x_train.shape == (60, 28, 28, 1)
  assert raw.x_test.shape == (20, 28, 28, 1) and raw.y_train.shape == (60,)
  np.testing.assert_array_equal(raw.x_train[..., 0], x)
  np.testing.assert_array_equal(raw.y_train, y)
  np.testing.assert_array_equal(raw.x_test[..., 0], xt)
  np.testing.assert_array_equal(raw.y_test, yt)
  assert raw.source == "data_dir:idx"
  ds = D.load_dataset("mnist", data_dir=tmp_path / "d", flatten=False)
  order = np.argsort(y, kind="stable")
  np.testing.assert_array_equal(ds.y_train, y[order])
  xs = x[order].reshape(60, -1) / 255.0
  expected = (xs - xs.mean(0)) / xs.std(0)
  np.testing.assert_allclose(ds.x_train.reshape(60, -1), expected, rtol=1e-5, atol=1e-5)
  assert ds.x_train.shape == (60, 28, 28, 1) and ds.image_shape == (28, 28, 1)


def test_idx_generic_dtypes_round_trip(tmp_path):
  for arr in (np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5,
              np.linspace(-1, 1, 6).reshape(3, 2), np.arange(5, dtype=np.int16)):
    D.write_idx(tmp_path / "a.idx", arr)
    back = D.read_idx(tmp_path / "a.idx")
    assert back.dtype == arr.dtype.newbyteorder("=") and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_wrong_magic(tmp_path, mnist_arrays):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path, x, y, xt, yt)
  # Swap images and labels: the names are right, the contents are not.
  a, b = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
  ab, bb = a.read_bytes(), b.read_bytes()
  a.write_bytes(bb)
  b.write_bytes(ab)
  with pytest.raises(DataError, match=r"magic number 2049 .*expected 2051"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_not_idx_at_all(tmp_path):
  (tmp_path / "x").write_bytes(b"\x01\x02\x03\x04hello")
  with pytest.raises(DataError, match="not an IDX file"):
    D.read_idx(tmp_path / "x")


@pytest.mark.parametrize("cut", [10, 1000])
def test_idx_truncated_payload(tmp_path, mnist_arrays, cut):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path, x, y, xt, yt, gz=False)
  f = tmp_path / "t10k-images-idx3-ubyte"
  f.write_bytes(f.read_bytes()[:-cut])
  with pytest.raises(DataError, match="truncated"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_truncated_gzip(tmp_path, mnist_arrays):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path, x, y, xt, yt)
  f = tmp_path / "train-images-idx3-ubyte.gz"
  f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
  with pytest.raises(DataError, match="corrupt or truncated gzip"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_trailing_bytes(tmp_path, mnist_arrays):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path, x, y, xt, yt, gz=False)
  f = tmp_path / "train-labels-idx1-ubyte"
  f.write_bytes(f.read_bytes() + b"\x00\x00")
  with pytest.raises(DataError, match="corrupt"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_labels_out_of_range(tmp_path, mnist_arrays):
  x, y, xt, yt = mnist_arrays
  y = y.copy()
  y[7] = 10
  _write_mnist(tmp_path, x, y, xt, yt)
  with pytest.raises(DataError, match="labels out of range: found 10"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_count_mismatch(tmp_path, mnist_arrays):
  x, y, xt, yt = mnist_arrays
  _write_mnist(tmp_path, x, y[:59], xt, yt)
  with pytest.raises(DataError, match="60 images but .* 59 labels"):
    D.load_dataset("mnist", data_dir=tmp_path)


def test_idx_partial_folder_names_missing_files(tmp_path, mnist_arrays):
  _write_mnist(tmp_path, *mnist_arrays)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
    D.load_dataset("mnist", data_dir=tmp_path)


# -- CIFAR-10 -------------------------------------------------------------------


@pytest.fixture
def cifar_arrays():
  """Five training batches of 8 and a test batch of 6 (rows: R, G, B planes)."""
  rng = np.random.default_rng(5)
  batches = [(rng.integers(0, 256, (8, 3072), dtype=np.uint8),
              [int(v) for v in rng.permutation(np.arange(8) % 10)]) for _ in range(5)]
  test = (rng.integers(0, 256, (6, 3072), dtype=np.uint8), [0, 1, 2, 3, 4, 5])
  return batches, test


def _expected_hwc(rows):
  """x[i, h, w, c] = rows[i, 1024*c + 32*h + w], written out element by element."""
  n = rows.shape[0]
  out = np.zeros((n, 32, 32, 3), np.uint8)
  for c in range(3):
    for h in range(32):
      out[:, h, :, c] = rows[:, 1024 * c + 32 * h:1024 * c + 32 * h + 32]
  return out


def _cifar_python_batch(rows, labels, *, bytes_keys=True, protocol=2):
  d = {"batch_label": "training batch", "labels": labels, "data": rows,
       "filenames": [f"img_{i}.png" for i in range(len(labels))]}
  if bytes_keys:  # the original files are Python 2 pickles with byte-string keys
    d = {k.encode(): v for k, v in d.items()}
  return pickle.dumps(d, protocol=protocol)


def _write_cifar_python(folder, cifar, **kw):
  folder.mkdir(parents=True, exist_ok=True)
  batches, test = cifar
  for i, (rows, labels) in enumerate(batches, 1):
    (folder / f"data_batch_{i}").write_bytes(_cifar_python_batch(rows, labels, **kw))
  (folder / "test_batch").write_bytes(_cifar_python_batch(*test, **kw))


def _cifar_binary_batch(rows, labels):
  return b"".join(bytes([lab]) + row.tobytes() for row, lab in zip(rows, labels))


def _write_cifar_binary(folder, cifar):
  folder.mkdir(parents=True, exist_ok=True)
  batches, test = cifar
  for i, (rows, labels) in enumerate(batches, 1):
    (folder / f"data_batch_{i}.bin").write_bytes(_cifar_binary_batch(rows, labels))
  (folder / "test_batch.bin").write_bytes(_cifar_binary_batch(*test))


def _check_cifar(raw, cifar):
  batches, test = cifar
  rows = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  assert raw.x_train.dtype == np.uint8 and raw.x_train.shape == (40, 32, 32, 3)
  assert raw.x_test.shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(raw.x_train, _expected_hwc(rows))
  np.testing.assert_array_equal(raw.y_train, labels)
  np.testing.assert_array_equal(raw.x_test, _expected_hwc(test[0]))
  np.testing.assert_array_equal(raw.y_test, test[1])


@pytest.mark.parametrize("bytes_keys,protocol", [(True, 2), (False, 5)])
def test_cifar_python_exact(tmp_path, cifar_arrays, bytes_keys, protocol):
  _write_cifar_python(tmp_path / "cifar-10-batches-py", cifar_arrays, bytes_keys=bytes_keys,
                      protocol=protocol)
  raw = D.load_raw("cifar10", data_dir=tmp_path)
  _check_cifar(raw, cifar_arrays)
  assert raw.source == "data_dir:cifar-python"
  ds = D.load_dataset("cifar10", data_dir=tmp_path, n=40, classes=[0, 1, 2, 3, 4, 5, 6, 7])
  assert ds.x_train.shape[1] == 3072 and ds.image_shape == (32, 32, 3)


def test_cifar_binary_exact(tmp_path, cifar_arrays):
  _write_cifar_binary(tmp_path / "cifar-10-batches-bin", cifar_arrays)
  raw = D.load_raw("cifar10", data_dir=tmp_path)
  _check_cifar(raw, cifar_arrays)
  assert raw.source == "data_dir:cifar-binary"


@pytest.mark.parametrize("kind", ["python", "binary"])
def test_cifar_archives_read_without_extracting(tmp_path, cifar_arrays, kind):
  src = tmp_path / "src"
  if kind == "python":
    _write_cifar_python(src / "cifar-10-batches-py", cifar_arrays)
    archive, prefix = "cifar-10-python.tar.gz", "cifar-10-batches-py"
  else:
    _write_cifar_binary(src / "cifar-10-batches-bin", cifar_arrays)
    archive, prefix = "cifar-10-binary.tar.gz", "cifar-10-batches-bin"
  (tmp_path / "dl").mkdir()
  with tarfile.open(tmp_path / "dl" / archive, "w:gz") as tar:
    tar.add(src / prefix, arcname=prefix)
  raw = D.load_raw("cifar10", data_dir=tmp_path / "dl")
  _check_cifar(raw, cifar_arrays)
  assert sorted(os.listdir(tmp_path / "dl")) == [archive]  # nothing extracted


class _RunsCode:
  """Unpickling this calls os.system: what a crafted 'batch' would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_cifar_crafted_pickle_refused(tmp_path, cifar_arrays):
  _write_cifar_python(tmp_path, cifar_arrays)
  marker = tmp_path / "pwned"
  evil = {b"data": cifar_arrays[0][0][0], b"labels": _RunsCode(marker)}
  (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
  with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt|os)\.system"):
    D.load_dataset("cifar10", data_dir=tmp_path)
  assert not marker.exists()
  # eval, and a global smuggled in through a numpy-looking name, are refused too.
  payload = b"cbuiltins\neval\n(S'1+1'\ntR."
  (tmp_path / "data_batch_3").write_bytes(payload)
  with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
    D.load_raw("cifar10", data_dir=tmp_path, cache=False)
  (tmp_path / "data_batch_3").write_bytes(b"cnumpy\nload\n(S'x'\ntR.")
  with pytest.raises(DataError, match="refusing to unpickle numpy.load"):
    D.load_raw("cifar10", data_dir=tmp_path, cache=False)


def test_cifar_python_truncated(tmp_path, cifar_arrays):
  _write_cifar_python(tmp_path, cifar_arrays)
  f = tmp_path / "data_batch_2"
  f.write_bytes(f.read_bytes()[:500])
  with pytest.raises(DataError, match="data_batch_2 is not a readable CIFAR-10 python batch"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_python_missing_key(tmp_path, cifar_arrays):
  _write_cifar_python(tmp_path, cifar_arrays)
  (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": cifar_arrays[1][0]}))
  with pytest.raises(DataError, match="without the key 'labels'"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_python_wrong_shape(tmp_path, cifar_arrays):
  _write_cifar_python(tmp_path, cifar_arrays)
  bad = {b"data": np.zeros((6, 1000), np.uint8), b"labels": [0] * 6}
  (tmp_path / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
  with pytest.raises(DataError, match=r"uint8 array \[N, 3072\]"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_binary_truncated(tmp_path, cifar_arrays):
  _write_cifar_binary(tmp_path, cifar_arrays)
  f = tmp_path / "data_batch_4.bin"
  f.write_bytes(f.read_bytes()[:-7])
  with pytest.raises(DataError, match="data_batch_4.bin is truncated"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_labels_out_of_range(tmp_path, cifar_arrays):
  batches, test = cifar_arrays
  batches[1] = (batches[1][0], [11] + batches[1][1][1:])
  _write_cifar_binary(tmp_path, (batches, test))
  with pytest.raises(DataError, match="labels out of range: found 11"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_missing_batch(tmp_path, cifar_arrays):
  _write_cifar_python(tmp_path, cifar_arrays)
  (tmp_path / "data_batch_5").unlink()
  with pytest.raises(DataError, match="not data_batch_5"):
    D.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_corrupt_archive(tmp_path, cifar_arrays):
  src = tmp_path / "src"
  _write_cifar_binary(src / "cifar-10-batches-bin", cifar_arrays)
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    tar.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
  (tmp_path / "dl").mkdir()
  (tmp_path / "dl" / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue()[:300])
  with pytest.raises(DataError, match="corrupt or truncated archive"):
    D.load_dataset("cifar10", data_dir=tmp_path / "dl")


# -- SVHN ------------------------------------------------------------------------


def _write_svhn(folder, x, y, *, which=("train", "test")):
  import scipy.io

  folder.mkdir(parents=True, exist_ok=True)
  for split in which:
    # The files store X as [32, 32, 3, N] and y as [N, 1] with 10 for digit 0.
    scipy.io.savemat(folder / f"{split}_32x32.mat",
                     {"X": np.moveaxis(x[split], 0, 3), "y": y[split].reshape(-1, 1)})


@pytest.fixture
def svhn_arrays():
  x = {"train": _rng_images(30, (32, 32, 3), 7), "test": _rng_images(12, (32, 32, 3), 8)}
  # Unbalanced, like SVHN: many 1s, label 10 (= digit 0) present.
  y = {"train": np.array([1] * 8 + [2] * 4 + [10] * 4 + [3, 4, 5, 6, 7, 8, 9] * 2, np.uint8),
       "test": np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 1], np.uint8)}
  return x, y


def test_svhn_mat_exact(tmp_path, svhn_arrays):
  x, y = svhn_arrays
  _write_svhn(tmp_path / "svhn", x, y)
  raw = D.load_raw("svhn_cropped", data_dir=tmp_path)
  assert raw.x_train.dtype == np.uint8 and raw.x_train.shape == (30, 32, 32, 3)
  np.testing.assert_array_equal(raw.x_train, x["train"])
  np.testing.assert_array_equal(raw.x_test, x["test"])
  np.testing.assert_array_equal(raw.y_train, np.where(y["train"] == 10, 0, y["train"]))
  np.testing.assert_array_equal(raw.y_test, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 1])
  ds = D.load_dataset("svhn_cropped", data_dir=tmp_path, n_test=12)
  # Unbalanced classes are kept and reported.
  assert ds.info["counts_train"] == [4, 8, 4, 2, 2, 2, 2, 2, 2, 2]
  assert ds.info["counts_train"] == np.bincount(raw.y_train, minlength=10).tolist()
  assert ds.info["source"] == "data_dir:svhn-mat"


def test_svhn_class_with_one_point_is_refused(tmp_path, svhn_arrays):
  x, y = svhn_arrays
  y["train"] = y["train"].copy()
  y["train"][-6] = 1  # digit 4 now appears once
  _write_svhn(tmp_path, x, y)
  with pytest.raises(DataError, match="class 4 has 1 of the 30 training points.*at least 2"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)


def test_svhn_missing_keys(tmp_path, svhn_arrays):
  import scipy.io

  x, y = svhn_arrays
  _write_svhn(tmp_path, x, y)
  scipy.io.savemat(tmp_path / "test_32x32.mat", {"images": np.moveaxis(x["test"], 0, 3)})
  with pytest.raises(DataError, match=r"no variable X or y.*found: \['images'\]"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)


def test_svhn_labels_out_of_range(tmp_path, svhn_arrays):
  x, y = svhn_arrays
  y["test"] = y["test"].copy()
  y["test"][3] = 0  # SVHN labels are 1..10
  _write_svhn(tmp_path, x, y)
  with pytest.raises(DataError, match="labels out of range.*1..10"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)


def test_svhn_corrupt_and_truncated(tmp_path, svhn_arrays):
  x, y = svhn_arrays
  _write_svhn(tmp_path, x, y)
  f = tmp_path / "train_32x32.mat"
  f.write_bytes(f.read_bytes()[:2000])
  with pytest.raises(DataError, match="train_32x32.mat is not a readable .mat file"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)
  f.write_bytes(b"this is not a MATLAB file at all" * 10)
  with pytest.raises(DataError, match="not a readable .mat file"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)


def test_svhn_wrong_shape(tmp_path, svhn_arrays):
  import scipy.io

  x, y = svhn_arrays
  _write_svhn(tmp_path, x, y)
  scipy.io.savemat(tmp_path / "test_32x32.mat",
                   {"X": x["test"], "y": y["test"].reshape(-1, 1)})  # not moved to [..., N]
  with pytest.raises(DataError, match=r"expected \[32, 32, 3, N\]"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)


def test_svhn_only_one_file(tmp_path, svhn_arrays):
  _write_svhn(tmp_path, *svhn_arrays, which=("train",))
  with pytest.raises(DataError, match="not test_32x32.mat"):
    D.load_dataset("svhn_cropped", data_dir=tmp_path)
