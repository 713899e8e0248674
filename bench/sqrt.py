r"""PSD square root of a Deep RFM layer: ``eigh`` against Newton–Schulz, timed and checked.

Timing, float32 on the default backend, for each ``d`` of ``--sizes``: per repeat,
in an order that rotates, a plain ``[d, d]`` matmul, ``psd_sqrt(method="eigh")``
and ``psd_sqrt(method="newton_schulz", iters=--iters)`` on the same AGOP-like
matrix. Reported: median seconds, and the median over repeats of each time
divided by the matmul of the same repeat (matmul equivalents). Flops counted:
matmul :math:`2d^3`; eigh :math:`9d^3 + 2d^3` (as ``layer_flops``);
Newton–Schulz :math:`(3\,\mathrm{iters} - 3)\cdot 2d^3` (its matmuls only).

On a CPU, ``eigh`` runs in LAPACK (OpenBLAS), which starts its own threads: each
value of ``--lapack-threads`` (``OPENBLAS_NUM_THREADS``; ``default``: unset) is
timed in a fresh process, since OpenBLAS reads it when it loads. The load
average is recorded with each, as other jobs share the cores.

Accuracy (float32 input; reference: float64 NumPy ``eigh`` of the rounded
input, negative eigenvalues clipped): :math:`\|R^2 - A\|_F/\|A\|_F` and
:math:`\|R - A^{1/2}\|_F/\|A^{1/2}\|_F` of eigh and of Newton–Schulz at each of
``--accuracy-iters``, on (a) a well-conditioned spectrum (log-spaced in
[1e-2, 1]), (b) an AGOP-like one (10 eigenvalues log-spaced in [0.1, 1], the
rest 1e-6), each under a random rotation, and with ``--real`` (c) the layers'
``M / max M`` of Deep RFM on digits (depth 3, ``keep_m=True``).

  python bench/sqrt.py --real --json docs/runs/bench_sqrt_2026-12-02.json
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.io.jsonio import write_json
from dnc_jax.metrics import psd_sqrt

H = jax.lax.Precision.HIGHEST
NS = "newton_schulz"
DEFAULT_ITERS = inspect.signature(psd_sqrt).parameters["iters"].default


def spectrum(kind: str, d: int) -> np.ndarray:
  """Eigenvalues ``[d]``: ``well_conditioned`` or ``agop_like``."""
  if kind == "well_conditioned":
    return np.logspace(-2, 0, d)
  return np.concatenate([np.logspace(-1, 0, 10), np.full(d - 10, 1e-6)])


def rotated(evals: np.ndarray, seed: int = 0) -> np.ndarray:
  """``Q diag(evals) Qᵀ`` ``[d, d]`` float32 for a random orthogonal ``Q``."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(evals),) * 2))
  return ((q * evals) @ q.T).astype(np.float32)


def errors(r, a32) -> dict:
  """Relative residual and root error of ``r`` against float64 NumPy on ``a32`` as rounded."""
  a = np.asarray(a32, np.float64)
  a = 0.5 * (a + a.T)
  evals, q = np.linalg.eigh(a)
  root = (q * np.sqrt(np.maximum(evals, 0.0))) @ q.T
  r = np.asarray(r, np.float64)
  return {"residual": float(np.linalg.norm(r @ r - a) / np.linalg.norm(a)),
          "root": float(np.linalg.norm(r - root) / np.linalg.norm(root))}


def time_sizes(sizes, iters: int, repeats: int) -> list[dict]:
  """Interleaved timings of matmul, eigh and Newton–Schulz for each ``d``."""
  rows = []
  for d in sizes:
    a = jnp.asarray(rotated(spectrum("agop_like", d)))
    fns = {"matmul": jax.jit(lambda x: jnp.matmul(x, x, precision=H)),
           "eigh": lambda x: psd_sqrt(x, method="eigh"),
           NS: lambda x: psd_sqrt(x, method=NS, iters=iters)}
    for fn in fns.values():
      jax.block_until_ready(fn(a))  # compile
    times = {name: [] for name in fns}
    names = list(fns)
    for rep in range(repeats):
      for name in names[rep % 3:] + names[:rep % 3]:
        t0 = time.perf_counter()
        jax.block_until_ready(fns[name](a))
        times[name].append(time.perf_counter() - t0)
    flops = {"matmul": 2 * d**3, "eigh": 11 * d**3, NS: (3 * iters - 3) * 2 * d**3}
    med = {k: statistics.median(v) for k, v in times.items()}
    rows.append({
        "d": d, "seconds": med,
        "ratio_to_matmul": {k: statistics.median(t / m for t, m in zip(v, times["matmul"]))
                            for k, v in times.items() if k != "matmul"},
        "newton_schulz_over_eigh": statistics.median(
            n / e for n, e in zip(times[NS], times["eigh"])),
        "gflop_per_s": {k: flops[k] / med[k] / 1e9 for k in flops},
        "rate_over_matmul_rate": {k: flops[k] / med[k] / (flops["matmul"] / med["matmul"])
                                  for k in ("eigh", NS)},
        "all_seconds": times,
    })
  return rows


