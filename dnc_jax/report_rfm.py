r"""Deep RFM run summaries under ``docs/runs/`` and the tables the documents quote.

:func:`export_summary` turns a run directory of ``bin/deep_rfm`` into a compact
summary (``config.json`` and ``metrics.json``; per layer only NC1, NC2 and the
traces of the three representations, the accuracies, timings and the Gram
block means, no arrays), small enough to commit. The summary is itself a run
directory that :func:`dnc_jax.figures.load_run` reads, so ``bin/figures``
draws the NC curves from it.

The table functions below (registered with :func:`dnc_jax.report.table`)
compute every Deep RFM table of ``docs/reproduction.md`` from those summaries.

Usage::

    python -m dnc_jax.report_rfm export runs/rfm/NAME docs/runs/NAME
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

REPS = ("input", "agop", "features")
# Per-layer keys kept from metrics.json; "metrics" keeps these of each representation.
_LAYER_KEYS = ("layer", "nc1", "nc2", "train_acc", "test_acc", "seconds", "dim_in", "dim_out")
_METRIC_KEYS = ("tr_w", "tr_b", "nc1_papyan", "cdnv")
_CONFIG_DROP_RUN = ("options", "compile_cache", "out", "overwrite", "progress", "resume")
_DATASET_KEEP = ("name", "source", "size_train", "size_test", "counts_train", "counts_test",
                 "n", "n_test", "class_names", "class_proportions", "options")


def _round(x, digits: int = 7):
  """Floats to ``digits`` significant digits (recursively); other values unchanged."""
  if isinstance(x, float):
    if x == 0 or not math.isfinite(x):
      return x
    return float(f"{x:.{digits}g}")
  if isinstance(x, dict):
    return {k: _round(v, digits) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_round(v, digits) for v in x]
  return x


def gram_block_means(gram, labels) -> dict:
  r"""Mean entries of a Gram picture's class blocks (the numbers behind Figs. 1, 5, 6).

  Args:
    gram: ``[m, m]`` Gram matrix of centred, unit-normalised rows ordered by class.
    labels: ``[m]`` their labels.

  Returns:
    ``{"within": mean of the off-diagonal entries of the diagonal (same-class)
    blocks, "across": mean of the entries of the off-diagonal blocks}``. Collapse onto
    a simplex ETF gives ``within = 1`` and ``across = -1/(K-1)``.
  """
  import numpy as np
  g = np.asarray(gram, np.float64)
  lab = np.asarray(labels)
  same = lab[:, None] == lab[None, :]
  off = ~np.eye(g.shape[0], dtype=bool)
  return {"within": float(g[same & off].mean()), "across": float(g[~same].mean())}


def compact_config(config: dict) -> dict:
  """``config.json`` without the machine-specific and bulky parts."""
  out = dict(config)
  run = {k: v for k, v in config.get("run", {}).items() if k not in _CONFIG_DROP_RUN}
  out["run"] = run
  ds = config.get("dataset", {})
  out["dataset"] = {k: ds[k] for k in _DATASET_KEEP if k in ds}
  env = config.get("environment", {})
  out["environment"] = {"backend": env.get("backend"), "jax": env.get("jax")}
  return out


def compact_metrics(metrics: dict) -> dict:
  """``metrics.json`` with per-layer NC1/NC2, traces, accuracies and Gram block means."""
  layers = []
  for rec in metrics["layers"]:
    r = {k: rec[k] for k in _LAYER_KEYS if k in rec}
    if "metrics" in rec:
      r["metrics"] = {rep: {k: rec["metrics"][rep][k] for k in _METRIC_KEYS
                            if k in rec["metrics"][rep]} for rep in REPS}
    layers.append(r)
  out = {"layers": layers, "final": metrics.get("final", {}),
         "seconds_total": metrics.get("seconds_total"),
         "conventions": {k: v for k, v in metrics.get("conventions", {}).items()
                         if k in ("nc1", "nc2", "global_mean", "input", "agop", "features")}}
  if "gram_blocks" in metrics:
    out["gram_blocks"] = metrics["gram_blocks"]
  return _round(out)


def export_summary(run_dir, dest) -> pathlib.Path:
  """Writes the compact summary of the Deep RFM run in ``run_dir`` into ``dest``.

  Args:
    run_dir: a finished ``bin/deep_rfm`` run (``config.json``, ``metrics.json``).
    dest: folder to write (created; its ``config.json``/``metrics.json`` replaced).

  Returns:
    ``dest`` as a path.
  """
  from dnc_jax.errors import DataError
  run_dir, dest = pathlib.Path(run_dir), pathlib.Path(dest)
  try:
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
  except (OSError, ValueError) as e:
    raise DataError(f"{run_dir} is not a finished Deep RFM run ({e}); finish it with "
                    f"bin/deep_rfm --out {run_dir} --resume") from e
  dest.mkdir(parents=True, exist_ok=True)
  (dest / "config.json").write_text(json.dumps(compact_config(config), indent=1) + "\n")
  # One layer per line: small files and readable diffs.
  m = compact_metrics(metrics)
  body = ",\n  ".join(json.dumps(r, separators=(",", ":")) for r in m.pop("layers"))
  head = json.dumps(m, separators=(",", ":"))
  (dest / "metrics.json").write_text(head[:-1] + ',\n "layers":[\n  ' + body + "\n ]}\n")
  return dest


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 3 or argv[0] != "export":
    print("usage: python -m dnc_jax.report_rfm export RUN_DIR DEST", file=sys.stderr)
    return 2
  print(export_summary(argv[1], argv[2]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
