"""Multi-device checks, run by tests/test_sharded.py in a fresh process.

JAX fixes its device count when it starts, so the 4 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``) need their own process.
Usage: ``python tests/sharded_check.py OUT.json``; writes relative errors and
flags for the test to assert on.
"""
import dataclasses
import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import dnc_jax as dj  # noqa: E402
from dnc_jax import metrics as metrics_lib  # noqa: E402
from dnc_jax.rfm import sharded  # noqa: E402

from dnc_jax.rfm import driver as drfm

N, D, K, N_TEST = 150, 16, 5, 37        # N, N_TEST not multiples of 4: padding is exercised
RANK, TOL = 16, 1e-12                   # few landmarks, so CG really iterates


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def data():
  rng = np.random.default_rng(0)
  centres = 0.8 * rng.normal(size=(K, D))
  lab = np.sort(rng.integers(0, K, N)).astype(np.int32)   # grouped by class, like the loaders
  x = centres[lab] + rng.normal(size=(N, D))
  lab_t = rng.integers(0, K, N_TEST).astype(np.int32)
  xt = centres[lab_t] + rng.normal(size=(N_TEST, D))
  return x, lab, xt, lab_t


def layer_errors(out, ref):
  errs = {"x_next": rel(out[0], ref[0]), "x_test_next": rel(out[1], ref[1]),
          "m": rel(out[2].m, ref[2].m), "train_pred": rel(out[2].train_pred, ref[2].train_pred),
          "test_pred": rel(out[2].test_pred, ref[2].test_pred)}
  mets = max(abs(float(out[2].metrics[r][k]) - float(ref[2].metrics[r][k]))
             / abs(float(ref[2].metrics[r][k]))
             for r in ref[2].metrics for k in ref[2].metrics[r])
  errs["metrics"] = mets
  errs["ok"] = bool(out[2].solve_ok)
  return errs


def main(path):
  res = {"devices": jax.device_count()}
  x, lab, xt, lab_t = data()
  y = 2.0 * np.eye(K)[lab] - 1.0
  mesh = sharded.make_mesh(4)
  n_loc = sharded.padded_rows(N, 4) // 4
  res["classes_per_device"] = [sorted(set(lab[i * n_loc:(i + 1) * n_loc].tolist()))
                               for i in range(4)]
  key = jax.random.key(3)
  cfg = dj.preset_config("reference", depth=3, width=D)      # d = width: one layer shape
  # Reference: the one-device layer (batch size as deep_rfm picks it).
  ref = drfm.rfm_layer(jnp.asarray(x), jnp.asarray(xt), jnp.asarray(y), jnp.asarray(lab),
                       jax.random.fold_in(key, 1), cfg, batch_size=N)
  cg_kw = dict(cg_tol=TOL, cg_rank=RANK)
  for solver in ("cholesky", "cg"):
    solver_cfg = dj.SolverConfig(method=solver, cg_tol=TOL, cg_rank=RANK)
    out = sharded.sharded_rfm_layer(x, xt, y, lab, jax.random.fold_in(key, 1),
                                    dataclasses.replace(cfg, solver=solver_cfg), mesh=mesh,
                                    batch_size=n_loc)
    res[f"layer_{solver}"] = layer_errors(out, ref)

  # Metrics from reduced statistics: class 0 only on device 0, device 3 holds padding.
  lab2 = np.concatenate([np.zeros(20, np.int32), np.arange(41, dtype=np.int32) % 3 + 1,
                         np.full(30, 2, np.int32)])
  z = np.random.default_rng(1).normal(size=(lab2.size, 7)) + lab2[:, None]
  npad = sharded.padded_rows(lab2.size, 4)
  nl = npad // 4
  res["metrics_classes_per_device"] = [sorted(set(lab2[i * nl:(i + 1) * nl].tolist()))
                                       for i in range(4)]
  res["metrics_padding"] = npad - lab2.size
  for gm in ("sample", "class_means"):
    fn = jax.jit(sharded._shard_map(
        lambda zz, ll, ww, gm=gm: sharded.sharded_collapse(zz, ll, ww, num_classes=4,
                                                           global_mean=gm,
                                                           n_total=lab2.size),
        mesh=mesh, in_specs=(sharded._ROW2, sharded._ROW, sharded._ROW),
        out_specs=sharded._REP, check_vma=False))
    got = fn(sharded.shard_rows(z, mesh, npad), sharded.shard_rows(lab2, mesh, npad),
             sharded.shard_rows(np.ones(lab2.size), mesh, npad))
    want = metrics_lib.collapse_metrics(jnp.asarray(z), jnp.asarray(lab2), num_classes=4,
                                        global_mean=gm)
    res[f"metrics_{gm}"] = max(abs(float(got[k]) - float(want[k])) / abs(float(want[k]))
                               for k in want)

  # Whole runs: one-device Cholesky vs 4 devices with CG.
  a = dj.deep_rfm(x, lab, cfg, key=key, x_test=xt, labels_test=lab_t)
  b = dj.sharded_deep_rfm(x, lab, cfg, key=key, x_test=xt, labels_test=lab_t, devices=4,
                               solver="cg", **cg_kw)
  curves = {}
  for kind in ("nc1", "nc2"):
    for r in drfm.REPRESENTATIONS:
      ca = np.array([rec[kind][r] for rec in a.layers])
      cb = np.array([rec[kind][r] for rec in b.layers])
      curves[f"{kind}_{r}"] = float(np.max(np.abs(cb / ca - 1.0)))
  res["run_curves"] = curves
  res["run_cg_iterations"] = [rec["solve"]["iterations"] for rec in b.layers]
  res["run_acc"] = [a.final["train_acc"], b.final["train_acc"], a.final["test_acc"],
                    b.final["test_acc"]]
  res["run_devices"] = b.layers[0]["devices"]
  with open(path, "w") as f:
    json.dump(res, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