def accuracy_of(name: str, a32: np.ndarray, iters_list) -> dict:
  """eigh's and Newton–Schulz's errors on one float32 matrix ``[d, d]``."""
  a = jnp.asarray(a32)
  row = {"matrix": name, "d": a32.shape[0], "eigh": errors(psd_sqrt(a, method="eigh"), a32)}
  row[NS] = {str(k): errors(psd_sqrt(a, method=NS, iters=k), a32) for k in iters_list}
  evals = np.linalg.eigvalsh(np.asarray(a32, np.float64))
  row["eigenvalues_over_max"] = {"min": float(evals[0] / evals[-1]),
                                 "median": float(np.median(evals) / evals[-1])}
  return row


def real_agops():
  """``M / max M`` of each layer of Deep RFM on digits (depth 3), float32."""
  import dnc_jax as dj
  ds = dj.load_dataset("digits")
  res = dj.deep_rfm(ds.x_train, ds.y_train, dj.DeepRFMConfig(depth=3, keep_m=True),
                    key=jax.random.key(0))
  return [np.asarray(m / np.max(m), np.float32) for m in res.ms]


def worker(args) -> dict:
  """One process: the timings, or the accuracy table."""
  out = {"lapack_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
         "loadavg_start": os.getloadavg()}
  if args.part == "timing":
    out["rows"] = time_sizes(args.sizes, args.iters, args.repeats)
  else:
    iters_list = sorted({*args.accuracy_iters, args.iters})
    out["rows"] = [accuracy_of(kind, rotated(spectrum(kind, d)), iters_list)
                   for d in args.sizes for kind in ("well_conditioned", "agop_like")]
    if args.real:
      out["rows"] += [accuracy_of(f"digits_layer{i + 1}", m, iters_list)
                      for i, m in enumerate(real_agops())]
  out["loadavg_end"] = os.getloadavg()
  return out


def run_worker(argv, part: str, threads: str) -> dict:
  """Runs this script for ``part`` in a fresh process with ``OPENBLAS_NUM_THREADS``."""
  env = dict(os.environ)
  env.pop("OPENBLAS_NUM_THREADS", None)
  if threads != "default":
    env["OPENBLAS_NUM_THREADS"] = threads
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "out.json")
    subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--part", part,
                    "--worker-out", path], env=env, check=True)
    with open(path) as f:
      return json.load(f)


def report(result) -> None:
  print(f"float32, iters={result['iters']}, backend {result['backend']}, "
        f"{result['cpu_count']} CPUs; median of {result['repeats']} interleaved repeats")
  print(f"{'threads':>8}{'d':>6}{'matmul s':>10}{'eigh ×mm':>10}{'NS ×mm':>9}{'NS/eigh':>9}"
        f"{'load':>6}")
  for t in result["timing"]:
    for r in t["rows"]:
      print(f"{t['lapack_threads']:>8}{r['d']:>6}{r['seconds']['matmul']:>10.4f}"
            f"{r['ratio_to_matmul']['eigh']:>10.1f}{r['ratio_to_matmul'][NS]:>9.1f}"
            f"{r['newton_schulz_over_eigh']:>9.2f}{t['loadavg_start'][0]:>6.1f}")
  it = str(result["iters"])
  print(f"{'matrix':<18}{'d':>6}{'eigh resid':>12}{'eigh root':>11}{'NS resid':>11}{'NS root':>10}")
  for r in result["accuracy"]["rows"]:
    e, n = r["eigh"], r[NS][it]
    print(f"{r['matrix']:<18}{r['d']:>6}{e['residual']:>12.1e}{e['root']:>11.1e}"
          f"{n['residual']:>11.1e}{n['root']:>10.1e}")


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[256, 512, 1024])
  p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help="Newton–Schulz steps timed")
  p.add_argument("--accuracy-iters", type=lambda s: [int(v) for v in s.split(",")],
                 default=[16, 20, 28], help="further steps whose accuracy is reported")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--lapack-threads", default="default,1",
                 help="comma-separated OPENBLAS_NUM_THREADS values to time ('default': unset)")
  p.add_argument("--real", action="store_true", help="also the layers' M of Deep RFM on digits")
  p.add_argument("--json", default=None, help="also write the results here")
  p.add_argument("--part", choices=("timing", "accuracy"), help=argparse.SUPPRESS)
  p.add_argument("--worker-out", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.part:
    write_json(args.worker_out, worker(args))
    return
  result = {"backend": jax.default_backend(), "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "dtype": "float32", "iters": args.iters,
            "repeats": args.repeats,
            "flops": {"matmul": "2 d^3", "eigh": "9 d^3 + 2 d^3",
                      NS: "(3 iters - 3) * 2 d^3"},
            "timing": [run_worker(argv, "timing", t) for t in args.lapack_threads.split(",")],
            "accuracy": run_worker(argv, "accuracy", "1")}
  report(result)
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
