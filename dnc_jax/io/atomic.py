"""Atomic file writes: a temporary file in the same directory, renamed into place.

A killed process never leaves a half-written file under the real name; files get
the permissions the umask allows (``0o666 & ~umask``), like any other program's.
"""
from __future__ import annotations

import io
import os
import pathlib
import tempfile
from typing import Any, Callable

import numpy as np


def _umask() -> int:
  """The process umask (read without changing it where /proc allows)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  old = os.umask(0o022)
  os.umask(old)
  return old


def atomic_write_bytes(path, payload: bytes) -> None:
  """Writes ``payload`` to ``path`` via a temporary file and ``os.replace``.

  The file gets mode ``0o666 & ~umask`` (mkstemp alone would give 0600).
  """
  atomic_write_with(path, lambda f: f.write(payload))


def atomic_write_with(path, fill: Callable[[Any], Any]) -> None:
  """Like :func:`atomic_write_bytes`, with ``fill(f)`` writing to the open binary file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      fill(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  atomic_write_bytes(path, text.encode())


def write_npz(path, **arrays) -> None:
  """A compressed ``.npz``, atomically."""
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def write_npz_uncompressed(path, **arrays) -> None:
  """An uncompressed ``.npz`` streamed to the file (no copy in memory), atomically.

  For large arrays written often (checkpoints), where zlib costs seconds per write.
  """
  atomic_write_with(path, lambda f: np.savez(f, **arrays))
