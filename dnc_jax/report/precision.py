r"""float32 against float64's seed band: the evidence behind the default precision.

``bench/precision_default.py`` runs Deep RFM at depth 19 in float64 with seeds
0-2 and in float32 with seed 0, per dataset and preset, and writes one JSON file
(committed as ``docs/runs/bench_precision_default.json``). Per layer, metric
(NC1, NC2) and representation, :func:`comparison` sets

.. math::
   \mathrm{dev}_l = \frac{|v^{32}_l(0) - v^{64}_l(0)|}{|v^{64}_l(0)|}, \qquad
   \mathrm{band}_l = \max\Bigl(0.01,\ \max_{s = 1, 2}
     \frac{|v^{64}_l(s) - v^{64}_l(0)|}{|v^{64}_l(0)|}\Bigr),

and float32 "stays in the band" at a layer when :math:`\mathrm{dev}_l \le
\mathrm{band}_l` (the 1 % floor covers the first layers, which no seed changes).
When float32 also ran with seeds 1 and 2, :func:`all_seeds` makes the same
comparison around each float64 seed ``s`` (float32 seed ``s`` against the two
other float64 seeds), which shows whether a value outside the band is
float32's doing or a layer where the seeds happen to agree.
The tables below are generated into docs/numerics.md.
"""
from __future__ import annotations

import json
import pathlib

from dnc_jax.report import tables as report
from dnc_jax.rfm.config import REPRESENTATIONS

REPS = REPRESENTATIONS
FLOOR = 0.01
SUMMARY = "bench_precision_default.json"
_RUNS = (("float64", 0), ("float32", 0), ("float64", 1), ("float64", 2))


def cases(results: dict) -> list[str]:
  """``dataset/preset`` cases in the order they were run."""
  return list(dict.fromkeys(tag.rsplit("/", 2)[0] for tag in results))


def comparison(results: dict, case: str) -> dict:
  """``status`` (ok, failed, incomplete); for ok: per ``"{metric}_{rep}"`` the ``dev``
  and ``band`` lists, ``worst_ratio`` (max dev / band) and the ``outside`` values."""
  runs = {(dt, s): results.get(f"{case}/{dt}/s{s}") for dt, s in _RUNS}
  if any(r is None for r in runs.values()):
    return {"status": "incomplete"}
  errors = {f"{dt} seed {s}": r["error"] for (dt, s), r in runs.items() if "error" in r}
  if errors:
    return {"status": "failed", "errors": errors}
  import numpy as np
  f64 = [runs[("float64", s)] for s in range(3)]
  out = {"status": "ok", "worst_ratio": 0.0, "outside": []}
  for m in ("nc1", "nc2"):
    for r in REPS:
      base = np.array(f64[0][m][r])
      spread = np.max([np.abs(np.array(f[m][r]) - base) / np.abs(base) for f in f64[1:]], axis=0)
      band = np.maximum(spread, FLOOR)
      dev = np.abs(np.array(runs[("float32", 0)][m][r]) - base) / np.abs(base)
      out[f"{m}_{r}"] = {"dev": dev.tolist(), "band": band.tolist()}
      ratio = dev / band
      out["worst_ratio"] = max(out["worst_ratio"], float(ratio.max()))
      out["outside"] += [f"{m}/{r}/layer {l + 1}" for l in np.nonzero(ratio > 1)[0]]
  return out


def all_seeds(results: dict, case: str) -> dict | None:
  """:func:`comparison` made around each seed ``s = 0, 1, 2``: float32 seed ``s`` against
  float64 seed ``s``, the band from the two other float64 seeds (``None`` when a float32
  or float64 seed is missing or failed). Returns ``ratios`` (dev / band for every layer,
  metric, representation and seed), ``outside`` (how many exceed 1), ``median_ratio``
  and ``worst_ratio``."""
  import numpy as np
  tags = [f"{case}/{dt}/s{s}" for dt in ("float32", "float64") for s in range(3)]
  if any(t not in results or "error" in results[t] for t in tags):
    return None
  ratios = []
  for s in range(3):
    base_run = results[f"{case}/float64/s{s}"]
    for m in ("nc1", "nc2"):
      for r in REPS:
        base = np.array(base_run[m][r])
        others = [np.array(results[f"{case}/float64/s{o}"][m][r]) for o in range(3) if o != s]
        band = np.maximum(np.max([np.abs(o - base) / np.abs(base) for o in others], axis=0),
                          FLOOR)
        dev = np.abs(np.array(results[f"{case}/float32/s{s}"][m][r]) - base) / np.abs(base)
        ratios += (dev / band).tolist()
  ratios = np.array(ratios)
  return {"ratios": ratios.tolist(), "outside": int(np.sum(ratios > 1)),
          "median_ratio": float(np.median(ratios)), "worst_ratio": float(ratios.max())}


def _load(root) -> dict | None:
  path = pathlib.Path(root) / SUMMARY
  return json.loads(path.read_text()) if path.exists() else None


def _missing() -> str:
  return (f"_No committed `docs/runs/{SUMMARY}` yet; `python bench/precision_default.py "
          f"--json docs/runs/{SUMMARY}` makes it._\n")


@report.table("precision_default")
def table_precision_default(root) -> str:
  """Per dataset and preset: does float32 stay in float64's seed band, or fail?"""
  results = _load(root)
  if results is None:
    return _missing()
  lines = ["| dataset, preset | n | float32 (seed 0) against float64 (seeds 0–2) | worst dev / band "
           "| values outside the band | seeds 0–2 each: outside, median dev / band |",
           "|---|---|---|---|---|---|"]
  for case in cases(results):
    c = comparison(results, case)
    name, preset = case.split("/")
    n = results[f"{case}/float64/s0"].get("n", "–")
    if c["status"] == "failed":
      why = "; ".join(f"{k}: {v.split(':')[0]} at {v.split(': ', 1)[1].split(':')[0]}"
                      for k, v in c["errors"].items())
      lines.append(f"| {name}, {preset} | {n} | **fails**: {why} | – | – | – |")
    elif c["status"] == "ok":
      total = 2 * len(REPS) * len(c["nc1_input"]["dev"])
      every = all_seeds(results, case)
      seeds = ("–" if every is None else f"{every['outside']} of {len(every['ratios'])}, "
               f"{report.fmt(every['median_ratio'], 2)}")
      lines.append(f"| {name}, {preset} | {n} | completes all 19 layers | "
                   f"{report.fmt(c['worst_ratio'], 2)} | {len(c['outside'])} of {total} | "
                   f"{seeds} |")
  return "\n".join(lines) + "\n"


@report.table("precision_layers")
def table_precision_layers(root) -> str:
  """Layer by layer, for every case that completed: float32's deviation and the seed band."""
  results = _load(root)
  if results is None:
    return _missing()
  out = []
  for case in cases(results):
    c = comparison(results, case)
    if c["status"] != "ok":
      continue
    out += [f"**{case.replace('/', ', ')} preset** (relative to float64 seed 0; dev = float32, "
            "band = float64 seeds 1–2, floor 1 %)", "",
            "| layer | NC1 input dev / band | NC1 agop dev / band | NC1 features dev / band "
            "| NC2 agop dev / band |", "|---|---|---|---|---|"]
    keys = ("nc1_input", "nc1_agop", "nc1_features", "nc2_agop")
    for l in range(len(c["nc1_input"]["dev"])):
      cells = [f"{report.fmt(c[k]['dev'][l], 2)} / {report.fmt(c[k]['band'][l], 2)}"
               for k in keys]
      out.append(f"| {l + 1} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)
