"""``bin/train_nn``: train an MLP, VGG-11 or ResNet-18 and probe its head every few epochs.

parse → :class:`dnc_jax.nets.train.TrainConfig` → :func:`dnc_jax.nets.train.train_in_dir`
→ files in ``--out``: ``config.json``, ``history.jsonl``, ``metrics.json``, ``metrics.csv``,
``checkpoints/`` and, by :func:`dnc_jax.viz.training.plot_run`, ``nc1_decomposition.png``
(Figs. 2, 7–9) and ``training.png`` (Figs. 10–12).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import ConfigError, DncError
from dnc_jax.io import runs
from dnc_jax.nets import train as train_lib
from dnc_jax.nets.models import MODELS

# The run-directory rules and the plateau note, under the names this command exports.
check_out = train_lib.check_out
plateau_note = train_lib.plateau_note


def build_parser() -> argparse.ArgumentParser:
  from dnc_jax import data as data_lib
  p = argparse.ArgumentParser(
      prog="train_nn",
      description="Train the networks of Section 6 of 'Average gradient outer product as a "
                  "mechanism for deep neural collapse' (bias-free 5-layer ReLU MLP head on an "
                  "MLP / VGG-11 / ResNet-18, MSE on +-1 targets, SGD) and, every "
                  "--measure-every epochs, probe each head layer: AGOP of the tail w.r.t. the "
                  "layer input, NFA correlation of W^T W with AGOP^1/2, NC1 of the layer input, "
                  "of phi(X) V S^T, of the full layer and of the AGOP^1/2 projection (paper "
                  "convention tr Sigma_W / tr Sigma_B). Defaults for --lr, --momentum, "
                  "--epochs and --init follow the paper's Appendix D for the chosen model.",
      formatter_class=HelpFormatter)
  p.add_argument("--model", default=None, choices=MODELS,
                 help="mlp, vgg11 (features[:15] + 4x4 pooling) or resnet18 (fc removed); each "
                      "followed by the MLP head (default: mlp)")
  p.add_argument("--dataset", default=None, choices=data_lib.DATASETS,
                 help="dataset name; 'digits' is bundled and needs no download (default: "
                      "fashion_mnist)")
  p.add_argument("--data-dir", default=None,
                 help="folder with raw files (IDX .gz, CIFAR-10 batches, SVHN .mat) or a "
                      "tensorflow-datasets data_dir")
  p.add_argument("--n", type=int, default=None, help="first n training points (default: all)")
  p.add_argument("--n-test", type=int, default=None, help="first n test points (default: all)")
  p.add_argument("--epochs", type=int, default=None,
                 help="epochs (default: mlp 500, resnet18 300, vgg11 600)")
  p.add_argument("--lr", type=float, default=None,
                 help="SGD learning rate (default: mlp 0.05, resnet18 0.05, vgg11 0.01)")
  p.add_argument("--momentum", type=float, default=None,
                 help="SGD momentum (default: vgg11 0.9, otherwise 0)")
  p.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default 0)")
  p.add_argument("--init", type=float, default=None,
                 help="gain of the head's Xavier-uniform hidden weights (default: 0.3; "
                      "0.2 for resnet18 and on mnist)")
  p.add_argument("--width", type=int, default=None, help="head width (default 512)")
  p.add_argument("--depth", type=int, default=None, help="hidden head layers (default 5)")
  p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default 128)")
  p.add_argument("--measure-every", type=int, default=None,
                 help="probe and checkpoint every k epochs (default 10; 0: only at the end)")
  p.add_argument("--probe-n", type=int, default=None,
                 help="training points used by the probes (default: all; else a fixed random "
                      "subset)")
  p.add_argument("--probe-batch-size", type=int, default=None,
                 help="rows per AGOP Jacobian block (default: from a 512 MiB budget)")
  p.add_argument("--global-mean", default=None, choices=("sample", "class_means"),
                 help="global mean of the collapse metrics (default: sample)")
  p.add_argument("--seed", type=int, default=None, help="seed of the one PRNG key (default 0)")
  p.add_argument("--x64", action="store_true", default=None, help="train in float64")
  p.add_argument("--out", default=None,
                 help="run directory (default: runs/<model>_<dataset>_s<seed>)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace a run already in --out (otherwise refused)")
  p.add_argument("--resume", default=None, metavar="DIR",
                 help="continue the run in DIR from its latest checkpoint, bit for bit; options "
                      "not given are taken from DIR/config.json, options given must match it "
                      "(only --epochs may change)")
  p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def parse(argv=None, *, with_overwrite: bool = False):
  """``argv`` → ``(TrainConfig, out_dir, resume, plots)`` (and ``overwrite`` if asked).

  Raises DncError on bad options.
  """
  args = build_parser().parse_args(argv)
  if with_overwrite:
    return (*parse(argv), bool(args.overwrite))
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(train_lib.TrainConfig)
           if hasattr(args, f.name) and getattr(args, f.name) is not None}
  given["progress"] = not args.no_progress
  if args.resume is None:
    cfg = train_lib.make_config(given)
    out = pathlib.Path(args.out or f"runs/{cfg.model}_{cfg.dataset}_s{cfg.seed}")
    return cfg, out, False, not args.no_plots
  run_dir = pathlib.Path(args.resume)
  if args.out is not None and pathlib.Path(args.out).resolve() != run_dir.resolve():
    raise ConfigError(f"--out {args.out} differs from --resume {args.resume}; a resumed run "
                      "continues in its own directory (drop --out)")
  if args.overwrite:
    raise ConfigError("--overwrite starts afresh and --resume continues; pass one of them")
  return train_lib.make_config(given, resume_dir=run_dir), run_dir, True, not args.no_plots


def run(cfg, out, resume: bool, plots: bool):
  """Trains, then writes the figures; returns the :class:`dnc_jax.nets.train.TrainResult`."""
  if cfg.x64:
    import jax
    jax.config.update("jax_enable_x64", True)
  result = train_lib.train_in_dir(cfg, out, resume=resume)
  if plots:
    from dnc_jax.viz import training as train_plots
    train_plots.plot_run([result.history], out,
                         title=f"{cfg.model} on {cfg.dataset} (seed {cfg.seed})")
  return result


def interrupted_message(out) -> str:
  """What an interrupted run prints: where it stopped and the command that continues it."""
  if out is None:
    return "train_nn: interrupted"
  epoch = train_lib.latest_checkpoint(out)
  if epoch is None:
    return ("train_nn: interrupted before the first checkpoint; nothing to resume. Run the same "
            "command again (with --overwrite if it says the directory holds a run).")
  return (f"train_nn: interrupted; epoch {epoch} is saved. Continue with:\n"
          f"  bin/train_nn --resume {out}")


def _print_result(result, out) -> None:
  """The last epoch's numbers and, on a plateau, how to go on."""
  last = result.history[-1]
  probed = [r for r in result.history if "layers" in r]
  nfa = ", ".join(f"{r['nfa']['sqrt_agop']:.3f}" for r in probed[-1]["layers"]) if probed else "-"
  print(f"wrote {out}: epoch {last['epoch']}, train loss {last['train_loss']:.4g}, "
        f"test acc {last.get('test_acc', float('nan')):.4f}; NFA (Pearson of W^T W with "
        f"AGOP^1/2) per layer: {nfa}")
  note = plateau_note(result.history, getattr(result.model, "num_classes", None))
  if note:
    print(note.replace("DIR", str(out)))


def main(argv=None) -> int:
  state = {"out": None}

  def on_second(signum):
    print(interrupted_message(state["out"]), file=sys.stderr)

  def on_first(signum):
    print("\ntrain_nn: stopping after the current epoch (it is then saved); interrupt "
          "again to stop at once", file=sys.stderr)

  with runs.deferred_interrupts(on_second, on_first=on_first):
    try:
      cfg, out, resume, plots, overwrite = parse(argv, with_overwrite=True)
      check_out(out, resume=resume, overwrite=overwrite)
      state["out"] = out
      result = run(cfg, out, resume, plots)
    except DncError as e:
      print(f"train_nn: error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt as e:
      print(interrupted_message(state["out"]), file=sys.stderr)
      return getattr(e, "exit_code", 130)
  _print_result(result, out)
  return 0
