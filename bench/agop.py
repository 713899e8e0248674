"""The kernel predictor's AGOP by hand-written rules and in closed form, same run.

All compute the Laplace-kernel predictor's AGOP at the training points with the
self term masked and class-centred distances (as a Deep RFM layer runs it), in
float32 with HIGHEST precision, blocked over rows
(``dnc_jax.rfm.predictor``):

* ``rules``: ``agop_sum`` of ``kernel_predictor`` (``vmap(jacrev)`` through
  the hand-written derivative rules);
* ``closed form``: ``closed_form_agop_sum``, distances computed block by block;
* ``closed form, given sq``: the same reading the ``[N, N]`` squared distances
  that the layer's solve already holds (their cost is not counted);
* ``closed form, no frame``: plain differences ``x_i − x_j`` (what
  ``kernel_agop(implementation="closed_form")`` computes), whose float32 error
  grows as classes collapse (``--spread 1e-4``).

Each result's deviation from a float64 reference (the closed form in float64
without the frame: plain differences), and a plain matmul of the same size as
the roofline.

  python bench/agop.py --n 2000 --d 1024
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.rfm import kernels as K
from dnc_jax.rfm.agop import agop_sum
from dnc_jax.rfm.predictor import closed_form_agop_sum, kernel_predictor

H = jax.lax.Precision.HIGHEST


def _enable_x64():
  enable = getattr(jax, "enable_x64", None)
  if enable is None:  # older JAX
    from jax.experimental import enable_x64 as enable
  return enable(True)


def _data(n, d, k, spread):
  rng = np.random.default_rng(0)
  lab = np.repeat(np.arange(k), n // k + 1)[:n].astype(np.int32)
  x = rng.normal(size=(k, d))[lab] + spread * rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True), rng.normal(size=(n, k)), lab


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=2000)
  p.add_argument("--d", type=int, default=1024)
  p.add_argument("--classes", type=int, default=10)
  p.add_argument("--batch-size", type=int, default=200)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--spread", type=float, default=1.0,
                 help="within-class noise over the class means' scale (small: collapsed classes)")
  args = p.parse_args(argv)
  n, d, k, bs = args.n, args.d, args.classes, args.batch_size
  x64, alpha64, lab_np = _data(n, d, k, args.spread)
  x, alpha = jnp.asarray(x64, jnp.float32), jnp.asarray(alpha64, jnp.float32)
  lab = jnp.asarray(lab_np)
  closed = functools.partial(closed_form_agop_sum, kernel="laplace", bandwidth=2.0, batch_size=bs)

  # Labels are arguments, as in a layer: constant labels let XLA fold the class counts and
  # divide by their reciprocals, and the residuals x − μ are then no longer exact.
  @jax.jit
  def rules(x, alpha, lab):
    f = kernel_predictor(x, alpha, kernel="laplace", bandwidth=2.0, frame=K.centred_frame(x, lab, k))
    return agop_sum(f, x, batch_size=bs) / n

  closed_frame = jax.jit(lambda x, alpha, lab: closed(x, alpha, frame=K.centred_frame(x, lab, k)) / n)
  closed_plain = jax.jit(lambda x, alpha: closed(x, alpha) / n)
  closed_sq = jax.jit(lambda x, alpha, fr, sq: closed(x, alpha, frame=fr, sq_distances=sq) / n)

  @jax.jit
  def layer_frame(x, lab):
    # As a layer builds them for its solve (inside jit): frame distances, zero diagonal.
    frame = K.centred_frame(x, lab, k)
    return frame, jnp.where(jnp.eye(n, dtype=bool), 0.0, K.frame_sq_distances(frame, x, lab))

  frame, sq = layer_frame(x, lab)
  mm = jax.jit(lambda a: jnp.matmul(a, a, precision=H))
  sq_mm = jnp.asarray(np.random.default_rng(1).normal(size=(2048, 2048)), jnp.float32)

  # Interleaved: each repeat times every variant, so a slow spell of a shared machine
  # hits all; ratios are medians of per-repeat ratios.
  fns = {"mm": lambda: mm(sq_mm), "rules": lambda: rules(x, alpha, lab),
         "closed": lambda: closed_frame(x, alpha, lab), "closed_sq": lambda: closed_sq(x, alpha, frame, sq),
         "closed_plain": lambda: closed_plain(x, alpha)}
  results = {k_: jax.block_until_ready(f()) for k_, f in fns.items()}
  times = {k_: [] for k_ in fns}
  for _ in range(args.repeats):
    for k_, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f())
      times[k_].append(time.perf_counter() - t0)
  with _enable_x64():
    # The float32 inputs in float64: the deviation is the computation's, not the inputs'.
    ref = np.asarray(closed_plain(jnp.asarray(np.asarray(x, np.float64)),
                                  jnp.asarray(np.asarray(alpha, np.float64))))

  mm_flops = 2 * 2048**3
  gemm = 2 * n * n * k * d + 2 * n * k * d * d       # Jacobian GEMM + JᵀJ
  flops = {"rules": gemm + 2 * n * n * d, "closed": gemm + 2 * n * n * d, "closed_sq": gemm,
           "closed_plain": gemm + 2 * n * n * d}
  labels = {"rules": "rules (vmap(jacrev))", "closed": "closed form",
            "closed_sq": "closed form, given sq", "closed_plain": "closed form, no frame"}
  print(f"AGOP N={n} d={d} K={k} block={bs} spread={args.spread}, float32 HIGHEST, "
        f"{jax.default_backend()}, {os.cpu_count()} CPUs, {args.repeats} interleaved repeats")
  print(f"plain matmul [2048]^3       {mm_flops / statistics.median(times['mm']) / 1e9:8.1f} GFLOP/s")
  for name in labels:
    med = statistics.median(times[name])
    rate = statistics.median((flops[name] / a) / (mm_flops / m) for a, m in zip(times[name], times["mm"]))
    per = statistics.median(a / b for a, b in zip(times[name], times["rules"]))
    err = np.linalg.norm(np.asarray(results[name], np.float64) - ref) / np.linalg.norm(ref)
    print(f"{labels[name]:<26}{med:8.3f} s  {flops[name] / med / 1e9:7.1f} GFLOP/s  "
          f"{rate:5.2f} × matmul  time/rules {per:5.2f}  float32 vs float64 {err:.1e}")


if __name__ == "__main__":
  main()
