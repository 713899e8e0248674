"""Benchmark: what a command pays before and after its layer loop, each part in fresh processes.

* imports (``--python``'s interpreter, each in a fresh process, median of ``--repeats``):
  ``ml_dtypes`` after numpy (jax imports it), ``jax``, ``matplotlib.pyplot`` on the
  Agg backend (the figures'), ``sklearn.datasets`` (the bundled digits' reader);
* tracing and lowering of the jitted Deep RFM layer for its two shapes at
  ``--n`` rows (input width 784, then 1024), in one fresh process: the first
  includes JAX's one-time set-up (this needs the project's interpreter);
* drawing the four figures of a finished run (``--run-dir``, e.g. a ``bin/deep_rfm``
  output folder), with matplotlib already imported.

    .venv/bin/python bench/startup.py --run-dir runs/fm5000 --json out.json
    .venv/bin/python bench/startup.py --python /tmp/other/bin/python --only imports
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

IMPORTS = {
    "ml_dtypes": ("import numpy", "import ml_dtypes"),
    "jax": ("import numpy", "import jax"),
    "matplotlib.pyplot": ("import numpy",
                          "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"),
    "sklearn.datasets": ("import numpy", "import sklearn.datasets"),
}

_TIMED = """
import time
{before}
t = time.perf_counter()
{stmt}
print(time.perf_counter() - t)
"""

_LOWER = """
import json, time, jax, jax.numpy as jnp
from dnc_jax.rfm import layer
from dnc_jax.rfm.config import preset_config
opts = preset_config("reference").layer_options()
n, nt, k = {n}, {n_test}, 10
out = []
for d in (784, 1024):
  s = jax.ShapeDtypeStruct
  args = (s((n, d), jnp.float32), s((nt, d), jnp.float32), s((n, k), jnp.float32),
          s((n,), jnp.int32), jax.random.key(0), 2.0, 1e-3, 1.0)
  t0 = time.perf_counter()
  traced = layer._rfm_layer.trace(*args, options=opts, batch_size=250)
  t1 = time.perf_counter()
  traced.lower()
  out.append({{"d": d, "trace_s": t1 - t0, "lower_s": time.perf_counter() - t1}})
print(json.dumps(out))
"""


def _run(python: str, code: str) -> str:
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  p = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
  if p.returncode != 0:
    raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed")
  return p.stdout.strip().splitlines()[-1]


def _version(python: str, module: str) -> str | None:
  try:
    return _run(python, f"import importlib.metadata as m; print(m.version({module!r}))")
  except RuntimeError:
    return None


def imports(python: str, repeats: int) -> dict:
  out = {}
  for name, (before, stmt) in IMPORTS.items():
    try:
      times = [float(_run(python, _TIMED.format(before=before, stmt=stmt)))
               for _ in range(repeats)]
    except RuntimeError as e:
      out[name] = {"error": str(e)}
      continue
    dist = {"sklearn.datasets": "scikit-learn", "matplotlib.pyplot": "matplotlib"}.get(name, name)
    out[name] = {"median_s": statistics.median(times), "times_s": times,
                 "version": _version(python, dist)}
  return out


def lowering(python: str, n: int, n_test: int) -> list:
  return json.loads(_run(python, _LOWER.format(n=n, n_test=n_test)))


def figures(run_dir: str, repeats: int) -> dict:
  import numpy as np
  from dnc_jax.viz import collapse as plots, style
  style.pyplot()
  with open(os.path.join(run_dir, "metrics.json")) as f:
    layers = json.load(f)["layers"]
  g = np.load(os.path.join(run_dir, "grams.npz"))
  pick = lambda prefix: {int(k[len(prefix):]): (g[k], g[k.replace("layer_", "labels_")])  # noqa: E731
                         for k in g.files if k.startswith(prefix)}
  grams, grams_agop = pick("layer_"), pick("agop_layer_")
  times = []
  for _ in range(repeats):
    files = {}
    t = time.perf_counter()
    plots.plot_collapse([layers], "nc1", "nc1", into=files)
    plots.plot_collapse([layers], "nc2", "nc2", into=files)
    plots.plot_grams(grams, "gram", num_classes=10, into=files)
    plots.plot_grams(grams_agop, "gram_agop", num_classes=10, into=files)
    times.append(time.perf_counter() - t)
  return {"run_dir": run_dir, "figures": len(files), "median_s": statistics.median(times),
          "times_s": times}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--python", default=sys.executable, help="interpreter whose imports are timed")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--n", type=int, default=5000)
  p.add_argument("--n-test", type=int, default=1000)
  p.add_argument("--run-dir", default=None, help="a finished bin/deep_rfm folder to draw from")
  p.add_argument("--only", choices=("imports",), default=None)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  res = {"date": time.strftime("%Y-%m-%d"), "python": args.python, "cpu_count": os.cpu_count(),
         "load_average_1min": os.getloadavg()[0], "imports": imports(args.python, args.repeats)}
  if args.only is None:
    res["layer_trace_and_lower"] = lowering(args.python, args.n, args.n_test)
    if args.run_dir:
      res["figures"] = figures(args.run_dir, args.repeats)
  for name, r in res["imports"].items():
    print(f"import {name:<18} " + (f"{r['median_s']:.3f} s ({r['version']})" if "median_s" in r
                                   else r["error"]))
  for r in res.get("layer_trace_and_lower", []):
    print(f"layer d = {r['d']}: trace {r['trace_s']:.3f} s, lower {r['lower_s']:.3f} s")
  if "figures" in res:
    print(f"{res['figures']['figures']} figures drawn in {res['figures']['median_s']:.3f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)
  return res


if __name__ == "__main__":
  main()
