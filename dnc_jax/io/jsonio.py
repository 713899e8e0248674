"""JSON and CSV: one cleaner for NumPy/JAX values and non-finite floats."""
from __future__ import annotations

import csv
import io
import json
import math
import pathlib
from typing import Any, Iterable

import numpy as np

from dnc_jax.io.atomic import atomic_write_bytes


def clean(obj: Any, *, inf_as_string: bool = False) -> Any:
  """JSON-ready copy: NumPy/JAX scalars and arrays to Python, NaN to ``None``.

  ``±inf`` becomes ``None`` too, or ``"inf"``/``"-inf"`` with ``inf_as_string``
  (training histories, where a diverged loss must stay distinguishable).
  """
  if isinstance(obj, dict):
    return {str(k): clean(v, inf_as_string=inf_as_string) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [clean(v, inf_as_string=inf_as_string) for v in obj]
  if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    if inf_as_string and not math.isnan(obj):
      return "inf" if obj > 0 else "-inf"
    return None
  if isinstance(obj, np.ndarray):
    return clean(obj.tolist(), inf_as_string=inf_as_string)
  return obj


def write_json(path, obj: Any, *, inf_as_string: bool = False) -> None:
  """``obj`` cleaned (:func:`clean`) and indented, written atomically."""
  text = json.dumps(clean(obj, inf_as_string=inf_as_string), indent=2) + "\n"
  atomic_write_bytes(path, text.encode())


def write_jsonl(path, rows: Iterable[dict], *, inf_as_string: bool = False) -> None:
  """One JSON object per line, written atomically."""
  text = "".join(json.dumps(clean(r, inf_as_string=inf_as_string)) + "\n" for r in rows)
  atomic_write_bytes(path, text.encode())


def write_csv(path, rows: Iterable[dict]) -> None:
  """Rows of dicts (the first row's keys are the header), written atomically."""
  rows = list(rows)
  buf = io.StringIO()
  fields = list(rows[0].keys()) if rows else []
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if v is None else v) for k, v in clean(row).items()})
  atomic_write_bytes(path, buf.getvalue().encode())


def read_json(path) -> Any:
  """The JSON value in ``path``."""
  return json.loads(pathlib.Path(path).read_text())
