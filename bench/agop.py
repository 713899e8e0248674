"""The ``vmap(jacrev)`` AGOP against a closed-form einsum AGOP of the same kernel, same run.

Both compute the Laplace-kernel predictor's AGOP at the training points with the
self term masked, in float32 with HIGHEST precision, blocked over rows:

* ``jacrev``: ``dnc_jax.agop.agop_sum`` of ``kernel_predictor`` (as Deep RFM runs it, with
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

from dnc_jax import kernels as K
from dnc_jax.agop import agop_sum, kernel_predictor

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
  mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=H))
  big = jnp.asarray(rng.normal(size=(n * k // 4, n)), jnp.float32)

  def t(fn, *a):
    jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*a))
      ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

  flops = 2 * n * n * k * d + 2 * n * k * d * d + 2 * n * n * d
  t_mm = t(mm, big, x)
  mm_rate = 2 * big.shape[0] * n * d / t_mm
  t_j = t(jacrev_agop, x, alpha)
  t_c = t(closed, x, alpha)
  err = float(jnp.linalg.norm(jacrev_agop(x, alpha) - closed(x, alpha)) / jnp.linalg.norm(closed(x, alpha)))
  print(f"AGOP N={n} d={d} K={k} block={bs}, float32 HIGHEST, {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, median of {args.repeats}; {flops / 1e9:.1f} GFLOP")
  print(f"plain matmul       {mm_rate / 1e9:8.1f} GFLOP/s")
  print(f"vmap(jacrev) AGOP  {t_j:8.3f} s  {flops / t_j / 1e9:8.1f} GFLOP/s  {flops / t_j / mm_rate:5.2f} × matmul")
  print(f"closed-form AGOP   {t_c:8.3f} s  {flops / t_c / 1e9:8.1f} GFLOP/s  {flops / t_c / mm_rate:5.2f} × matmul")
  print(f"jacrev / closed-form time: {t_j / t_c:.2f}; relative difference of the two M: {err:.1e}")


if __name__ == "__main__":
  main()
