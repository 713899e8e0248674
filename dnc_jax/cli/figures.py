"""``bin/figures``: the paper's figures, mean ± 1 sd over seeds, from run directories.

Runs that differ only in their seed are grouped; each group gives ``<group>_nc1``,
``<group>_nc2``, ``<group>_gram`` (Deep RFM) or ``<group>_nc1_decomposition``,
``<group>_training`` (networks), in every ``--formats``; with two or more Deep RFM groups
also ``compare_nc1``. ``summary.md`` and ``summary.json`` hold the numbers behind them.
"""
from __future__ import annotations

import argparse
import sys

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import DncError

# What marks an output folder of this command (refused as --out without --overwrite).
RUN_FILES = ("summary.md", "summary.json")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="figures",
      description="Draw the figures of 'Average gradient outer product as a mechanism for deep "
                  "neural collapse' from run directories of bin/deep_rfm (Figs. 1, 3-6: Gram "
                  "pictures, NC1/NC2 against layer for input, agop, features) and bin/train_nn "
                  "(Figs. 2, 7-12: NC1 decomposition per head layer, variance ratios, NFA, loss). "
                  "Runs differing only in seed are averaged: mean +- 1 sd bands, the lower edge "
                  "truncated at --band-floor x mean on log axes.",
      formatter_class=HelpFormatter)
  p.add_argument("runs", nargs="+",
                 help="run directories, or folders whose subfolders are run directories")
  p.add_argument("--out", required=True, help="folder for the figures and summary.md/json")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the figures and summaries already in --out (otherwise refused)")
  p.add_argument("--formats", default="png,pdf", help="comma-separated: png, pdf, svg")
  p.add_argument("--band-floor", type=float, default=0.01,
                 help="lower band edge >= this fraction of the mean on log axes "
                      "(the paper: 0.01)")
  p.add_argument("--gram-layers", default="1,3,7,13,19",
                 help="layers of the Gram pictures (those recorded in grams.npz are drawn)")
  p.add_argument("--no-compare", action="store_true",
                 help="do not draw compare_nc1 across Deep RFM groups")
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  from dnc_jax import figures
  try:
    gram_layers = tuple(int(v) for v in args.gram_layers.split(",") if v.strip())
  except ValueError:
    print(f"figures: error: --gram-layers must be integers, got {args.gram_layers!r}",
          file=sys.stderr)
    return 2
  formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
  from dnc_jax import runs
  with runs.deferred_interrupts():
    try:
      runs.check_out(args.out, overwrite=args.overwrite, markers=RUN_FILES)
      with runs.removed_if_left_empty(args.out):
        if args.overwrite:
          figures.clear_figures(args.out)
        res = figures.make_figures(args.runs, args.out, formats=formats,
                                   band_floor=args.band_floor, gram_layers=gram_layers,
                                   compare=not args.no_compare)
    except DncError as e:
      print(f"figures: error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt as e:
      print(f"figures: interrupted; {args.out} may hold some of the figures", file=sys.stderr)
      return getattr(e, "exit_code", 130)
  for name, s in res["groups"].items():
    n = len(s["seeds"])
    print(f"{name}: {n} seed{'s' if n != 1 else ''}, {s['group']}")
  print(f"wrote {len(res['files'])} figure files, summary.md and summary.json to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
