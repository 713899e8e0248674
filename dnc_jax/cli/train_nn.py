"""``bin/train_nn``: train an MLP, VGG-11 or ResNet-18 and probe its head every few epochs.

parse → :class:`dnc_jax.nets.train.TrainConfig` → :func:`dnc_jax.nets.train.train` → files in
``--out``: ``config.json``, ``history.jsonl``, ``metrics.json``, ``metrics.csv``,
``checkpoints/``, ``nc1_decomposition.png`` (Figs. 2, 7–9), ``training.png``
(Figs. 10–12).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import ConfigError, DncError

MODELS = ("mlp", "vgg11", "resnet18")
# Options whose default depends on the model (Appendix D); None = "not given".
PAPER_OPTIONS = ("lr", "momentum", "epochs", "init")
# A directory holds a run once it has a checkpoint or metrics.json (without either there
# is nothing to continue, so a new run may replace what a killed start left there).
RUN_FILES = ("metrics.json",)
OUTPUT_FILES = ("config.json", "history.jsonl", "metrics.json", "metrics.csv",
                "nc1_decomposition.png", "training.png")
# Relative fall of the training loss below which a run is still on its initial plateau.
PLATEAU_FALL = 0.05


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
  from dnc_jax.nets import train as train_lib
  args = build_parser().parse_args(argv)
  if with_overwrite:
    return (*parse(argv), bool(args.overwrite))
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(train_lib.TrainConfig)
           if hasattr(args, f.name) and getattr(args, f.name) is not None}
  given["progress"] = not args.no_progress
  if args.resume is not None:
    run_dir = pathlib.Path(args.resume)
    if args.out is not None and pathlib.Path(args.out).resolve() != run_dir.resolve():
      raise ConfigError(f"--out {args.out} differs from --resume {args.resume}; a resumed run "
                        "continues in its own directory (drop --out)")
    if args.overwrite:
      raise ConfigError("--overwrite starts afresh and --resume continues; pass one of them")
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
      raise ConfigError(f"cannot resume: {cfg_path} not found; pass the --out directory of an "
                        "earlier train_nn run")
    stored = json.loads(cfg_path.read_text())["config"]
    merged = {**stored, **given}
    cfg = train_lib.TrainConfig(**{k: merged[k] for k in stored
                                   if k in {f.name for f in dataclasses.fields(train_lib.TrainConfig)}})
    return cfg, run_dir, True, not args.no_plots
  model = given.get("model", "mlp")
  if model not in MODELS:
    raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
  dataset = given.get("dataset", "fashion_mnist")
  cfg = train_lib.TrainConfig(**{**train_lib.paper_defaults(model, dataset), **given})
  out = pathlib.Path(args.out or f"runs/{cfg.model}_{cfg.dataset}_s{cfg.seed}")
  return cfg, out, False, not args.no_plots


def run(cfg, out, resume: bool, plots: bool):
  """Trains, then writes the figures; returns the :class:`dnc_jax.nets.train.TrainResult`."""
  import jax
  if cfg.x64:
    jax.config.update("jax_enable_x64", True)
  from dnc_jax.nets import train as train_lib
  result = train_lib.train(cfg, out_dir=out, resume=resume)
  if plots:
    from dnc_jax.viz import training as train_plots
    title = f"{cfg.model} on {cfg.dataset} (seed {cfg.seed})"
    train_plots.plot_nc1_decomposition([result.history], pathlib.Path(out) / "nc1_decomposition",
                                       title=title)
    train_plots.plot_training([result.history], pathlib.Path(out) / "training", title=title)
  return result


def latest_checkpoint(out) -> int | None:
  """The epoch of the newest checkpoint in ``out`` (None when there is none)."""
  from dnc_jax.nets import train as train_lib
  folder = pathlib.Path(out) / train_lib.CHECKPOINT_DIR
  steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit() and p.is_dir()] \
      if folder.is_dir() else []
  return max(steps, default=None)


def check_out(out, *, resume: bool, overwrite: bool) -> None:
  """The ``--out`` rules (:func:`dnc_jax.io.runs.check_out`); a run to resume needs a checkpoint."""
  from dnc_jax.io import runs
  runs.check_out(out, overwrite=overwrite, resume=resume, markers=RUN_FILES,
                 resume_hint=f"--resume {out}")
  if not (resume or overwrite) and latest_checkpoint(out) is not None:
    raise ConfigError(f"{out} holds an interrupted run; continue it with --resume {out}, or "
                      "pass --overwrite to start afresh")
  if resume and latest_checkpoint(out) is None:
    raise ConfigError(f"nothing to resume in {out}: no checkpoint was written (the run stopped "
                      "before epoch 0 was measured); start it afresh with --overwrite")


def clear_run(out) -> None:
  """Removes the files of an earlier run in ``out`` (only those) before a new run."""
  import shutil

  from dnc_jax.io import runs
  from dnc_jax.nets import train as train_lib
  runs.clear_run_files(pathlib.Path(out), OUTPUT_FILES)
  shutil.rmtree(pathlib.Path(out) / train_lib.CHECKPOINT_DIR, ignore_errors=True)


def plateau_note(history: list, num_classes: int | None = None) -> str | None:
  """A note when training has not left its early plateaus (else None).

  With a small initialisation (the paper's gains 0.2-0.3) the outputs start near
  0 and the MSE near 1, where it stays for many epochs; it then drops to the
  class-prior level (``4(K-1)/K²``, 0.36 for 10 balanced classes) with
  accuracy still at chance. A short run ends on one of these plateaus.
  """
  losses = [r.get("train_loss") for r in history if r.get("train_loss") is not None]
  if len(losses) < 2 or not losses[0] > 0:
    return None
  last = history[-1]
  acc = last.get("train_acc")
  if losses[-1] < (1 - PLATEAU_FALL) * losses[0]:
    if not (num_classes and acc is not None and acc <= 2.0 / num_classes):
      return None
    where = (f"training accuracy {acc:.3f} is still near chance (1/{num_classes}) at epoch "
             f"{last['epoch']}, train loss {losses[-1]:.4f}")
  else:
    where = (f"the training loss has not left its initial plateau ({losses[0]:.4f} at epoch "
             f"{history[0]['epoch']}, {losses[-1]:.4f} at epoch {last['epoch']})")
  return (f"note: {where}: with the paper's small init the loss stays near its starting value, "
          "then near the class-prior level, for many epochs (the paper trains 500); continue "
          "with --resume DIR --epochs N, or try a larger --init (docs/networks.md)")


def interrupted_message(out) -> str:
  """What an interrupted run prints: where it stopped and the command that continues it."""
  if out is None:
    return "train_nn: interrupted"
  epoch = latest_checkpoint(out)
  if epoch is None:
    return ("train_nn: interrupted before the first checkpoint; nothing to resume. Run the same "
            "command again (with --overwrite if it says the directory holds a run).")
  return (f"train_nn: interrupted; epoch {epoch} is saved. Continue with:\n"
          f"  bin/train_nn --resume {out}")


def main(argv=None) -> int:
  from dnc_jax.io import runs
  from dnc_jax.nets import train as train_lib
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
      with runs.removed_if_left_empty(out):
        if not resume:   # what a replaced or killed earlier start left there
          clear_run(out)
        try:
          result = run(cfg, out, resume, plots)
        except DncError as e:
          # A new run that failed before its first checkpoint leaves nothing behind.
          if (not resume and not isinstance(e, train_lib.DivergenceError)
              and latest_checkpoint(out) is None):
            clear_run(out)
          raise
    except DncError as e:
      print(f"train_nn: error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt as e:
      print(interrupted_message(state["out"]), file=sys.stderr)
      return getattr(e, "exit_code", 130)
  last = result.history[-1]
  probed = [r for r in result.history if "layers" in r]
  nfa = ", ".join(f"{r['nfa']['sqrt_agop']:.3f}" for r in probed[-1]["layers"]) if probed else "-"
  print(f"wrote {out}: epoch {last['epoch']}, train loss {last['train_loss']:.4g}, "
        f"test acc {last.get('test_acc', float('nan')):.4f}; NFA (Pearson of W^T W with "
        f"AGOP^1/2) per layer: {nfa}")
  note = plateau_note(result.history, getattr(result.model, "num_classes", None))
  if note:
    print(note.replace("DIR", str(out)))
  return 0
