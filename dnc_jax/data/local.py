"""Raw files on local disk: a ``data_dir`` or the Debian Fashion-MNIST folder.

Finds the files of ``mnist``/``fashion_mnist`` (four IDX files), ``cifar10``
(python or binary batches, or either archive, read in memory) and
``svhn_cropped`` (two ``.mat`` files) in a folder or its usual sub-folders, and
reads them through the cache into a :class:`~dnc_jax.data.raw.RawData`.
"""

from __future__ import annotations

import os
import pathlib
import tarfile
import zlib
from typing import Iterable, Sequence

import numpy as np

from dnc_jax.data.cache import cached, file_fingerprint
from dnc_jax.data.formats import (parse_cifar_binary, parse_cifar_python, read_idx,
                                  read_svhn_mat)
from dnc_jax.data.raw import RawData
from dnc_jax.errors import DataError

# Where the Debian package `dataset-fashion-mnist` installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

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

_CIFAR_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR_ARCHIVES = {"cifar-10-python.tar.gz": ("cifar-10-batches-py", _CIFAR_PY_FILES),
                   "cifar-10-binary.tar.gz": ("cifar-10-batches-bin", _CIFAR_BIN_FILES)}

_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


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
  parse = parse_cifar_python if kind == "python" else parse_cifar_binary
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


def _read_svhn(files: dict, source: str) -> RawData:
  xtr, ytr = read_svhn_mat(files["train"])
  xte, yte = read_svhn_mat(files["test"])
  return RawData(xtr, ytr, xte, yte, source=source,
                 files=[str(files["train"]), str(files["test"])])


def expected_files(name: str) -> str:
  """The raw file names of ``name``, for error messages."""
  if name in ("mnist", "fashion_mnist"):
    return ", ".join(v[0] + "[.gz]" for v in _IDX_FILES.values())
  if name == "cifar10":
    return ("cifar-10-batches-py/{data_batch_1..5, test_batch} (python version), "
            "cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin} (binary version), "
            "or cifar-10-python.tar.gz / cifar-10-binary.tar.gz")
  return ", ".join(_SVHN_FILES.values())


def load_raw_files(name: str, root: pathlib.Path, *, cache: bool, source_prefix: str):
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
  fingerprint = [file_fingerprint(str(p)) for p in paths]
  return cached(name, source, fingerprint, reader, cache=cache)


def load_local(name: str, data_dir, *, cache: bool):
  """Raw files of ``name`` in ``data_dir`` or, without one, in the Debian folder.

  Returns:
    ``(raw, cache_status)``, or None when there are no raw files of ``name``
    (only ``fashion_mnist`` has a Debian folder).

  Raises:
    DataError: ``data_dir`` is not a folder, or its files are incomplete or bad.
  """
  if data_dir is not None:
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
      raise DataError(
          f"data directory {root} does not exist" if not root.exists()
          else f"data_dir {root} is not a directory")
    return load_raw_files(name, root, cache=cache, source_prefix="data_dir")
  if name == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
    return load_raw_files(name, pathlib.Path(DEBIAN_FASHION_MNIST_DIR), cache=cache,
                          source_prefix="debian")
  return None
