"""``bin/deep_rfm``: run Deep RFM on a dataset and write a run directory.

argparse → (:class:`~dnc_jax.rfm.experiment.RunConfig`,
:class:`~dnc_jax.rfm.config.DeepRFMConfig`) → :func:`dnc_jax.rfm.experiment.run`
→ files in ``--out``: ``config.json``, ``metrics.json``, ``metrics.csv``,
``nc1.png``, ``nc2.png``, ``gram.png`` (and ``grams.npz``, ``ms.npz`` with ``--keep-m``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import DncError
from dnc_jax.rfm import experiment
from dnc_jax.rfm.checkpoint import CHECKPOINT
from dnc_jax.rfm.timing import PhaseClock, format_timing

def build_parser(*, suppress: bool = False) -> argparse.ArgumentParser:
  """The parser; with ``suppress`` only the flags actually given appear in the result."""
  p = argparse.ArgumentParser(
      prog="deep_rfm",
      description="Deep Recursive Feature Machines (Algorithm 1 of 'Average gradient outer "
                  "product as a mechanism for deep neural collapse'). Trains L layers of "
                  "kernel ridge regression + AGOP projection + random features and records "
                  "NC1/NC2 of each layer's input X_l, its AGOP projection X_l M_l^1/2 and the "
                  "random features Phi_l(X_l M_l^1/2). Metrics use the paper's conventions "
                  "(NC1 = tr Sigma_W / tr Sigma_B; NC2 = Frobenius distance to the simplex ETF).",
      formatter_class=HelpFormatter)
  for add in (_data_flags, _method_flags, _scale_flags, _run_flags):
    add(p)
  if suppress:
    for action in p._actions:
      if action.dest != "help":
        action.default = argparse.SUPPRESS
  return p


def _data_flags(p: argparse.ArgumentParser) -> None:
  """--dataset, --n, the class subset and proportions, the cache."""
  from dnc_jax import data as data_lib
  g = p.add_argument_group("data")
  g.add_argument("--dataset", default="digits", choices=data_lib.DATASETS,
                 help="dataset name; 'digits' is bundled with scikit-learn and needs no download")
  g.add_argument("--data-dir", default=None,
                 help="folder with raw files (MNIST-format IDX, CIFAR-10 batches, SVHN .mat) or a "
                      "tensorflow-datasets data_dir; Fashion-MNIST defaults to the Debian "
                      "package's /usr/share/datasets/fashion-mnist when present")
  g.add_argument("--n", type=int, default=None,
                 help="first n training points (default: all 1500 for digits, at most 2000 "
                      "otherwise)")
  g.add_argument("--n-test", type=int, default=None,
                 help="first n test points (default: all 297 for digits, at most 1000 "
                      "otherwise)")
  g.add_argument("--classes", default=None,
                 help="comma-separated subset of classes, relabelled 0..k-1 (e.g. 0,1,7)")
  g.add_argument("--balanced", action="store_true",
                 help="take the first n/K points of each class instead of the first n")
  g.add_argument("--class-proportions", default=None,
                 help="imbalanced training subset: 'svhn' (SVHN's training proportions, "
                      "18.9%% ones ... 6.4%% nines, the paper's imbalanced case, Fig. 5B) or one "
                      "weight per class 'w0,w1,...'; the first n points in these proportions, "
                      "per class (dnc_jax.data.class_counts_for); the test split is unchanged")
  g.add_argument("--no-cache", action="store_true", help="do not read or write the dataset cache")


def _method_flags(p: argparse.ArgumentParser) -> None:
  """The Deep RFM options (unset ones take the preset's value)."""
  r = p.add_argument_group("Deep RFM (flags left unset take the preset's value)")
  r.add_argument("--preset", default="reference", choices=("reference", "paper"),
                 help="'reference': the authors' code (ridge 1e-3, uniform ReLU weights U(+-1/sqrt d), "
                      "width 1024; cos width = input dim); 'paper': ridgeless, N(0, 2/D) weights, "
                      "width 1024 (ReLU) / 4096 (cos)")
  r.add_argument("--depth", type=int, default=19, help="number of layers L")
  r.add_argument("--kernel", default=None, choices=("laplace", "gaussian"),
                 help="KRR kernel: Laplace exp(-||x-z||/L) or Gaussian exp(-||x-z||^2/(2L^2)) "
                      "[preset: laplace]")
  r.add_argument("--bandwidth", type=float, default=None, help="kernel bandwidth L > 0 [preset: 2.0]")
  r.add_argument("--ridge", type=float, default=None,
                 help="KRR ridge mu >= 0; 0 = ridgeless [reference: 1e-3, paper: 0]")
  r.add_argument("--features", default="relu", choices=("relu", "cos"),
                 help="random feature map: ReLU(z W^T) or random Fourier features of the "
                      "l1-Laplace kernel sqrt(2/D) cos(z W^T + b)")
  r.add_argument("--width", type=int, default=None, help="feature width D [preset]")
  r.add_argument("--weight-init", default=None, choices=("normal", "uniform"),
                 help="ReLU weights: N(0, 2/D) or U(+-1/sqrt d) [reference: uniform, paper: normal]")
  r.add_argument("--sigma", type=float, default=None,
                 help="gamma of the cos features: frequencies ~ Cauchy(scale gamma), the map "
                      "approximates the l1-Laplace kernel exp(-gamma ||x-z||_1). The paper: "
                      "0.05 (MNIST; its Appendix D gives 0.05 for all cos runs); the authors' "
                      "code comments 0.1 for CIFAR-10 and SVHN, 0.05 for MNIST [0.05]")
  r.add_argument("--global-mean", default=None, choices=("sample", "class_means"),
                 help="global mean in the metrics: sample mean, or mean of class means (the "
                      "authors' code); identical for balanced classes [sample]")
  r.add_argument("--agop-batch-size", type=int, default=None,
                 help="rows per AGOP block (default: planned from --memory-gb; at most 256 on a "
                      "CPU, 4096 on an accelerator)")
  r.add_argument("--agop", default=None, choices=("auto", "closed_form", "rules"),
                 help="AGOP of a layer: the closed-form Jacobian reusing the solve's N x N "
                      "distances (one device, Cholesky), vmap(jacrev) through the predictor's "
                      "derivative rules, or auto: the closed form on one device when its extra "
                      "N x N floats fit --memory-gb, else the rules [auto]")
  r.add_argument("--keep-m", action="store_true", help="also save every layer's M to ms.npz")


def _scale_flags(p: argparse.ArgumentParser) -> None:
  """Devices, the solver, matmul precision and the memory budget."""
  s = p.add_argument_group("scale (docs/scaling.md)")
  s.add_argument("--devices", type=int, default=0,
                 help="devices to shard the training rows over (0: all visible; on CPU simulate N "
                      "with XLA_FLAGS=--xla_force_host_platform_device_count=N)")
  s.add_argument("--solver", default="cholesky", choices=("cholesky", "cg", "auto"),
                 help="KRR solver: Cholesky (N x N on one device), matrix-free Nystrom-"
                      "preconditioned conjugate gradients, or auto (Cholesky when 3N^2 floats fit "
                      "in half a device's memory)")
  s.add_argument("--cg-tol", type=float, default=None,
                 help="CG relative residual [1e-4 float32, 1e-8 float64]")
  s.add_argument("--cg-max-iter", type=int, default=2000, help="CG iteration cap")
  s.add_argument("--cg-rank", type=int, default=1000,
                 help="Nystrom preconditioner landmarks (at most N/4)")
  s.add_argument("--matmul-precision", default="highest", choices=("highest", "tf32"),
                 help="precision of the large matmuls (distances, AGOP, features): full float32, "
                      "or TF32 operands with float32 accumulation (GPU tensor cores; emulated on "
                      "a CPU). TF32 keeps the NC curves within the seed spread on digits at every "
                      "layer; bfloat16 does not and is not offered (docs/performance.md)")
  s.add_argument("--memory-gb", type=float, default=None,
                 help="memory budget of a layer in GiB; sets the AGOP block size and refuses a "
                      "problem whose N x N kernel matrix does not fit (default: 80%% of the "
                      "device's free memory; docs/performance.md)")


def _run_flags(p: argparse.ArgumentParser) -> None:
  """Seed, precision, --out and the other flags about the run."""
  o = p.add_argument_group("run")
  o.add_argument("--seed", type=int, default=0, help="PRNG seed of the random feature maps")
  o.add_argument("--precision", default="auto", choices=("auto", "float32", "float64"),
                 help="arithmetic: 'auto' is float32 for runs with a ridge (its NC1/NC2 stay "
                      "within float64's seed-to-seed spread at every layer of depth 19) and "
                      "float64 for ridgeless runs (--preset paper), whose kernel systems "
                      "float32 cannot factorise past layer ~18; float64 for bit-level "
                      "comparisons (docs/numerics.md)")
  o.add_argument("--x64", action="store_true", help="same as --precision float64")
  o.add_argument("--out", default="runs/deep_rfm", help="run directory to write")
  o.add_argument("--overwrite", action="store_true",
                 help="replace a run already in --out (otherwise refused)")
  o.add_argument("--resume", action="store_true",
                 help="continue the interrupted run in --out from its last finished layer, with "
                      "its saved options (the result equals an uninterrupted run's)")
  o.add_argument("--no-progress", action="store_true", help="no progress bar")
  o.add_argument("--compile-cache", default=None,
                 help="folder of JAX's persistent compilation cache, so a second run skips "
                      "compilation (default: $DNC_JAX_COMPILE_CACHE or ~/.cache/dnc_jax/xla)")
  o.add_argument("--no-compile-cache", action="store_true",
                 help="do not read or write the persistent compilation cache")


_RUN_CONTROL = experiment.RUN_CONTROL


def _use_x64(args, opts: dict) -> bool:
  """Whether the run is float64: asked for, or ``auto`` for a ridgeless run (``opts``: its options)."""
  if args.x64 or args.precision == "float64":
    return True
  if args.precision == "float32":
    return False
  from dnc_jax.rfm import config
  return config.auto_precision(_rfm_config(opts)) == "float64"


def _resume_options(args, argv) -> argparse.Namespace:
  """The saved options of the run in ``args.out``, with the control flags of this call."""
  ckpt = pathlib.Path(args.out) / CHECKPOINT / "options.json"
  if not ckpt.exists():
    done = (pathlib.Path(args.out) / "metrics.json").exists()
    raise DncError(f"nothing to resume in {args.out}: "
                   + ("the run there has already finished" if done else
                      "no checkpoint (no layer of a run there has finished); start it without --resume"))
  saved = json.loads(ckpt.read_text())
  saved.setdefault("precision", "float64" if saved.get("x64") else "float32")
  given = vars(build_parser(suppress=True).parse_args(argv))
  if given.pop("x64", False):
    given["precision"] = "float64"
  if given.get("precision") == "auto":
    given["precision"] = ("float64" if _use_x64(argparse.Namespace(x64=False, precision="auto"),
                                                 saved) else "float32")
  # Compare what the options resolve to: --bandwidth 2.0 is the preset's 2.0.
  resolved = dataclasses.asdict(_rfm_config(saved))
  clash = {}
  for k, v in given.items():
    if k in _RUN_CONTROL or saved.get(k) == v:
      continue
    if k in resolved and k != "preset":
      try:
        if dataclasses.asdict(_rfm_config({**saved, k: v}))[k] == resolved[k]:
          continue
      except DncError:
        pass
    clash[k] = v
  if clash:
    name, value = next(iter(clash.items()))
    raise DncError(f"--resume continues the run in {args.out} with its saved options, but "
                   f"--{name.replace('_', '-')} {value} differs from the saved "
                   f"{saved.get(name)!r}; drop the flag, or start a new run in another --out")
  merged = dict(saved)
  merged.setdefault("precision", "float64" if merged.get("x64") else "float32")
  merged.setdefault("matmul_precision", "highest")   # checkpoints older than the flag
  merged.setdefault("class_proportions", None)
  merged.update({k: getattr(args, k) for k in _RUN_CONTROL})
  return argparse.Namespace(**merged)


def _rfm_config(opts: dict):
  """The :class:`DeepRFMConfig` that parsed options ``opts`` (a dict) resolve to."""
  from dnc_jax.rfm import config
  solver = config.SolverConfig(method=opts.get("solver", "cholesky"), cg_tol=opts.get("cg_tol"),
                               cg_max_iter=opts.get("cg_max_iter", 2000),
                               cg_rank=opts.get("cg_rank", 1000))
  return config.preset_config(
      opts["preset"], depth=opts["depth"], kernel=opts.get("kernel"),
      bandwidth=opts.get("bandwidth"), ridge=opts.get("ridge"), features=opts["features"],
      width=opts.get("width"), weight_init=opts.get("weight_init"), sigma=opts.get("sigma"),
      global_mean=opts.get("global_mean"), agop_batch_size=opts.get("agop_batch_size"),
      memory_gb=opts.get("memory_gb"), matmul_precision=opts.get("matmul_precision", "highest"),
      agop=opts.get("agop"),
      keep_m=opts.get("keep_m") or None, solver=solver)


def parse(argv=None):
  """Parses ``argv`` into ``(RunConfig, DeepRFMConfig)``; raises DncError on bad options."""
  args = build_parser().parse_args(argv)
  if args.resume:
    args = _resume_options(args, argv)
  # Store the resolved precision, so a resumed run keeps it on any machine.
  args.precision = "float64" if _use_x64(args, vars(args)) else "float32"
  if args.matmul_precision != "highest" and args.precision == "float64":
    raise DncError(f"--matmul-precision {args.matmul_precision} applies to float32 runs, but this "
                   "run is float64 (--precision float64, or auto on a ridgeless run); add --precision float32")
  run_cfg = experiment.RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, n=args.n, n_test=args.n_test,
      classes=args.classes, balanced=args.balanced,
      class_proportions=getattr(args, "class_proportions", None),
      cache=not args.no_cache, seed=args.seed,
      x64=args.precision == "float64", precision=args.precision, out=args.out, overwrite=args.overwrite, progress=not args.no_progress,
      resume=args.resume, devices=args.devices,
      compile_cache=None if args.no_compile_cache else compile_cache_dir(args.compile_cache),
      options=vars(args))
  if run_cfg.devices < 0:
    raise DncError(f"--devices must be ≥ 0 (0 = all visible devices), got {run_cfg.devices}")
  rfm_cfg = _rfm_config(vars(args))
  return run_cfg, rfm_cfg


