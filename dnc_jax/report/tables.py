r"""Generated tables of the documents, computed from committed run summaries.

Every number a document quotes about a run comes from a compact summary
committed under ``docs/runs/<name>/`` (``config.json`` and ``metrics.json`` for
Deep RFM; ``config.json``, ``history.jsonl`` with the probe epochs only and
``summary.json`` for networks). A document holds each table between two
markers::

    <!-- table:NAME -->
    | ... generated markdown ... |
    <!-- /table:NAME -->

and the function registered under ``NAME`` (:func:`table`) computes that text
from the runs root. :func:`render` rewrites every block of a document
(``bin/figures --docs``); :func:`stale_blocks` lists the blocks whose committed
text differs from what the summaries give (a test runs it on every document).
"""
from __future__ import annotations

import importlib
import math
import pathlib
import re
from typing import Callable

from dnc_jax.errors import ConfigError, DataError

TableFn = Callable[[pathlib.Path], str]
_TABLES: dict[str, TableFn] = {}
# Modules whose import registers tables (imported on first use, so that this
# module stays importable without them).
TABLE_MODULES = ("dnc_jax.report.nets", "dnc_jax.report.rfm", "dnc_jax.report.precision")
_BLOCK = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)",
                    re.S)


def table(name: str) -> Callable[[TableFn], TableFn]:
  """Registers ``fn(runs_root) -> markdown`` as the generator of table ``name``."""
  def register(fn: TableFn) -> TableFn:
    if name in _TABLES and _TABLES[name] is not fn:
      raise ConfigError(f"table {name!r} is registered twice")
    _TABLES[name] = fn
    return fn
  return register


def tables() -> dict[str, TableFn]:
  """All registered tables (after importing :data:`TABLE_MODULES`)."""
  for mod in TABLE_MODULES:
    try:
      importlib.import_module(mod)
    except ModuleNotFoundError as e:
      if e.name != mod:
        raise
  return dict(_TABLES)


def block_names(text: str) -> list[str]:
  """Names of the generated blocks in ``text``, in order."""
  return [m.group("name") for m in _BLOCK.finditer(text)]


def generate(name: str, runs_root) -> str:
  """The markdown of table ``name`` (ending in a newline)."""
  fns = tables()
  if name not in fns:
    raise ConfigError(f"no table named {name!r}; known tables: {', '.join(sorted(fns))}")
  root = pathlib.Path(runs_root)
  if not root.is_dir():
    raise DataError(f"runs folder {root} does not exist; pass the folder of the committed "
                    "run summaries (docs/runs)")
  out = fns[name](root)
  return out if out.endswith("\n") else out + "\n"


def render(text: str, runs_root) -> str:
  """``text`` with every generated block recomputed from ``runs_root``."""
  return _BLOCK.sub(lambda m: m.group(1) + generate(m.group("name"), runs_root) + m.group(4),
                    text)


def stale_blocks(text: str, runs_root) -> list[str]:
  """Names of the blocks of ``text`` whose body differs from the regenerated table."""
  return [m.group("name") for m in _BLOCK.finditer(text)
          if m.group("body") != generate(m.group("name"), runs_root)]


def update_documents(paths, runs_root) -> list[str]:
  """Rewrites the generated blocks of each document in place; returns those changed."""
  from dnc_jax.io import runs as runs_lib
  changed = []
  for p in map(pathlib.Path, paths):
    old = p.read_text()
    new = render(old, runs_root)
    if new != old:
      runs_lib.atomic_write_bytes(p, new.encode())
      changed.append(str(p))
  return changed


def round_floats(x, digits: int):
  """Floats to ``digits`` significant digits (recursively); other values unchanged.

  Summaries keep no more digits than their measurements carry, so they stay small and
  their diffs readable.
  """
  if isinstance(x, float):
    return x if x == 0 or not math.isfinite(x) else float(f"{x:.{digits}g}")
  if isinstance(x, dict):
    return {k: round_floats(v, digits) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [round_floats(v, digits) for v in x]
  return x


def fmt(x: float, digits: int = 3) -> str:
  """``x`` with ``digits`` significant digits (the precision every generated table uses)."""
  if x is None:
    return "–"
  x = float(x)
  if x != x:
    return "nan"
  return f"{x:.{digits}g}"


def mean_sd(values, digits: int = 3) -> str:
  """``"m ± s"`` (sample sd, ddof = 1) of ``values``, or ``"m"`` for a single value."""
  import numpy as np
  v = np.asarray([float(a) for a in values], np.float64)
  if v.size == 1:
    return fmt(v[0], digits)
  return f"{fmt(v.mean(), digits)} ± {fmt(v.std(ddof=1), 2)}"
