"""Run directories: atomic writes and protection of finished runs.

Every file is written to a temporary file in the same directory and renamed
into place, so a killed run never leaves a half-written file behind.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import tempfile
from typing import Any, Iterable

import numpy as np

from dnc_jax.errors import ConfigError

RUN_MARKERS = ("config.json", "metrics.json", "history.jsonl")


def atomic_write_bytes(path, payload: bytes) -> None:
  """Writes ``payload`` to ``path`` via a temporary file and ``os.replace``."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _clean(obj: Any) -> Any:
  """JSON-ready copy: NumPy/JAX scalars to Python, non-finite floats to None."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, (np.ndarray,)):
    return _clean(obj.tolist())
  return obj


def write_json(path, obj: Any) -> None:
  atomic_write_bytes(path, (json.dumps(_clean(obj), indent=2) + "\n").encode())


def write_csv(path, rows: Iterable[dict]) -> None:
  rows = list(rows)
  buf = io.StringIO()
  fields = list(rows[0].keys()) if rows else []
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if v is None else v) for k, v in _clean(row).items()})
  atomic_write_bytes(path, buf.getvalue().encode())


def write_npz(path, **arrays) -> None:
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def prepare_run_dir(out, *, overwrite: bool) -> pathlib.Path:
  """Checks that ``out`` can take a new run; creates it.

  Raises:
    ConfigError: ``out`` already holds a run and ``overwrite`` is False, or it
      is a file.
  """
  out = pathlib.Path(out)
  if out.exists() and not out.is_dir():
    raise ConfigError(f"--out {out} is a file; give a directory path")
  held = [m for m in RUN_MARKERS if (out / m).exists()]
  if held and not overwrite:
    raise ConfigError(f"{out} already holds a run ({', '.join(held)}); choose another --out, "
                      "or pass --overwrite to replace it")
  return out


def clear_run_files(out: pathlib.Path, names: Iterable[str]) -> None:
  """Removes the named files of a previous run (only those) before a new run."""
  for name in names:
    p = out / name
    if p.is_file():
      p.unlink()
