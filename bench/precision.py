"""What TF32/bf16 matmuls change in Deep RFM's NC curves, against the seed spread.

Runs Deep RFM (float32) with ``matmul_precision="highest"`` for several seeds, and
with ``"tf32"`` and ``"bf16"`` for the first seed, and prints NC1/NC2 of the AGOP
projection per layer: the highest-precision seeds' range, the cheaper modes' values,
and whether they fall inside the range widened by its own width (``tol``: the
curves of two seeds differ by about one range width, so a mode "stays within the
seed spread" when it is no further from the seed range than seeds are from each
other; layer 1, which no seed changes, gets a 1% floor). On a CPU the TF32
rounding is emulated (``dnc_jax.rfm.precision``).

  python bench/precision.py --dataset digits --depth 19 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from dnc_jax import data as data_lib

from dnc_jax.rfm import driver as drfm


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="digits")
  p.add_argument("--n", type=int, default=None)
  p.add_argument("--depth", type=int, default=19)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  ds = data_lib.load_dataset(args.dataset, n=args.n, n_test=0)
  x = ds.x_train.astype(np.float32)

  def run(seed, mode):
    cfg = drfm.preset_config("reference", depth=args.depth, matmul_precision=mode)
    res = drfm.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(seed), num_classes=ds.num_classes)
    return {m: np.array([r[m]["agop"] for r in res.layers]) for m in ("nc1", "nc2")}

  base = [run(s, "highest") for s in range(args.seeds)]
  modes = {mode: run(0, mode) for mode in ("tf32", "bf16")}
  print(f"{args.dataset}, N={x.shape[0]}, depth {args.depth}, float32; NC of X_l M_l^1/2 "
        "(paper convention); highest: min-max over seeds; ok = within the seed range "
        "widened by its width (at least 1%) on a log scale")
  out = {"dataset": args.dataset, "n": int(x.shape[0]), "layers": []}
  verdict = {mode: True for mode in modes}
  for metric in ("nc1", "nc2"):
    print(f"\n{metric.upper()}  {'layer':>5} {'highest min':>12} {'highest max':>12}"
          + "".join(f" {m:>12} {'ok':>3}" for m in modes))
    for l in range(args.depth):
      vals = np.array([b[metric][l] for b in base])
      lo, hi = np.log(vals.min()), np.log(vals.max())
      # Layer 1 does not depend on the seed (its features come after it): a 1% floor.
      width = max(hi - lo, np.log(1.01))
      row = f"{'':5}{l + 1:>6} {vals.min():>12.4g} {vals.max():>12.4g}"
      for mode, res in modes.items():
        v = np.log(res[metric][l])
        ok = lo - width <= v <= hi + width
        verdict[mode] &= bool(ok)
        row += f" {res[metric][l]:>12.4g} {'yes' if ok else 'NO':>3}"
      print(row)
      out["layers"].append({"metric": metric, "layer": l + 1, "highest": vals.tolist(),
                            **{m: float(r[metric][l]) for m, r in modes.items()}})
  for mode, ok in verdict.items():
    print(f"{mode}: {'within' if ok else 'OUTSIDE'} the seed spread at every layer")
  out["within_seed_spread"] = verdict
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
