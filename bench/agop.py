"""The ``vmap(jacrev)`` AGOP against a closed-form einsum AGOP of the same kernel, same run.

Both compute the Laplace-kernel predictor's AGOP at the training points with the
self term masked, in float32 with HIGHEST precision, blocked over rows:

* ``jacrev``: ``dnc_jax.rfm.agop.agop_sum`` of ``kernel_predictor`` (as Deep RFM runs it, with
  class-centred distances);
* ``closed form``: ``J_i = Σ_j α_j c_ij (x_i − x_j)ᵀ`` with
  ``c_ij = −k_ij / (L‖x_i − x_j‖)``, written as matmuls.

A plain matmul of the same size gives the roofline reference.

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
from dnc_jax.rfm.agop import agop_sum, kernel_predictor

H = jax.lax.Precision.HIGHEST


def closed_form_agop(x, alpha, *, bandwidth, batch_size):
  n, d = x.shape

  def body(acc, i0):
    xb = jax.lax.dynamic_slice_in_dim(x, i0, batch_size)
    dist = jnp.sqrt(jnp.maximum(K.sq_distances(xb, x), 1e-30))
    c = -jnp.exp(-dist / bandwidth) / (bandwidth * dist)
    self_ = jnp.arange(n)[None, :] == (i0 + jnp.arange(batch_size))[:, None]
    c = jnp.where(self_, 0.0, c)
    s = jnp.matmul(c, alpha, precision=H)                                  # [B, K]
    t = jnp.einsum("bn,nk,nd->bkd", c, alpha, x, precision=H)             # [B, K, d]
    jac = s[:, :, None] * xb[:, None, :] - t
    return acc + jnp.einsum("bkd,bke->de", jac, jac, precision=H), None

  acc, _ = jax.lax.scan(body, jnp.zeros((d, d), x.dtype), jnp.arange(0, n, batch_size))
  return acc / n


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=2000)
  p.add_argument("--d", type=int, default=1024)
  p.add_argument("--classes", type=int, default=10)
  p.add_argument("--batch-size", type=int, default=200)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  n, d, k, bs = args.n, args.d, args.classes, args.batch_size
  assert n % bs == 0, "--n must be a multiple of --batch-size"
  rng = np.random.default_rng(0)
  lab = jnp.asarray(np.repeat(np.arange(k), n // k + 1)[:n].astype(np.int32))
  x = rng.normal(size=(n, d)) + rng.normal(size=(k, d))[np.asarray(lab)]
  x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32)
  alpha = jnp.asarray(rng.normal(size=(n, k)), jnp.float32)

  @jax.jit
  def jacrev_agop(x, alpha):
    f = kernel_predictor(x, alpha, kernel="laplace", bandwidth=2.0,
                         frame=K.centred_frame(x, lab, k))
    return agop_sum(f, x, batch_size=bs) / n

  closed = jax.jit(functools.partial(closed_form_agop, bandwidth=2.0, batch_size=bs))
  mm = jax.jit(lambda a: jnp.matmul(a, a, precision=H))
  sq = jnp.asarray(rng.normal(size=(2048, 2048)), jnp.float32)

  # Interleaved: each repeat times the matmul, then jacrev, then the closed form, so a
  # slow spell of a shared machine hits all three; ratios are medians of per-repeat ratios.
  fns = {"mm": lambda: mm(sq), "jacrev": lambda: jacrev_agop(x, alpha),
         "closed": lambda: closed(x, alpha)}
  for f in fns.values():
    jax.block_until_ready(f())
  times = {k_: [] for k_ in fns}
  for _ in range(args.repeats):
    for k_, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f())
      times[k_].append(time.perf_counter() - t0)
  med = {k_: statistics.median(v) for k_, v in times.items()}
  mm_flops = 2 * 2048**3
  flops = 2 * n * n * k * d + 2 * n * k * d * d + 2 * n * n * d

  def ratio(name):
    return statistics.median((flops / a) / (mm_flops / m) for a, m in zip(times[name], times["mm"]))

  m_j, m_c = jacrev_agop(x, alpha), closed(x, alpha)
  err = float(jnp.linalg.norm(m_j - m_c) / jnp.linalg.norm(m_c))
  print(f"AGOP N={n} d={d} K={k} block={bs}, float32 HIGHEST, {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, {args.repeats} interleaved repeats; {flops / 1e9:.1f} GFLOP")
  print(f"plain matmul [2048]^3  {mm_flops / med['mm'] / 1e9:8.1f} GFLOP/s (median)")
  print(f"vmap(jacrev) AGOP  {med['jacrev']:8.3f} s  {flops / med['jacrev'] / 1e9:8.1f} GFLOP/s  "
        f"{ratio('jacrev'):5.2f} × matmul")
  print(f"closed-form AGOP   {med['closed']:8.3f} s  {flops / med['closed'] / 1e9:8.1f} GFLOP/s  "
        f"{ratio('closed'):5.2f} × matmul")
  per = [a / c for a, c in zip(times["jacrev"], times["closed"])]
  print(f"jacrev / closed-form time: {statistics.median(per):.2f} (median of per-repeat ratios; "
        f"range {min(per):.2f}-{max(per):.2f}); relative difference of the two M: {err:.1e}")


if __name__ == "__main__":
  main()
