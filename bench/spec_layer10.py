r"""SPEC §3's layer-10 reference: the authors' NC1 of Φ at layer 10 on Fashion-MNIST.

Runs Deep RFM (``reference`` preset, ReLU, float32) on the first 2,000 Fashion-MNIST
training points for 10 layers with seeds 0, 1, 2 (about 2–4 minutes a seed on two
CPU cores, seconds on a GPU; finished runs are reused, interrupted ones resumed), and
checks that the mean NC1 of ``features`` at layer 10 in the authors' convention
(NC1 / K) is within 15 % of their 0.00062. Exit status 1 if it is not.

    python bench/spec_layer10.py [--out runs/spec_layer10] [--data-dir DIR]

The committed summaries ``docs/runs/rfm_fm2000_reference_s*`` are such runs;
``tests/test_rfm_report.py`` holds them to the same tolerance.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/spec_layer10")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--seeds", default="0,1,2")
  args = p.parse_args(argv)
  from dnc_jax.report import rfm as report_rfm
  from dnc_jax.cli import deep_rfm as cli
  out = pathlib.Path(args.out)
  summaries = out / "summaries"
  for s in (int(v) for v in args.seeds.split(",")):
    run = out / f"rfm_fm2000_reference_s{s}"
    if not (run / "metrics.json").exists():
      flags = ["--dataset", "fashion_mnist", "--n", "2000", "--n-test", "1000", "--depth", "10",
               "--precision", "float32", "--seed", str(s), "--no-progress"]
      if args.data_dir:
        flags += ["--data-dir", args.data_dir]
      resume = (run / "checkpoint" / "state.json").exists()
      argv_run = ["--out", str(run), "--resume", "--no-progress"] if resume else \
          flags + ["--out", str(run), "--overwrite"]
      if cli.main(argv_run) != 0:
        return 2
    report_rfm.export_summary(run, summaries / run.name)
  ref = report_rfm.layer10_reference(summaries)
  ok = abs(ref["relative"]) <= report_rfm.SPEC_LAYER10_TOL
  print(f"NC1 of features at layer 10, authors' convention: {ref['mean']:.3g} ± {ref['sd']:.2g} "
        f"({ref['seeds']} seeds) vs {report_rfm.SPEC_LAYER10_AUTHORS}: {ref['relative']:+.1%} -> "
        f"{'within' if ok else 'OUTSIDE'} ±{report_rfm.SPEC_LAYER10_TOL:.0%}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
