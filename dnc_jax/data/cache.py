"""The cache of decoded raw arrays (uint8 images and labels, before the pipeline).

One folder per dataset and source key: four ``.npy`` files and ``meta.json``,
each written atomically, ``meta.json`` last, so a reader sees a complete entry
or none. The key hashes the dataset name, the source kind and a fingerprint of
the source files (absolute paths, sizes, modification times), so a changed or
moved file gives a new entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import warnings
from typing import Any

import numpy as np

from dnc_jax.data.raw import RawData
from dnc_jax.io.atomic import atomic_write_bytes

# Part of every key: raising it orphans the entries of an older layout.
_CACHE_FORMAT = 1


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


def file_fingerprint(path: str) -> list:
  """What identifies a source file's contents cheaply: absolute path, size, mtime (ns)."""
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def cache_key(name: str, source: str, fingerprint: Any) -> str:
  """The entry's folder name: a hash of the format, dataset, source kind and fingerprint."""
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


def cache_store(name: str, key: str, raw: RawData) -> str | None:
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


def cached(name: str, source: str, fingerprint: Any, reader, *, cache: bool):
  """Returns (raw, cache_status) reading through the cache when ``cache``."""
  if not cache:
    return reader(), "disabled"
  key = cache_key(name, source, fingerprint)
  raw = _cache_load(name, key)
  if raw is not None:
    return raw, "hit"
  raw = reader()
  stored = cache_store(name, key, raw)
  return raw, ("written" if stored else "unwritable")