def compile_cache_dir(flag: str | None) -> str:
  """The persistent compilation cache folder: the flag, $DNC_JAX_COMPILE_CACHE, or ~/.cache."""
  import os
  return str(pathlib.Path(flag or os.environ.get("DNC_JAX_COMPILE_CACHE")
                          or pathlib.Path.home() / ".cache" / "dnc_jax" / "xla").expanduser())


def interrupted_message(out) -> str:
  """What an interrupted run prints: where it stopped and the command that continues it."""
  ckpt = pathlib.Path(out) / CHECKPOINT
  if not (ckpt / "options.json").exists():
    return "deep_rfm: interrupted before the run started; nothing was saved. Run the same command again."
  done = ""
  if (ckpt / "state.json").exists():
    done = f" after layer {json.loads((ckpt / 'state.json').read_text())['layer']}"
  return (f"deep_rfm: interrupted{done}; every finished layer is saved. Continue with:\n"
          f"  bin/deep_rfm --out {out} --resume")


def main(argv=None) -> int:
  from dnc_jax.io import runs
  clock = PhaseClock(from_process_start=True)
  state = {"out": None}

  def on_second(signum):
    out = state["out"]
    print(interrupted_message(out) if out else "deep_rfm: interrupted", file=sys.stderr)

  def on_first(signum):
    print("\ndeep_rfm: stopping after the current layer (it is then saved); interrupt "
          "again to stop at once", file=sys.stderr)

  with runs.deferred_interrupts(on_second, on_first=on_first):
    try:
      run_cfg, rfm_cfg = parse(argv)
      experiment.check_out(run_cfg)
      state["out"] = run_cfg.out
      with runs.removed_if_left_empty(run_cfg.out):
        metrics = experiment.run(run_cfg, rfm_cfg, clock)
    except DncError as e:
      print(f"deep_rfm: error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt as e:
      out = state["out"]
      print(interrupted_message(out) if out else "deep_rfm: interrupted", file=sys.stderr)
      return getattr(e, "exit_code", 130)
    finally:
      clock.close()   # also when the options were refused before the run
  last = metrics["layers"][-1]
  print(f"wrote {run_cfg.out}: {len(metrics['layers'])} layers in {metrics['seconds_total']:.1f} s; "
        f"layer {last['layer']} NC1 (paper convention, tr Sigma_W/tr Sigma_B): "
        f"input {last['nc1']['input']:.3g}, agop {last['nc1']['agop']:.3g}, "
        f"features {last['nc1']['features']:.3g}; final test accuracy "
        f"{metrics['final']['test_acc']}")
  print(format_timing(metrics["timing"]))
  return 0

