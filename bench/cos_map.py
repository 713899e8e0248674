r"""What the cos feature map does to NC1, layer by layer, against the exact kernel.

Follows one Deep RFM trajectory with cos features (the ``reference`` preset,
γ = ``--sigma``, D = input dimension) and, at every layer, takes the same AGOP-
projected rows :math:`\tilde X_l = X_l M_l^{1/2}` and measures NC1 (paper
convention, tr Σ_W / tr Σ_B) of

* ``agop``: :math:`\tilde X_l` itself;
* ``kernel γ``: the exact feature map of the ℓ1-Laplace kernel
  :math:`k(x, y) = \exp(-γ\|x - y\|_1)` (D → ∞), from the kernel matrix:
  :math:`\mathrm{tr}\,Σ_W = \frac1N\sum_i k_{ii} - \frac1N\sum_c n_c\|μ_c\|^2`,
  :math:`μ_c \cdot μ_{c'} = \frac{1}{n_c n_{c'}}\sum_{i \in c, j \in c'} k_{ij}`;
* ``rff γ, D``: the random cos features :math:`\sqrt{2/D}\cos(\tilde X W^\top + b)`,
  ``W ~ Cauchy(0, γ)``, for the widths ``--widths``;

for every γ of ``--gammas``; ``kernel_rownorm γ``: the exact map applied to
:math:`\tilde X_l` with rows rescaled to unit ℓ2 norm (the scale of
:math:`X M^{1/2}` removed before the map); plus the median of :math:`γ\|\tilde x - \tilde y\|_1`
over pairs of one class and of different classes (the kernel's operating range).
Usage::

    python bench/cos_map.py --dataset fashion_mnist --n 1000 --json docs/runs/rfm_cos_map_fm1000/cos_map.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def kernel_nc1(k: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """NC1 of the kernel's exact feature map from the kernel matrix ``k`` ``[N, N]``."""
  n = k.shape[0]
  onehot = np.eye(num_classes)[labels]                      # [N, K]
  counts = onehot.sum(0)
  gram = onehot.T @ k @ onehot / np.outer(counts, counts)   # μ_c·μ_c'
  tr_w = (np.trace(k) - counts @ np.diag(gram)) / n
  w = counts / n
  sq = np.diag(gram) - 2 * gram @ w + w @ gram @ w          # ‖μ_c − μ_G‖²
  tr_b = sq.mean()
  return float(tr_w / tr_b)


def nc1_rows(x: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """NC1 of explicit rows (the linear kernel)."""
  return kernel_nc1(x @ x.T, labels, num_classes)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="fashion_mnist")
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--depth", type=int, default=19)
  p.add_argument("--sigma", type=float, default=0.05, help="γ of the trajectory's cos features")
  p.add_argument("--gammas", default="0.001,0.01,0.05,0.1,0.5,2")
  p.add_argument("--widths", default="784,4096")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from scipy.spatial.distance import cdist

  from dnc_jax import data as data_lib
  from dnc_jax.rfm import driver as drfm
  from dnc_jax.rfm import features
  from dnc_jax import metrics as metrics_lib

  gammas = [float(g) for g in args.gammas.split(",")]
  widths = [int(w) for w in args.widths.split(",")]
  ds = data_lib.load_dataset(args.dataset, n=args.n, n_test=0)
  k = ds.num_classes
  labels = ds.y_train
  x = jnp.asarray(ds.x_train, jnp.float32)
  lab = jnp.asarray(labels, jnp.int32)
  y = 2.0 * jax.nn.one_hot(lab, k, dtype=jnp.float32) - 1.0
  key = jax.random.key(args.seed)
  same = labels[:, None] == labels[None, :]
  off = ~np.eye(len(labels), dtype=bool)
  cfg = drfm.preset_config("reference", features="cos", sigma=args.sigma)
  rows = []
  for layer in range(1, args.depth + 1):
    t0 = time.perf_counter()
    x_next, _, out = drfm.rfm_layer(
        x, jnp.zeros((0, x.shape[1]), jnp.float32), y, lab, jax.random.fold_in(key, layer),
        dataclasses.replace(cfg, width=None, global_mean="sample"), batch_size=128)
    xa = np.asarray(jnp.matmul(drfm.normalise_rows(x), metrics_lib.psd_sqrt(out.m),
                               precision=jax.lax.Precision.HIGHEST), np.float64)
    l1 = cdist(xa, xa, "cityblock")
    xn = xa / np.linalg.norm(xa, axis=1, keepdims=True)
    l1n = cdist(xn, xn, "cityblock")
    rec = {"layer": layer, "nc1_input": float(out.metrics["input"]["nc1"]),
           "nc1_agop": nc1_rows(xa, labels, k),
           "nc1_features_run": float(out.metrics["features"]["nc1"]),
           "l1_within_median": float(np.median(l1[same & off])),
           "l1_across_median": float(np.median(l1[~same])),
           "row_norm_median": float(np.median(np.linalg.norm(xa, axis=1))),
           "kernel": {}, "kernel_rownorm": {}, "rff": {}}
    for g in gammas:
      rec["kernel"][str(g)] = kernel_nc1(np.exp(-g * l1), labels, k)
      rec["kernel_rownorm"][str(g)] = kernel_nc1(np.exp(-g * l1n), labels, k)
      for w in widths:
        prm = features.init_features(jax.random.fold_in(jax.random.key(1000 + args.seed), layer),
                                     "cos", xa.shape[1], w, sigma=g)
        f = np.asarray(features.apply_features(prm, jnp.asarray(xa, jnp.float32), "cos"),
                       np.float64)
        rec["rff"][f"{g},{w}"] = nc1_rows(f, labels, k)
    rows.append(rec)
    x = x_next
    print(f"layer {layer:2d} ({time.perf_counter() - t0:.1f} s): agop {rec['nc1_agop']:.4g} "
          f"run features {rec['nc1_features_run']:.4g}  kernel "
          + " ".join(f"{g}:{v:.3g}" for g, v in rec["kernel"].items())
          + f"  l1 within/across {rec['l1_within_median']:.3g}/{rec['l1_across_median']:.3g}",
          flush=True)
  result = {"dataset": args.dataset, "n": int(len(labels)), "sigma": args.sigma,
            "seed": args.seed, "gammas": gammas, "widths": widths,
            "preset": "reference (ridge 1e-3, Laplace L = 2), float32 trajectory, cos D = input dim",
            "layers": rows}
  if args.json:
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
