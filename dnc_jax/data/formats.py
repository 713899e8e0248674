"""File formats of the raw datasets: IDX (MNIST), CIFAR-10 batches, SVHN ``.mat``.

Each reader takes one file (or its bytes) and returns NumPy arrays, raising
:class:`~dnc_jax.errors.DataError` with the file's name on anything corrupt,
truncated or unexpected. CIFAR-10's python batches are pickles and are read with
a restricted unpickler that resolves NumPy's array reconstruction only.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import pickle
import warnings
import zlib

import numpy as np

from dnc_jax.errors import ConfigError, DataError
from dnc_jax.io.atomic import atomic_write_bytes

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


# -- CIFAR-10 -----------------------------------------------------------------

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


def parse_cifar_python(payload: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
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


def parse_cifar_binary(payload: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
  """One binary-version batch (records of 1 label byte + 3072 pixels)."""
  if len(payload) == 0 or len(payload) % _CIFAR_RECORD:
    raise DataError(f"{path} is truncated or corrupt: {len(payload)} bytes is not a multiple "
                    f"of the {_CIFAR_RECORD}-byte CIFAR-10 record")
  rec = np.frombuffer(payload, np.uint8).reshape(-1, _CIFAR_RECORD)
  images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), rec[:, 0].astype(np.int64)


# -- SVHN cropped digits (.mat) -----------------------------------------------


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
