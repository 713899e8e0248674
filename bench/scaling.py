"""Scaling benchmark: sharded Deep RFM layers and the iterative kernel solver.

  python bench/scaling.py cpu [--n 1024] [--n-solve 5000] [--json out.json]
  python bench/scaling.py gpu [--budget-s 420] [--json out.json]

``cpu`` measures, in one process with 4 simulated host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set before JAX starts):

* the time of one Deep RFM layer (reference preset, float32, N rows, d = width)
  on meshes of 1, 2 and 4 devices, with the Cholesky and the CG solver. The
  first layer includes compilation; the time reported is the median of the
  later layers. Simulated devices share the host's cores, so this checks the
  overhead of the sharded program, not a speed-up;
* plain CG against Nyström-preconditioned CG on one N = 5,000 float64 system
  (Laplace kernel, ridge 1e-3, Gaussian mixture of 10 classes in 32
  dimensions), both to a relative residual of 1e-9: iterations, time and the
  relative distance to the Cholesky solution.

``gpu`` finds, on the first accelerator, the largest N of a ladder for which
one kernel system (float32, d = 64, 10 classes) is solved by each solver, and
times one Deep RFM layer; it stops climbing when the time budget is spent.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "cpu":
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dnc_jax as dj  # noqa: E402
from dnc_jax.rfm import sharded  # noqa: E402
from dnc_jax.rfm import memory, solvers  # noqa: E402


def mixture(n, d, k=10, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  lab = np.sort(rng.integers(0, k, n)).astype(np.int32)
  x = rng.normal(size=(k, d))[lab] + rng.normal(size=(n, d))
  return x.astype(dtype), lab


def layer_times(n, d, depth, devices, solver):
  x, lab = mixture(n, d)
  cfg = dj.preset_config("reference", depth=depth, width=d, gram_layers=())
  res = dj.sharded_deep_rfm(x, lab, cfg, key=jax.random.key(0), devices=devices,
                                 solver=solver)
  secs = [r["seconds"] for r in res.layers]
  return {"devices": devices, "solver": solver, "n": n, "d": d,
          "first_layer_s": secs[0], "layer_s": statistics.median(secs[1:]),
          "nc1_agop_last": res.layers[-1]["nc1"]["agop"],
          "cg_iterations": [r["solve"]["iterations"] for r in res.layers]}


def solver_iterations(n, rank):
  with jax.enable_x64(True):
    x, lab = mixture(n, 32, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = 2.0 * np.eye(10)[lab] - 1.0
    t = time.perf_counter()
    chol = solvers.solve(x, y, labels=lab, ridge=1e-3, solver="cholesky")
    jax.block_until_ready(chol.alpha)
    out = {"n": n, "cholesky_s": time.perf_counter() - t}
    for name, pre in (("cg", "none"), ("pcg", "nystrom")):
      t = time.perf_counter()
      r = solvers.solve(x, y, labels=lab, ridge=1e-3, solver="cg", preconditioner=pre,
                        rank=rank, tol=1e-9, max_iter=5000)
      jax.block_until_ready(r.alpha)
      err = float(jnp.linalg.norm(r.alpha - chol.alpha) / jnp.linalg.norm(chol.alpha))
      out[name] = {"iterations": r.iterations, "seconds": time.perf_counter() - t,
                   "residual": r.residual, "rel_error_vs_cholesky": err,
                   "residual_log_every_10": [float(v) for v in r.residuals[::10]]}
    out["pcg"]["rank"] = rank
    return out


def cpu(args):
  out = {"host_devices": jax.device_count(), "cores": os.cpu_count(), "layers": []}
  for solver in ("cholesky", "cg"):
    for nd in (1, 2, 4):
      rec = layer_times(args.n, args.d, args.depth, nd, solver)
      print(f"{solver:8s} devices={nd}  layer {rec['layer_s']:.2f} s  "
            f"(first, with compile, {rec['first_layer_s']:.1f} s)  CG its {rec['cg_iterations']}",
            flush=True)
      out["layers"].append(rec)
  s = solver_iterations(args.n_solve, args.rank)
  print(f"N={s['n']} float64: Cholesky {s['cholesky_s']:.1f} s; plain CG "
        f"{s['cg']['iterations']} its ({s['cg']['seconds']:.1f} s, error "
        f"{s['cg']['rel_error_vs_cholesky']:.1e}); Nyström PCG (rank {args.rank}) "
        f"{s['pcg']['iterations']} its ({s['pcg']['seconds']:.1f} s, error "
        f"{s['pcg']['rel_error_vs_cholesky']:.1e})", flush=True)
  out["solver"] = s
  return out


def gpu(args):
  t_start = time.perf_counter()
  dev = jax.devices()[0]
  out = {"device": str(dev.device_kind), "memory_bytes": memory.available_bytes(dev),
         "cholesky": [], "cg": [], "layer": []}

  def left():
    return args.budget_s - (time.perf_counter() - t_start)

  def attempt(kind, n, **kw):
    x, lab = mixture(n, 64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (2.0 * np.eye(10, dtype=np.float32)[lab] - 1.0)
    t = time.perf_counter()
    try:
      r = solvers.solve(x, y, labels=lab, ridge=1e-3, solver=kind, **kw)
      jax.block_until_ready(r.alpha)
      rec = {"n": n, "ok": True, "seconds": time.perf_counter() - t,
             "iterations": r.iterations, "residual": r.residual}
    except Exception as e:  # out of memory, or CG cap: the end of the ladder
      rec = {"n": n, "ok": False, "seconds": time.perf_counter() - t,
             "error": f"{type(e).__name__}: {str(e)[:300]}"}
    print(kind, rec, flush=True)
    return rec

  sc = args.ladder_scale
  for n in (int(v * sc) for v in (32768, 65536, 98304, 114688)):
    if left() < 60:
      break
    rec = attempt("cholesky", n)
    out["cholesky"].append(rec)
    if not rec["ok"]:
      break
  last = None
  for n in (int(v * sc) for v in (131072, 262144, 524288)):
    # Each step quadruples the work of a product; skip a step that cannot finish.
    if left() < 90 or (last is not None and 4.5 * last > left() - 60):
      break
    rec = attempt("cg", n, tol=1e-4, max_iter=300, rank=2000)
    out["cg"].append(rec)
    last = rec["seconds"]
    if not rec["ok"]:
      break
  for n in (int(v * sc) for v in (16384, 65536)):
    if left() < 60:
      break
    for solver in ("cholesky", "cg"):
      x, lab = mixture(n, 64)
      cfg = dj.preset_config("reference", depth=2, width=64, gram_layers=())
      t = time.perf_counter()
      try:
        res = dj.sharded_deep_rfm(x, lab, cfg, key=jax.random.key(0), devices=1,
                                       solver=solver)
        rec = {"n": n, "solver": solver, "layer_s": [r["seconds"] for r in res.layers],
               "total_s": time.perf_counter() - t,
               "cg_iterations": [r["solve"]["iterations"] for r in res.layers],
               "nc1_agop": [r["nc1"]["agop"] for r in res.layers]}
      except Exception as e:
        rec = {"n": n, "solver": solver, "ok": False, "total_s": time.perf_counter() - t,
               "error": f"{type(e).__name__}: {str(e)[:300]}"}
      print("layer", rec, flush=True)
      out["layer"].append(rec)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("mode", choices=("cpu", "gpu"))
  p.add_argument("--n", type=int, default=1024, help="rows for the per-layer timing")
  p.add_argument("--d", type=int, default=64, help="input dimension = feature width")
  p.add_argument("--depth", type=int, default=4, help="layers per timing run")
  p.add_argument("--n-solve", type=int, default=5000, help="rows of the CG/PCG comparison")
  p.add_argument("--rank", type=int, default=500, help="Nyström landmarks")
  p.add_argument("--budget-s", type=float, default=420.0, help="gpu: stop climbing after this")
  p.add_argument("--ladder-scale", type=float, default=1.0,
                 help="gpu: multiply the ladder's N (a small value checks the code on CPU)")
  p.add_argument("--json", default=None, help="write the results here")
  args = p.parse_args(argv)
  res = cpu(args) if args.mode == "cpu" else gpu(args)
  res["jax"] = jax.__version__
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=1)


if __name__ == "__main__":
  main()
