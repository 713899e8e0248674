"""Which precision should be the CPU default: float32 against float64's seed band.

For each dataset and preset, runs Deep RFM at depth 19 in float64 with seeds
0-2 and in float32 with seed 0 (then seeds 1-2), and records NC1 and NC2 of all three
representations (``input``, ``agop``, ``features``) at every layer, or the error a run
stopped with. Then, per layer and quantity, compares

* the float32 deviation ``|f32 - f64| / f64`` (same seed 0) with
* the float64 seed band ``max_s |f64(s) - f64(0)| / f64(0)`` over seeds 1, 2,
  floored at 1 % (the first layers, where no seed changes anything),

and prints where float32 leaves the band; then the same around every seed
(float32 seed s against float64 seed s and the two other float64 seeds). Results go to a JSON file written
after every run, so an interrupted bench continues where it stopped::

  python bench/precision_default.py --json runs/precision_default.json
  python bench/precision_default.py --json runs/precision_default.json --report

The committed copy is docs/runs/bench_precision_default.json; the comparison is
dnc_jax.report.precision's, whose tables docs/numerics.md shows (bin/figures --docs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

import dnc_jax as dj
from dnc_jax.report import precision

REPS = precision.REPS


def _enable_x64(on: bool):
  enable = getattr(jax, "enable_x64", None)
  if enable is None:
    from jax.experimental import enable_x64 as enable
  return enable(on)


def run_one(dataset: str, n: int | None, preset: str, dtype: str, seed: int, depth: int) -> dict:
  ds = dj.load_dataset(dataset, n=n, n_test=0)
  with _enable_x64(dtype == "float64"):
    x = ds.x_train.astype(np.float64 if dtype == "float64" else np.float32)
    cfg = dj.preset_config(preset, depth=depth, gram_layers=())
    t0 = time.perf_counter()
    try:
      res = dj.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(seed), num_classes=ds.num_classes)
    except dj.DncError as e:
      return {"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    out = {"seconds": time.perf_counter() - t0, "n": int(x.shape[0])}
    for m in ("nc1", "nc2"):
      out[m] = {r: [float(rec[m][r]) for rec in res.layers] for r in REPS}
    return out


def report(results: dict, cases) -> None:
  for case in cases:
    c = precision.comparison(results, case)
    if c["status"] != "ok":
      print(f"{case}: {c['status']} {c.get('errors', '')}")
      continue
    t32 = results[f"{case}/float32/s0"]["seconds"]
    t64 = np.median([results[f"{case}/float64/s{s}"]["seconds"] for s in range(3)])
    print(f"{case}: float32 worst deviation / float64 seed band = {c['worst_ratio']:.2f} "
          f"({len(c['outside'])} of {2 * len(REPS) * len(c['nc1_input']['dev'])} layer values outside); "
          f"time float32 {t32:.0f} s, float64 {t64:.0f} s (median)")
    every = precision.all_seeds(results, case)
    if every is not None:
      print(f"  around every seed 0-2: {every['outside']} of {len(every['ratios'])} values "
            f"outside, dev / band median {every['median_ratio']:.2f}, worst "
            f"{every['worst_ratio']:.2f}")
    for key in (f"{m}_{r}" for m in ("nc1", "nc2") for r in REPS):
      dev, band = np.array(c[key]["dev"]), np.array(c[key]["band"])
      i = int(np.argmax(dev / band))
      print(f"  {key:9s} worst at layer {i + 1:2d}: dev {dev[i]:.4f}, band {band[i]:.4f}; "
            f"max dev {dev.max():.4f}, max band {band.max():.4f}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--json", default="runs/precision_default.json")
  p.add_argument("--depth", type=int, default=19)
  p.add_argument("--datasets", default="digits,fashion_mnist:2000")
  p.add_argument("--presets", default="reference,paper")
  p.add_argument("--report", action="store_true", help="only print the comparison")
  args = p.parse_args(argv)
  results = json.load(open(args.json)) if os.path.exists(args.json) else {}
  cases, jobs = [], []
  for spec in args.datasets.split(","):
    name, _, n = spec.partition(":")
    for preset in args.presets.split(","):
      case = f"{name}{n}/{preset}"
      cases.append(case)
      for dtype, seed in [("float64", 0), ("float32", 0), ("float64", 1), ("float64", 2),
                          ("float32", 1), ("float32", 2)]:
        jobs.append((f"{case}/{dtype}/s{seed}", name, int(n) if n else None, preset, dtype, seed))
  if not args.report:
    for tag, name, n, preset, dtype, seed in jobs:
      if tag in results:
        continue
      print(f"== {tag} {time.strftime('%H:%M:%S')}", flush=True)
      results[tag] = run_one(name, n, preset, dtype, seed, args.depth)
      results[tag]["depth"] = args.depth
      os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
      tmp = args.json + ".tmp"
      with open(tmp, "w") as f:
        json.dump(results, f)
      os.replace(tmp, args.json)
      print(f"   {results[tag].get('error', 'ok')} in {results[tag]['seconds']:.0f} s", flush=True)
  report(results, cases)


if __name__ == "__main__":
  main()
