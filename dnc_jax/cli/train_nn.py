"""``bin/train_nn``: train an MLP, VGG-11 or ResNet-18 and probe its head every few epochs.

parse → :class:`dnc_jax.train.TrainConfig` → :func:`dnc_jax.train.train` → files in
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

from dnc_jax.errors import ConfigError, DncError

MODELS = ("mlp", "vgg11", "resnet18")
# Options whose default depends on the model (Appendix D); None = "not given".
PAPER_OPTIONS = ("lr", "momentum", "epochs", "init")


def build_parser() -> argparse.ArgumentParser:
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
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--model", default=None,
                 help="(default mlp) mlp, vgg11 (features[:15] + 4x4 pooling) or resnet18 (fc removed); "
                      "each followed by the MLP head")
  p.add_argument("--dataset", default=None,
                 help="(default fashion_mnist) digits, fashion_mnist, mnist, cifar10, svhn_cropped or synthetic")
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
  p.add_argument("--resume", default=None, metavar="DIR",
                 help="continue the run in DIR from its latest checkpoint, bit for bit; options "
                      "not given are taken from DIR/config.json, options given must match it "
                      "(only --epochs may change)")
  p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def parse(argv=None):
  """``argv`` → ``(TrainConfig, out_dir, resume, plots)``; raises DncError on bad options."""
  from dnc_jax import train as train_lib
  args = build_parser().parse_args(argv)
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(train_lib.TrainConfig)
           if hasattr(args, f.name) and getattr(args, f.name) is not None}
  given["progress"] = not args.no_progress
  if args.resume is not None:
    run_dir = pathlib.Path(args.resume)
    if args.out is not None and pathlib.Path(args.out).resolve() != run_dir.resolve():
      raise ConfigError(f"--out {args.out} differs from --resume {args.resume}; a resumed run "
                        "continues in its own directory (drop --out)")
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
  """Trains, then writes the figures; returns the :class:`dnc_jax.train.TrainResult`."""
  import jax
  if cfg.x64:
    jax.config.update("jax_enable_x64", True)
  from dnc_jax import train as train_lib
  result = train_lib.train(cfg, out_dir=out, resume=resume)
  if plots:
    from dnc_jax import train_plots
    title = f"{cfg.model} on {cfg.dataset} (seed {cfg.seed})"
    train_plots.plot_nc1_decomposition([result.history], pathlib.Path(out) / "nc1_decomposition",
                                       title=title)
    train_plots.plot_training([result.history], pathlib.Path(out) / "training", title=title)
  return result


def _sigterm(signum, frame):
  raise KeyboardInterrupt


def main(argv=None) -> int:
  import signal
  out = None
  previous = signal.signal(signal.SIGTERM, _sigterm)
  try:
    cfg, out, resume, plots = parse(argv)
    result = run(cfg, out, resume, plots)
  except DncError as e:
    print(f"train_nn: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    where = out if out is not None else "OUT"
    print(f"train_nn: interrupted; the last measurement's checkpoint is kept. Continue with:\n"
          f"  bin/train_nn --resume {where}", file=sys.stderr)
    return 130
  finally:
    signal.signal(signal.SIGTERM, previous)
  last = result.history[-1]
  probed = [r for r in result.history if "layers" in r]
  nfa = ", ".join(f"{r['nfa']['sqrt_agop']:.3f}" for r in probed[-1]["layers"]) if probed else "-"
  print(f"wrote {out}: epoch {last['epoch']}, train loss {last['train_loss']:.4g}, "
        f"test acc {last.get('test_acc', float('nan')):.4f}; NFA (Pearson of W^T W with "
        f"AGOP^1/2) per layer: {nfa}")
  return 0
