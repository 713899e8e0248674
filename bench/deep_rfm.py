"""Per-stage timing of one Deep RFM layer, with achieved FLOP/s next to a plain matmul's.

Stages (each jitted on its own, timed after compilation, median of --repeats):
kernel matrix (centred-frame distances + Laplace), Cholesky solve, AGOP (the
implementation a run plans, ``--agop auto``: the closed form reusing the
distances when it fits, else ``vmap(jacrev)`` of the kernel predictor), PSD
square root (``eigh``), random features, and the collapse metrics of the three
representations. The whole layer (``rfm_layer``, one jit) is timed too. FLOPs
are counted as implemented (``rfm.layer.layer_flops``):

  kernel 2N²(d + 2K), solve N³/3 + 4N²K, AGOP 2N²K(d + K) + 2NK²d + 2NKd²
  (closed form) or 2N²d + 2N²K + 2N²Kd + 2NKd² (rules), square root ≈ 9d³
  (eigh) + 2d³, features 2Nd² + 2NdD.

The roofline reference is a float32 ``[2048, 2048] × [2048, 2048]`` matmul with
HIGHEST precision measured in the same run; ratios are stage FLOP/s ÷ matmul FLOP/s.

Shared machines drift (CPU steal, other jobs), so each timing of a stage is paired
with a timing of the reference matmul taken right before it; the reported ratio is
the median over repeats of the per-pair ratios.

``--run`` times a whole Deep RFM run instead (``deep_rfm`` on a real dataset, all
metrics) and divides its counted FLOPs (``deep_rfm.layer_flops``) by the layer
loop's wall time, next to a plain matmul timed between layers. A two-layer
warm-up compiles both layer shapes first, so the timed run excludes compilation.
Then it runs the whole command ``bin/deep_rfm`` on the same problem
(``--command-runs`` times, in a fresh process each) and prints where its wall
time goes: import, data, compilation, the layer loop (and its share of the
wall time), checkpoints, Gram pictures, final KRR, figures, files (the
``timing`` entry of its metrics.json).

  python bench/deep_rfm.py --n 2000 --d 1024 --classes 10
  python bench/deep_rfm.py --run --dataset fashion_mnist --n 5000 --depth 6
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.rfm import features as F
from dnc_jax.rfm import kernels as K
from dnc_jax.rfm import krr as R
from dnc_jax import metrics as MT
from dnc_jax.rfm import memory as MEM
from dnc_jax.rfm import driver as drfm
from dnc_jax.rfm.agop import agop_sum, kernel_predictor
from dnc_jax.rfm.layer import layer_flops
from dnc_jax.rfm.predictor import closed_form_agop_sum

H = jax.lax.Precision.HIGHEST


REF_SHAPE = "[2048, 2048] x [2048, 2048]"


def reference_matmul(size=2048, *, sustained: int = 0):
  """A function returning the current plain-matmul rate (GFLOP/s).

  ``sustained = 0``: median of 3 single products (the burst rate, about 40 ms each on
  the 2-core CPU). ``sustained = k``: ``k`` products back to back, timed together (on
  the 2-core CPU ``k = 24`` lasts about a second, under the same sustained load as a layer).
  """
  a = jnp.asarray(np.random.default_rng(1).normal(size=(size, size)), jnp.float32)
  mm = jax.jit(lambda a: jnp.matmul(a, a, precision=H))
  jax.block_until_ready(mm(a))

  def rate():
    if sustained:
      t0 = time.perf_counter()
      jax.block_until_ready([mm(a) for _ in range(sustained)])
      return sustained * 2 * size**3 / (time.perf_counter() - t0) / 1e9
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      jax.block_until_ready(mm(a))
      times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9

  return rate


def paired(fn, ref, *, repeats=3):
  """Per-repeat ``(t_fn, t_ref)``, each ``fn`` timing right after one of ``ref``."""
  jax.block_until_ready(fn())
  jax.block_until_ready(ref())
  pairs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(ref())
    t1 = time.perf_counter()
    jax.block_until_ready(fn())
    pairs.append((time.perf_counter() - t1, t1 - t0))
  return pairs


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=2000)
  p.add_argument("--d", type=int, default=1024)
  p.add_argument("--classes", type=int, default=10)
  p.add_argument("--width", type=int, default=1024)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default=None, help="also write the results here")
  p.add_argument("--scaling", default=None,
                 help="comma-separated N values: time every stage at each N and fit the exponent "
                      "of time ~ N^p per stage (log-log least squares); writes --figure")
  p.add_argument("--figure", default="scaling.png", help="log-log figure of --scaling")
  p.add_argument("--run", action="store_true",
                 help="time a whole Deep RFM run on --dataset (--n, --n-test, --depth)")
  p.add_argument("--agop", default="auto", choices=("auto", "closed_form", "rules"),
                 help="the per-stage bench's AGOP implementation (auto: as a run plans it)")
  p.add_argument("--agop-compare", action="store_true",
                 help="the layer loop with --agop rules and closed_form side by side")
  p.add_argument("--dataset", default="fashion_mnist")
  p.add_argument("--n-test", type=int, default=1000)
  p.add_argument("--depth", type=int, default=6)
  p.add_argument("--dim", type=int, default=3072, help="input dimension of --dataset synthetic")
  p.add_argument("--matmul-precision", default="highest", choices=("highest", "tf32"))
  p.add_argument("--command-runs", type=int, default=1,
                 help="with --run: whole bin/deep_rfm commands to time after it (0: none); "
                      "the first may fill the persistent compilation cache")
  p.add_argument("--precision", default="float32",
                 help="--precision of the whole commands: auto, float32, float64, or several "
                      "separated by commas (e.g. auto,float32,float64: wall times side by side "
                      "and each one's NC1/NC2 against the last one's at every layer)")
  args = p.parse_args(argv)
  if args.agop_compare:
    out = bench_agop_implementations(args)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    return out
  if args.run:
    return bench_run(args)
  if args.scaling:
    return scaling(args)
  return bench_one(args)


def scaling(args):
  ns = [int(v) for v in args.scaling.split(",")]
  per_n = {}
  for n in ns:
    sub = argparse.Namespace(**{**vars(args), "n": n, "scaling": None, "json": None})
    per_n[n] = bench_one(sub, quiet=True)
  stages = [s for s in per_n[ns[0]] if s != "matmul (reference)"]
  print(f"\nscaling over N = {ns} (d={args.d}, K={args.classes}, D={args.width}); seconds and "
        "fitted exponent p of time ~ N^p")
  print(f"{'stage':<20}" + "".join(f"{n:>10}" for n in ns) + f"{'p':>8}")
  fits = {}
  for s in stages:
    t = np.array([per_n[n][s]["seconds"] for n in ns])
    p_ = float(np.polyfit(np.log(ns), np.log(t), 1)[0])
    fits[s] = p_
    print(f"{s:<20}" + "".join(f"{v:>10.3f}" for v in t) + f"{p_:>8.2f}")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for s in stages:
    ax.loglog(ns, [per_n[n][s]["seconds"] for n in ns], "-o", ms=3, label=f"{s} (p = {fits[s]:.2f})")
  ax.set_xlabel("N (training points)")
  ax.set_ylabel("seconds (median)")
  ax.set_title(f"Deep RFM layer stages, d = {args.d}, float32 HIGHEST", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(True, which="both", alpha=0.3)
  fig.savefig(args.figure, dpi=150, bbox_inches="tight")
  print(f"wrote {args.figure}")


def bench_one(args, quiet=False):
  n, d, k, width = args.n, args.d, args.classes, args.width

  rng = np.random.default_rng(0)
  lab = jnp.asarray(np.repeat(np.arange(k), n // k + 1)[:n].astype(np.int32))
  centres = rng.normal(size=(k, d))
  x = centres[np.asarray(lab)] + rng.normal(size=(n, d))
  x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32)
  y = 2.0 * jax.nn.one_hot(lab, k, dtype=jnp.float32) - 1.0
  # The block size and AGOP implementation a run would plan (--agop auto: the closed form
  # when it fits).
  plan = MEM.plan_layer(n, 1, d, width, k, budget=MEM.budget_bytes(None), agop=args.agop)
  bs, impl = plan.batch_size, plan.agop
  fl = layer_flops(n, 1, d, k, width, agop=impl)

  sq = jnp.asarray(rng.normal(size=(2048, 2048)), jnp.float32)
  mm = jax.jit(lambda a: jnp.matmul(a, a, precision=H))

  @jax.jit
  def kernel(x):
    fr = K.centred_frame(x, lab, k)
    dist = jnp.where(jnp.eye(n, dtype=bool), 0.0, K.frame_sq_distances(fr, x, lab))
    return K.laplace_from_sq(dist, 2.0), dist

  kmat, dist = kernel(x)
  solve = jax.jit(lambda km: R.cholesky_solve(km, y, 1e-3)[0])
  alpha = solve(kmat)

  @jax.jit
  def agop(x, alpha, dist):
    fr = K.centred_frame(x, lab, k)
    if impl == "closed_form":
      return closed_form_agop_sum(x, alpha, kernel="laplace", bandwidth=2.0, batch_size=bs,
                                  frame=fr, sq_distances=dist) / n
    f = kernel_predictor(x, alpha, kernel="laplace", bandwidth=2.0, frame=fr)
    return agop_sum(f, x, batch_size=bs) / n

  m = agop(x, alpha, dist)
  m = m / jnp.max(m)
  sqrt = MT.psd_sqrt
  params = F.init_features(jax.random.key(0), "relu", d, width, init="uniform")
  feats = jax.jit(lambda z: F.apply_features(params, z, "relu"))
  root = sqrt(m)
  # The layer's projection X M^{1/2} and its features, as layer_flops counts them (N_t = 1).
  project = jax.jit(lambda z, z1, r: (F.apply_features(params, jnp.matmul(z, r, precision=H), "relu"),
                                      F.apply_features(params, jnp.matmul(z1, r, precision=H), "relu")))

  @jax.jit
  def metrics(z):
    return MT.collapse_from_stats(z, lab, MT.class_stats(z, lab, k))

  cfg = drfm.preset_config("reference", width=width, agop=impl)
  xt = x[:1]

  stages = {
      "matmul (reference)": (lambda: mm(sq), 2 * 2048**3),
      "kernel": (lambda: kernel(x), fl["kernel"]),
      "solve": (lambda: solve(kmat), fl["solve"]),
      f"agop ({impl})": (lambda: agop(x, alpha, dist), fl["agop"]),
      "sqrt": (lambda: sqrt(m), fl["sqrt"]),
      "features": (lambda: project(x, x[:1], root), fl["features"]),
      "metrics x3": (lambda: [metrics(x), metrics(x), metrics(feats(x))], 3 * 6 * n * d),
      "whole layer": (lambda: drfm.rfm_layer(x, xt, y, lab, jax.random.key(1), cfg,
                                             batch_size=bs), 0),
  }
  results = {}
  say = (lambda *a, **kw: None) if quiet else print
  say(f"Deep RFM layer, N={n}, d={d}, K={k}, D={width}, float32 HIGHEST; backend "
        f"{jax.default_backend()}, {os.cpu_count()} CPUs; median of {args.repeats}; "
        "÷ matmul = median of per-repeat ratios to a matmul timed just before")
  say(f"{'stage':<20}{'seconds':>10}{'GFLOP':>10}{'GFLOP/s':>10}{'÷ matmul':>10}")
  ref_fn, ref_flops = stages["matmul (reference)"]
  for name, (fn, flops) in stages.items():
    if name == "whole layer":
      flops = fl["total"]
    pairs = paired(fn, ref_fn, repeats=args.repeats)
    t = statistics.median(a for a, _ in pairs)
    rate = flops / t / 1e9 if flops else None
    ratio = statistics.median((flops / a) / (ref_flops / b) for a, b in pairs) if flops else None
    results[name] = {"seconds": t, "gflop": flops / 1e9 if flops else None, "gflops": rate,
                     "ratio_to_matmul": ratio}
    say(f"{name:<20}{t:>10.3f}{(flops or 0) / 1e9:>10.2f}{(rate or 0):>10.1f}"
          f"{(ratio or 0):>10.2f}")
  stage_sum = sum(v["seconds"] for k_, v in results.items() if k_ not in ("matmul (reference)", "whole layer"))
  say(f"sum of stages {stage_sum:.3f} s; whole layer {results['whole layer']['seconds']:.3f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"n": n, "d": d, "k": k, "width": width, "results": results}, f, indent=2)
  return results


def bench_run(args):
  """A whole Deep RFM run: counted FLOPs ÷ layer-loop time, against a plain matmul."""
  from dnc_jax import data as data_lib
  from dnc_jax.rfm import memory as memory_lib
  extra = {"dim": args.dim} if args.dataset == "synthetic" else {}
  ds = data_lib.load_dataset(args.dataset, n=args.n, n_test=args.n_test, **extra)
  x, xt = ds.x_train.astype(np.float32), ds.x_test.astype(np.float32)
  n, k = x.shape[0], ds.num_classes
  ref = reference_matmul()
  ref_sustained = reference_matmul(sustained=24)
  print(f"Deep RFM run: {args.dataset}, N={n}, N_test={xt.shape[0]}, d_in={x.shape[1]}, K={k}, "
        f"D={args.width}, depth {args.depth}, float32 {args.matmul_precision}, all metrics; "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs")
  print(f"reference: {REF_SHAPE} float32 matmul, median of 3 (burst) and 24 back to back "
        "(sustained, about as long as a layer), timed after every layer; a layer's ratio uses "
        "the reference timed before and after it")
  out = {}
  # The warm-up compiles both layer shapes (d_in -> D, then D -> D); the timed run reuses them.
  for attempt, depth in (("warm-up (compiles)", min(2, args.depth)), ("compiled", args.depth)):
    cfg = drfm.preset_config("reference", depth=depth, width=args.width,
                             matmul_precision=args.matmul_precision)
    mm_rates, mm_sustained = [ref()], [ref_sustained()]

    def callback(rec):
      mm_rates.append(ref())
      mm_sustained.append(ref_sustained())

    t0 = time.perf_counter()
    res = drfm.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(0), x_test=xt,
                        labels_test=ds.y_test, num_classes=k, callback=callback)
    wall = time.perf_counter() - t0
    secs = [r["seconds"] for r in res.layers]
    gflop = sum(r["gflop"] for r in res.layers)
    rate = gflop / sum(secs)
    mm_rate = statistics.median(mm_rates)
    per_layer = [r["gflop"] / r["seconds"] / (0.5 * (mm_rates[i] + mm_rates[i + 1]))
                 for i, r in enumerate(res.layers)]
    mm_sus = statistics.median(mm_sustained)
    out[attempt] = {"layer_seconds": secs, "loop_seconds": sum(secs), "wall_seconds": wall,
                    "gflop": gflop, "gflops": rate, "matmul_gflops": mm_rates,
                    "ratio_to_matmul": rate / mm_rate, "layer_ratios": per_layer,
                    "median_layer_ratio": statistics.median(per_layer),
                    "matmul_sustained_gflops": mm_sustained,
                    "ratio_to_sustained_matmul": rate / mm_sus,
                    "agop_batch_size": res.layers[0]["agop_batch_size"],
                    "final_test_acc": res.final["test_acc"],
                    "nc1_agop": [r["nc1"]["agop"] for r in res.layers]}
    print(f"{attempt:>18}: layer loop {sum(secs):7.1f} s (layers " +
          ", ".join(f"{s_:.1f}" for s_ in secs) + f"); run {wall:.1f} s with the final KRR; "
          f"{gflop:.0f} GFLOP, {rate:.1f} GFLOP/s; matmul {mm_rate:.1f} GFLOP/s (median); "
          f"whole-loop ratio {rate / mm_rate:.2f}; per-layer ratios " +
          ", ".join(f"{v:.2f}" for v in per_layer) + f" (median {statistics.median(per_layer):.2f}); "
          f"sustained matmul {mm_sus:.1f} GFLOP/s (median), whole-loop ratio to it "
          f"{rate / mm_sus:.2f}")
  peak = memory_lib.peak_bytes()
  out["peak_bytes"] = peak
  print(f"peak memory: device {peak['device'] / 2**30 if peak['device'] else float('nan'):.2f} GiB "
        f"(accelerator allocator; nan on a CPU), host {peak['host'] / 2**30:.2f} GiB (peak RSS); "
        f"AGOP blocks of {out['compiled']['agop_batch_size']} rows; NC1 of X M^1/2 at the last "
        f"layer {out['compiled']['nc1_agop'][-1]:.3g} (paper convention); test accuracy "
        f"{out['compiled']['final_test_acc']}")
  if args.command_runs > 0:
    out["commands"] = bench_command(args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"n": n, "dataset": args.dataset, "depth": args.depth, "runs": out}, f, indent=2)
  return out


def bench_agop_implementations(args):
  """The layer loop with agop='rules' and agop='closed_form', interleaved: medians and NC1."""
  from dnc_jax import data as data_lib
  ds = data_lib.load_dataset(args.dataset, n=args.n, n_test=args.n_test)
  x, xt = ds.x_train.astype(np.float32), ds.x_test.astype(np.float32)
  ref = reference_matmul()
  print(f"AGOP implementations in the layer loop: {args.dataset}, N={x.shape[0]}, depth "
        f"{args.depth}, D={args.width}, float32; {args.repeats} interleaved rounds after a warm-up")
  loops = {"rules": [], "closed_form": []}
  mm, nc1, gflop = [], {}, 0.0
  for rnd in range(args.repeats + 1):
    for impl in loops:
      cfg = drfm.preset_config("reference", depth=args.depth, width=args.width, agop=impl,
                               gram_layers=())
      res = drfm.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(0), x_test=xt,
                          labels_test=ds.y_test, num_classes=ds.num_classes)
      mm.append(ref())
      if rnd:   # round 0 compiles
        loops[impl].append(sum(r["seconds"] for r in res.layers))
      nc1[impl] = [r["nc1"]["agop"] for r in res.layers]
      gflop = sum(r["gflop"] for r in res.layers)
  mm_rate = statistics.median(mm)
  med = {impl: statistics.median(v) for impl, v in loops.items()}
  for impl, t in med.items():
    print(f"{impl:>12}: layer loop {t:.2f} s (median), {gflop / t / mm_rate:.2f} of the matmul "
          f"rate ({mm_rate:.0f} GFLOP/s; the rules' FLOP count for both)")
  dev = max(abs(a / b - 1) for a, b in zip(nc1["closed_form"], nc1["rules"]))
  print(f"closed_form / rules loop time {med['closed_form'] / med['rules']:.3f}; largest relative "
        f"NC1(agop) difference over the layers {dev:.2e}")
  return {"loop_seconds": loops, "matmul_gflops": mm, "nc1_agop": nc1, "gflop": gflop}


def bench_command(args):
  """Whole ``bin/deep_rfm`` commands in fresh processes: wall time by phase (their ``timing``).

  With several ``--precision`` values the commands alternate between them, and each
  precision's NC1/NC2 (three representations, every layer) is compared with the
  last precision's (float64 in ``auto,float32,float64``).
  """
  import subprocess
  import tempfile
  from dnc_jax.rfm.timing import PHASES, format_timing
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  precisions = args.precision.split(",")
  timings = {p_: [] for p_ in precisions}
  layers = {}
  with tempfile.TemporaryDirectory(prefix="bench_deep_rfm_") as tmp:
    for i in range(args.command_runs):
      for prec in precisions:
        out = os.path.join(tmp, f"run{i}_{prec}")
        cmd = [sys.executable, os.path.join(repo, "bin", "deep_rfm"), "--dataset", args.dataset,
               "--n", str(args.n), "--n-test", str(args.n_test), "--depth", str(args.depth),
               "--width", str(args.width), "--precision", prec, "--out", out, "--no-progress"]
        if args.matmul_precision != "highest":
          cmd += ["--matmul-precision", args.matmul_precision]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
          raise SystemExit(f"bench: bin/deep_rfm failed ({proc.returncode}): {proc.stderr.strip()}")
        with open(os.path.join(out, "metrics.json")) as f:
          metrics = json.load(f)
        t = metrics["timing"]
        t["wall_seconds_outside"] = wall   # as the caller sees it, process exit included
        t["dtype"] = metrics["config"]["dtype"]
        timings[prec].append(t)
        layers[prec] = metrics["layers"]
        print(f"{prec + ' ' + str(i + 1):>18}: {format_timing(t)} ({t['dtype']}); outside the "
              f"loop {t['total'] - t['layers']:.1f} s ({wall:.1f} s seen from outside)")
  for prec, ts in timings.items():
    med = {p_: statistics.median(t[p_] for t in ts) for p_ in PHASES + ("total",)}
    share = statistics.median(t["loop_share"] for t in ts)
    print(f"{'median ' + prec:>18}: whole command {med['total']:.1f} s, layer loop "
          f"{med['layers']:.1f} s ({100 * share:.0f}% of the wall time), outside it " + ", ".join(
              f"{p_} {med[p_]:.1f}" for p_ in PHASES if p_ != "layers"))
  if len(precisions) > 1:
    ref = precisions[-1]
    tref = statistics.median(t["total"] for t in timings[ref])
    for prec in precisions[:-1]:
      worst = max(abs(a[m][r] / b[m][r] - 1) for a, b in zip(layers[prec], layers[ref])
                  for m in ("nc1", "nc2") for r in ("input", "agop", "features"))
      per_layer = [max(abs(a[m][r] / b[m][r] - 1) for m in ("nc1", "nc2")
                       for r in ("input", "agop", "features"))
                   for a, b in zip(layers[prec], layers[ref])]
      t = statistics.median(x["total"] for x in timings[prec])
      print(f"{prec} against {ref}: whole command {t / tref:.2f}x; largest relative NC1/NC2 "
            f"difference {worst:.2e}; per layer " + ", ".join(f"{v:.1e}" for v in per_layer))
  return timings


if __name__ == "__main__":
  main()
