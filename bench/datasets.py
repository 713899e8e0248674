"""Benchmark of the dataset cache: first load (decode the source, write the
cache) against the second (read the cache), for all 60,000 Fashion-MNIST
training images and 10,000 test images.

Every load runs in a fresh Python process, so nothing is reused in memory
between the two; the times are measured inside the process around the call
(interpreter start-up and imports excluded). The operating system's file cache
is warm for both loads (the benchmark runs the source read once first), which
favours the first load: the ratio reported is a lower bound.

  python bench/datasets.py [--data-dir DIR] [--repeats 3] [--json out.json]

Without --data-dir the source is the Debian package dataset-fashion-mnist.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from dnc_jax import data
import numpy as np
t1 = time.perf_counter()
kind, data_dir = sys.argv[1], (sys.argv[2] or None)
if kind == "raw":
  t = time.perf_counter()
  raw = data.load_raw("fashion_mnist", data_dir=data_dir)
  dt = time.perf_counter() - t
  print(json.dumps({"seconds": dt, "cache": raw.extra["cache"], "n": int(raw.y_train.shape[0]),
                    "source": raw.source}))
else:
  n, n_test = (2000, 500) if kind == "dataset2000" else (None, None)
  t = time.perf_counter()
  ds = data.load_dataset("fashion_mnist", data_dir=data_dir, cache=(kind != "nocache"), n=n,
                         n_test=n_test)
  dt = time.perf_counter() - t
  print(json.dumps({"seconds": dt, "cache": ds.info["cache"], "n": ds.n,
                    "source": ds.info["source"], "seconds_read": ds.info["seconds_read"]}))
"""


def _run(kind, data_dir, cache):
  env = dict(os.environ, DNC_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", _CHILD, kind, data_dir or ""], env=env,
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None,
                      help="folder with the Fashion-MNIST IDX files (default: Debian location)")
  parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)

  results = {"load_raw": {"first": [], "second": []},
             "load_dataset": {"first": [], "second": [], "no_cache": []},
             "load_dataset_n2000": {"first": [], "second": []}}
  kinds = {"load_raw": "raw", "load_dataset": "dataset", "load_dataset_n2000": "dataset2000"}
  with tempfile.TemporaryDirectory() as tmp:
    _run("nocache", args.data_dir, pathlib.Path(tmp) / "warm")  # warms the OS file cache
    for r in range(args.repeats):
      for api, kind in kinds.items():
        cache = pathlib.Path(tmp) / f"{api}-{r}"
        first = _run(kind, args.data_dir, cache)
        second = _run(kind, args.data_dir, cache)
        assert first["cache"] == "written" and second["cache"] == "hit", (first, second)
        results[api]["first"].append(first["seconds"])
        results[api]["second"].append(second["seconds"])
      results["load_dataset"]["no_cache"].append(
          _run("nocache", args.data_dir, pathlib.Path(tmp) / "none")["seconds"])
  source = first["source"]

  med = {api: {k: statistics.median(v) for k, v in d.items()} for api, d in results.items()}
  print(f"Fashion-MNIST, 60,000 + 10,000 images, source {source}, "
        f"median of {args.repeats} (seconds)")
  print("| call | first load (decode + write cache) | second load (cache) | speed-up |")
  print("|---|---|---|---|")
  labels = {"load_raw": "`load_raw` (uint8 arrays: the cached step)",
            "load_dataset": "`load_dataset` (all 60,000 + 10,000, standardised)",
            "load_dataset_n2000": "`load_dataset(n=2000, n_test=500)`"}
  for api, label in labels.items():
    f, s = med[api]["first"], med[api]["second"]
    print(f"| {label} | {f:.3f} | {s:.3f} | {f / s:.1f}x |")
  print(f"| `load_dataset(cache=False)` (all) | {med['load_dataset']['no_cache']:.3f} | | |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"source": source, "runs": results,
                                                   "median": med}, indent=1))


if __name__ == "__main__":
  main()
