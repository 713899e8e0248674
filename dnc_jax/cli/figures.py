"""``bin/figures``: the paper's figures, mean ± 1 sd over seeds, from run directories.

Runs that differ only in their seed are grouped; each group gives ``<group>_nc1``,
``<group>_nc2``, ``<group>_gram`` (Deep RFM) or ``<group>_nc1_decomposition``,
``<group>_training`` (networks), in every ``--formats``; with two or more Deep RFM groups
also ``compare_nc1``. ``summary.md`` and ``summary.json`` hold the numbers behind them.

``--export DEST`` writes the compact, committable summary of each run into
``DEST/<run folder name>`` (:mod:`dnc_jax.report.rfm`, :mod:`dnc_jax.report.nets`);
``--docs`` recomputes every generated table of the documents from the summaries in
``--runs-root`` (:mod:`dnc_jax.report.tables`).
"""
from __future__ import annotations

import argparse
import sys

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import ConfigError, DncError


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
  p.add_argument("runs", nargs="*",
                 help="run directories, or folders whose subfolders are run directories")
  p.add_argument("--out", default=None, help="folder for the figures and summary.md/json")
  p.add_argument("--export", default=None, metavar="DEST",
                 help="instead of drawing, write each run's compact summary (config and metrics, "
                      "no checkpoints or arrays) to DEST/<run folder name>, e.g. DEST = docs/runs")
  p.add_argument("--docs", nargs="*", default=None, metavar="DOC",
                 help="instead of drawing, recompute the generated tables (<!-- table:NAME --> "
                      "blocks) of these documents (default: docs/*.md) from --runs-root")
  p.add_argument("--runs-root", default="docs/runs",
                 help="folder of the committed run summaries that --docs reads")
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


def _docs(paths, runs_root) -> int:
  """``--docs``: the generated tables of ``paths`` (default: ``docs/*.md``) from ``runs_root``."""
  import pathlib
  from dnc_jax.report import tables as report
  docs = [pathlib.Path(p) for p in paths] or sorted(pathlib.Path("docs").glob("*.md"))
  missing = [str(p) for p in docs if not p.is_file()]
  if missing:
    raise ConfigError(f"no such document: {', '.join(missing)}")
  changed = report.update_documents(docs, runs_root)
  n = sum(len(report.block_names(p.read_text())) for p in docs)
  print(f"{n} generated tables in {len(docs)} documents; rewritten: "
        f"{', '.join(changed) if changed else 'none (all up to date)'}")
  return 0


def _export(runs_arg, dest) -> int:
  """``--export``: each run's compact summary into ``dest/<run folder name>``."""
  import pathlib
  from dnc_jax.io import runs
  from dnc_jax.report import nets as report_nets
  from dnc_jax.report import rfm as report_rfm
  if not runs_arg:
    raise ConfigError("--export needs the run directories to export")
  # A writable folder; the summaries in it are updated in place.
  runs.check_out(dest, resume=True, flag="--export")
  for r in map(pathlib.Path, runs_arg):
    target = pathlib.Path(dest) / r.name
    if (r / "history.jsonl").exists():
      report_nets.export_run(r, target)
    else:
      report_rfm.export_summary(r, target)
    print(f"{r} -> {target}")
  return 0


def _draw(args) -> int:
  """The figures and summaries of ``args.runs`` in ``args.out``."""
  from dnc_jax.io import runs
  from dnc_jax.viz import figures
  if not args.runs or args.out is None:
    raise ConfigError("give run directories and --out (or --docs / --export)")
  try:
    gram_layers = tuple(int(v) for v in args.gram_layers.split(",") if v.strip())
  except ValueError:
    raise ConfigError(f"--gram-layers must be integers, got {args.gram_layers!r}") from None
  formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
  with runs.deferred_interrupts():
    try:
      res = figures.write_figures(args.runs, args.out, overwrite=args.overwrite, formats=formats,
                                  band_floor=args.band_floor, gram_layers=gram_layers,
                                  compare=not args.no_compare)
    except KeyboardInterrupt as e:
      print(f"figures: interrupted; {args.out} may hold some of the figures", file=sys.stderr)
      return getattr(e, "exit_code", 130)
  for name, s in res["groups"].items():
    n = len(s["seeds"])
    print(f"{name}: {n} seed{'s' if n != 1 else ''}, {s['group']}")
  print(f"wrote {len(res['files'])} figure files, summary.md and summary.json to {args.out}")
  return 0


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.docs is not None:
      return _docs(args.docs, args.runs_root)
    if args.export is not None:
      return _export(args.runs, args.export)
    return _draw(args)
  except DncError as e:
    print(f"figures: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
