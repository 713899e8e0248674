"""``bin/deep_rfm``: run Deep RFM on a dataset and write a run directory.

parse → :class:`RunConfig` → :func:`run` → files in ``--out``:
``config.json``, ``metrics.json``, ``metrics.csv``, ``nc1.png``, ``nc2.png``,
``gram.png`` (and ``grams.npz``, ``ms.npz`` with ``--keep-m``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import platform
import sys
import threading
import time

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import DataError, DncError

# Defaults of --n / --n-test: None is the whole split; a number is an upper bound
# (a smaller split is taken whole; an explicit --n larger than the split is an error).
DEFAULT_N = {"digits": None}
DEFAULT_N_TEST = {"digits": None}
DEFAULT_N_OTHER, DEFAULT_N_TEST_OTHER = 2000, 1000


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a Deep RFM run needs besides the Deep RFM options."""
  dataset: str = "digits"
  data_dir: str | None = None
  n: int | None = None
  n_test: int | None = None
  classes: str | None = None
  balanced: bool = False
  class_proportions: str | None = None
  cache: bool = True
  seed: int = 0
  x64: bool = False           # resolved from --precision before the run
  precision: str = "auto"
  out: str = "runs/deep_rfm"
  overwrite: bool = False
  progress: bool = True
  resume: bool = False
  devices: int = 0
  solver: str = "cholesky"
  cg_tol: float | None = None
  cg_max_iter: int = 2000
  cg_rank: int = 1000
  compile_cache: str | None = None    # None: no persistent compilation cache
  options: dict = dataclasses.field(default_factory=dict)   # the parsed flags, for --resume


def build_parser(*, suppress: bool = False) -> argparse.ArgumentParser:
  """The parser; with ``suppress`` only the flags actually given appear in the result."""
  from dnc_jax import data as data_lib
  p = argparse.ArgumentParser(
      prog="deep_rfm",
      description="Deep Recursive Feature Machines (Algorithm 1 of 'Average gradient outer "
                  "product as a mechanism for deep neural collapse'). Trains L layers of "
                  "kernel ridge regression + AGOP projection + random features and records "
                  "NC1/NC2 of each layer's input X_l, its AGOP projection X_l M_l^1/2 and the "
                  "random features Phi_l(X_l M_l^1/2). Metrics use the paper's conventions "
                  "(NC1 = tr Sigma_W / tr Sigma_B; NC2 = Frobenius distance to the simplex ETF).",
      formatter_class=HelpFormatter)
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
  r.add_argument("--keep-m", action="store_true", help="also save every layer's M to ms.npz")
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
  o = p.add_argument_group("run")
  o.add_argument("--seed", type=int, default=0, help="PRNG seed of the random feature maps")
  o.add_argument("--precision", default="auto", choices=("auto", "float32", "float64"),
                 help="arithmetic: 'auto' is float64 on a CPU (about 2x the float32 time, and "
                      "accurate at every depth) and float32 on a GPU/TPU; float32 drifts from "
                      "float64 by 10-25%% past layer ~15 (docs/numerics.md)")
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
  if suppress:
    for action in p._actions:
      if action.dest != "help":
        action.default = argparse.SUPPRESS
  return p


# Flags that may differ between a run and its resumption (the memory budget only
# sets the AGOP block size, which changes the result at round-off level at most).
_RUN_CONTROL = ("out", "resume", "overwrite", "no_progress", "compile_cache", "no_compile_cache",
                "memory_gb")
CHECKPOINT = "checkpoint"


def _use_x64(args) -> bool:
  if args.x64 or args.precision == "float64":
    return True
  if args.precision == "float32":
    return False
  import jax
  return jax.default_backend() == "cpu"


def _resume_options(args, argv) -> argparse.Namespace:
  """The saved options of the run in ``args.out``, with the control flags of this call."""
  import json
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
    given["precision"] = ("float64" if _use_x64(argparse.Namespace(x64=False, precision="auto"))
                          else "float32")
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
  from dnc_jax.rfm import driver as drfm
  return drfm.preset_config(
      opts["preset"], depth=opts["depth"], kernel=opts.get("kernel"),
      bandwidth=opts.get("bandwidth"), ridge=opts.get("ridge"), features=opts["features"],
      width=opts.get("width"), weight_init=opts.get("weight_init"), sigma=opts.get("sigma"),
      global_mean=opts.get("global_mean"), agop_batch_size=opts.get("agop_batch_size"),
      memory_gb=opts.get("memory_gb"), matmul_precision=opts.get("matmul_precision", "highest"),
      keep_m=opts.get("keep_m") or None)


def parse(argv=None):
  """Parses ``argv`` into ``(RunConfig, DeepRFMConfig)``; raises DncError on bad options."""
  args = build_parser().parse_args(argv)
  if args.resume:
    args = _resume_options(args, argv)
  # Store the resolved precision, so a resumed run keeps it on any machine.
  args.precision = "float64" if _use_x64(args) else "float32"
  if args.matmul_precision != "highest" and args.precision == "float64":
    raise DncError(f"--matmul-precision {args.matmul_precision} applies to float32 runs, but this "
                   "run is float64 (--precision auto is float64 on a CPU); add --precision float32")
  run_cfg = RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, n=args.n, n_test=args.n_test,
      classes=args.classes, balanced=args.balanced,
      class_proportions=getattr(args, "class_proportions", None),
      cache=not args.no_cache, seed=args.seed,
      x64=args.precision == "float64", precision=args.precision, out=args.out, overwrite=args.overwrite, progress=not args.no_progress,
      resume=args.resume, devices=args.devices, solver=args.solver, cg_tol=args.cg_tol,
      cg_max_iter=args.cg_max_iter, cg_rank=args.cg_rank,
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


def enable_compile_cache(folder: str | None) -> None:
  """Points JAX's persistent compilation cache at ``folder`` (layers compile once per shape).

  JAX reads this setting once per process, at its first compilation: it applies to
  the whole process, and a later call with another folder (or ``None``) changes nothing.
  """
  if folder is None:
    return
  import jax
  try:
    pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    print(f"deep_rfm: note: compilation cache {folder} not usable ({e}); compiling afresh",
          file=sys.stderr)
    return
  jax.config.update("jax_compilation_cache_dir", folder)
  # Every program, small ones too: the few dozen operations outside the layer (Gram
  # pictures, checks) otherwise recompile in every run, about as long as loading the
  # two cached layer shapes (docs/performance.md).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def process_seconds() -> float | None:
  """Seconds since this process started (Linux ``/proc``), or None where unknown."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError, AttributeError):
    return None


# Phases of metrics.json's "timing", in the order of a run; they add up to "total".
PHASES = ("import", "data", "compile", "layers", "checkpoints", "gram_pictures", "final_krr",
          "figures", "files", "other")
# JAX's events of a compilation (tracing, lowering, XLA or the persistent cache).
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def _merge(spans):
  """Sorted, disjoint intervals covering ``spans`` (nested compilations count once)."""
  out = []
  for a, b in sorted(spans):
    if out and a <= out[-1][1]:
      out[-1][1] = max(out[-1][1], b)
    else:
      out.append([a, b])
  return out


def _overlap(spans, a, b) -> float:
  return sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)


class PhaseClock:
  """Where a whole command's wall time goes: timed windows per phase, and compilations.

  Compilations are taken from JAX's monitoring events (start and end of every
  trace, lowering and XLA compilation, whatever function triggers them), so
  each phase is its window minus the compilation inside it, and ``compile`` is
  a phase of its own. Times are ``time.time()``, the clock of JAX's events.
  """

  def __init__(self, *, from_process_start: bool = False):
    """``from_process_start``: count the time before this call as ``import`` (a command's
    interpreter start and imports); otherwise the clock starts now."""
    since = process_seconds() if from_process_start else None
    self.now = time.time
    self.start = self.now() - (since or 0.0)
    self.windows = {}
    self.spans = []       # (start, end, function name)
    self._listener = None
    try:
      from jax import monitoring
      self._listener = self._on_span
      monitoring.register_event_time_span_listener(self._listener)
    except (ImportError, AttributeError):   # an older JAX: compile time stays in its phase
      pass
    self.add("import", self.start, self.now())   # interpreter start and module imports

  def _on_span(self, event, start, end, **kw):
    if event in _COMPILE_EVENTS:
      self.spans.append((start, end, str(kw.get("fun_name", ""))))

  def close(self):
    if self._listener is not None:
      from jax import monitoring
      with contextlib.suppress(Exception):
        monitoring.unregister_event_time_span_listener(self._listener)
      self._listener = None

  def add(self, name, start, end):
    self.windows.setdefault(name, []).append((start, end))

  @contextlib.contextmanager
  def phase(self, name):
    t0 = self.now()
    try:
      yield
    finally:
      self.add(name, t0, self.now())

  def summary(self, loop=None) -> dict:
    """``{phase: seconds}`` adding up to ``total``, with the loop's share and per-layer compilation.

    ``loop``: what the layer loop recorded (:meth:`LoopTimer.parts`): its window,
    the layers' and the final KRR's start and seconds, the checkpoint calls.
    """
    end = self.now()
    total = end - self.start
    compile_all = _merge([(a, b) for a, b, _ in self.spans])
    out = {p: 0.0 for p in PHASES}
    out["compile"] = sum(b - a for a, b in compile_all if a >= self.start)
    for name, wins in self.windows.items():
      out[name] = out.get(name, 0.0) + sum(b - a - _overlap(compile_all, a, b) for a, b in wins)
    by_layer = {}
    if loop is not None:
      a, b = loop["window"]
      inside = (b - a) - _overlap(compile_all, a, b)
      for layer, (x, sec) in zip(loop["layers"], loop["compute"]):
        if layer == loop["layers"][0]:
          # deep_rfm's own set-up precedes the first layer: it starts with its key's fold_in.
          first = [s for s, _, f in self.spans if x <= s <= x + sec + 1.0 and
                   ("fold_in" in f or "rfm_layer" in f)]
          x = min(first, default=x)
        by_layer[str(layer)] = _overlap(compile_all, x, x + sec)
        out["layers"] += sec - by_layer[str(layer)]
      x, sec = loop["final"]
      out["final_krr"] = sec - _overlap(compile_all, x, x + sec)
      out["checkpoints"] += sum(y - x - _overlap(compile_all, x, y) for x, y in loop["checkpoints"])
      # The rest of the loop's window: Gram pictures, host copies, the progress bar.
      out["gram_pictures"] = max(0.0, inside - out["layers"] - out["final_krr"]
                                 - sum(y - x for x, y in loop["checkpoints"]))
    out["other"] = total - sum(v for k, v in out.items() if k != "other")
    out = {k: round(v, 3) for k, v in out.items()}
    out["total"] = round(total, 3)
    out["loop_share"] = round(out["layers"] / total, 4) if total > 0 else None
    out["compile_by_layer"] = {k: round(v, 3) for k, v in by_layer.items()}
    out["note"] = ("seconds of the whole command by phase (they add up to total, from process "
                   "start): compile holds every JAX compilation (layer shapes: "
                   "compile_by_layer), layers the layer loop's own work without it, checkpoints "
                   "the loop's wait for checkpoint writes (they run in a background thread), "
                   "gram_pictures the rest of the loop (Gram pictures, host copies)")
    return out


def format_timing(t: dict) -> str:
  """The one-line summary of a ``timing`` entry."""
  shapes = [v for v in t.get("compile_by_layer", {}).values() if v >= 0.05]
  comp = f"compile {t['compile']:.1f}" + (
      f" (layer shapes {' + '.join(f'{v:.1f}' for v in shapes)})" if shapes else "")
  rest = ", ".join(f"{label} {t[k]:.1f}" for k, label in (
      ("import", "import"), ("data", "data"), ("checkpoints", "checkpoints"),
      ("gram_pictures", "Gram"), ("final_krr", "final KRR"), ("figures", "figures"),
      ("files", "files"), ("other", "other")))
  share = t.get("loop_share")
  return (f"time {t['total']:.1f} s: layer loop {t['layers']:.1f}"
          + (f" ({100 * share:.0f}%)" if share is not None else "") + f", {comp}, {rest}")


class CheckpointWriter:
  """Writes checkpoints in a background thread, one at a time and in order.

  :meth:`submit` returns once the previous write has finished and the next one
  has started, so a layer computes while the last layer's state is written.
  :meth:`wait` must be called before the process ends (also on an interrupt):
  a killed write leaves the previous checkpoint in place (atomic files).
  """

  def __init__(self, ckpt: pathlib.Path):
    self.ckpt = ckpt
    self._thread = None
    self._error = None

  def submit(self, state) -> None:
    self.wait()
    self._thread = threading.Thread(target=self._write, args=(state,), name="checkpoint",
                                    daemon=True)
    self._thread.start()

  def _write(self, state) -> None:
    try:
      save_checkpoint(self.ckpt, state)
    except BaseException as e:   # reported in the main thread by wait()
      self._error = e

  def wait(self) -> None:
    """Blocks until the last submitted checkpoint is written; raises DncError if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._error is not None:
      err, self._error = self._error, None
      raise DncError(f"could not write the checkpoint in {self.ckpt}: {err}") from err


class LoopTimer:
  """The layer loop's windows, from the ``on_state`` and ``callback`` hooks of :func:`deep_rfm`."""

  def __init__(self, now):
    self.now = now
    self.start = self.end = None
    self.checkpoints = []   # (start, end) of each on_state call
    self.records = []
    self.callback_ends = []  # deep_rfm starts its next layer (or the final KRR) right after

  def parts(self, final_seconds: float) -> dict:
    """The loop's window, each layer's ``(start, seconds)`` and the final KRR's, checkpoints."""
    starts = [self.start] + self.callback_ends
    return {"window": (self.start, self.end), "layers": [r["layer"] for r in self.records],
            "compute": [(t, r["seconds"]) for t, r in zip(starts, self.records)],
            "final": (starts[len(self.records)], final_seconds),
            "checkpoints": list(self.checkpoints)}


def run(run_cfg: RunConfig, rfm_cfg, clock: PhaseClock | None = None) -> dict:
  """Loads the data, runs Deep RFM, writes the run directory; returns metrics.json's content."""
  clock = clock or PhaseClock()
  with clock.phase("import"):
    import jax
  enable_compile_cache(run_cfg.compile_cache)
  # A context, not the global flag: callers in the same process keep their setting.
  enable = getattr(jax, "enable_x64", None)
  if enable is None:
    from jax.experimental import enable_x64 as enable
  try:
    with enable(bool(run_cfg.x64)):
      return _run(run_cfg, rfm_cfg, clock)
  finally:
    clock.close()


def _run(run_cfg: RunConfig, rfm_cfg, clock: PhaseClock) -> dict:
  with clock.phase("import"):
    import jax
    import numpy as np
    from dnc_jax.rfm import memory as memory_lib
    from dnc_jax import metrics as metrics_lib
    from dnc_jax.viz import collapse as plots
    from dnc_jax.io import runs
    from dnc_jax.rfm import driver as drfm

  out = check_out(run_cfg)
  with clock.phase("data"):
    ds = load_data(run_cfg)
    runs.check_interrupt()   # a signal during the data load stops here, before any file
    dtype = np.float64 if run_cfg.x64 else np.float32
    x, xt = ds.x_train.astype(dtype), ds.x_test.astype(dtype)
    k = ds.num_classes
    metrics_lib.check_labels(x, ds.y_train, k)

  runs.clear_run_files(out, ("config.json", "metrics.json", "metrics.csv", "nc1.png", "nc2.png",
                             "gram.png", "gram_agop.png", "grams.npz", "ms.npz"))
  ckpt = out / CHECKPOINT
  resume_state = load_checkpoint(ckpt, drfm) if run_cfg.resume else None
  if resume_state is None:
    import shutil
    shutil.rmtree(ckpt, ignore_errors=True)
    options = {k: v for k, v in run_cfg.options.items() if k not in _RUN_CONTROL}
    runs.write_json(ckpt / "options.json", options)
  config = {
      "run": dataclasses.asdict(run_cfg), "deep_rfm": dataclasses.asdict(rfm_cfg),
      "dataset": ds.info, "num_classes": k, "n": int(x.shape[0]), "n_test": int(xt.shape[0]),
      "dim": int(x.shape[1]), "dtype": str(np.dtype(dtype)),
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                      "devices": [str(d) for d in jax.devices()], "python": platform.python_version()},
  }
  if not run_cfg.x64 and rfm_cfg.depth > 15:
    print("deep_rfm: note: in float32, NC1/NC2 beyond layer ~15 can differ from float64 by "
          "10-25% (docs/numerics.md); use --precision float64 for quantitative claims about "
          "deep layers",
          file=sys.stderr)
  bar = None
  if run_cfg.progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=rfm_cfg.depth, desc="Deep RFM", unit="layer", file=sys.stderr,
               initial=0 if resume_state is None else resume_state.layer)

  writer = CheckpointWriter(ckpt)
  loop = LoopTimer(clock.now)

  def on_state(st):
    t = clock.now()
    writer.submit(st)   # written while the next layer computes
    loop.checkpoints.append((t, clock.now()))

  def callback(rec):
    loop.records.append(rec)
    if bar is not None:
      bar.update(1)
      bar.set_postfix(nc1_agop=f"{rec['nc1']['agop']:.3g}", test_acc=rec["test_acc"])
    runs.check_interrupt()   # the layer is handed to the writer: a safe point
    loop.callback_ends.append(clock.now())

  budget = memory_lib.budget_bytes(rfm_cfg.memory_gb)
  # The run plans with this budget, the one metrics.json reports (free memory is read once).
  planned = dataclasses.replace(rfm_cfg, memory_gb=budget / memory_lib.GiB)
  # Whatever happens from here on, the last state reaches the disk before the process ends.
  try:
    t0 = time.perf_counter()
    loop.start = clock.now()
    try:
      common = dict(key=jax.random.key(run_cfg.seed), x_test=xt, labels_test=ds.y_test,
                    num_classes=k, callback=callback, resume=resume_state, on_state=on_state)
      devices = run_cfg.devices or jax.device_count()
      if devices > 1 or run_cfg.solver != "cholesky":
        if rfm_cfg.memory_gb is not None:
          common["memory_bytes"] = budget
        from dnc_jax.rfm import sharded
        result = sharded.sharded_deep_rfm(x, ds.y_train, planned, devices=devices,
                                          solver=run_cfg.solver, cg_tol=run_cfg.cg_tol,
                                          cg_max_iter=run_cfg.cg_max_iter, cg_rank=run_cfg.cg_rank,
                                          **common)
      else:
        result = drfm.deep_rfm(x, ds.y_train, planned, **common)
    except DncError:
      if not run_cfg.resume:   # a failed run leaves nothing behind; a resumed one keeps its layers
        import shutil
        with contextlib.suppress(DncError):
          writer.wait()   # else a write in flight would make the folder again
        shutil.rmtree(ckpt, ignore_errors=True)
      raise
    finally:
      if bar is not None:
        bar.close()
    loop.end = clock.now()
    runs.check_interrupt()   # every layer is saved; the final KRR reruns on resume
    total = time.perf_counter() - t0
    peak = memory_lib.peak_bytes()
    from dnc_jax.report import rfm as report_rfm
    grams_agop = result.grams_agop or {}
    gram_blocks = {str(l): {"input": report_rfm.gram_block_means(g, lab)}
                   for l, (g, lab) in sorted(result.grams.items())}
    for l, (g, lab) in sorted(grams_agop.items()):
      gram_blocks.setdefault(str(l), {})["agop"] = report_rfm.gram_block_means(g, lab)

    metrics = {
        "config": config,
        "conventions": {
            **metrics_lib.CONVENTIONS,
            "global_mean": rfm_cfg.global_mean,
            "input": "X_l, the layer's input with rows normalised to unit norm",
            "agop": "X_l M_l^{1/2}, M_l the layer's AGOP divided by its largest entry",
            "features": "Phi_l(X_l M_l^{1/2}), the random feature map's output (= X_{l+1})",
            "train_acc/test_acc": "accuracy of the layer's kernel predictor f_l",
        },
        "layers": result.layers,
        "final": result.final,
        "gram_blocks": gram_blocks,
        "seconds_total": total,
        "memory": {
            "budget_bytes": budget,
            "peak_device_bytes": peak["device"],
            "peak_host_bytes": peak["host"],
            "estimate_bytes": max((r["memory_estimate_bytes"] for r in result.layers
                                   if "memory_estimate_bytes" in r), default=None),
            "note": "peak_device_bytes: the accelerator allocator's peak (null on a CPU); "
                    "peak_host_bytes: the process's peak resident set (where a CPU run's arrays "
                    "live); estimate_bytes: dnc_jax.rfm.memory's bound for the largest layer",
        },
    }
    # Written only once the run has succeeded: a failed run leaves nothing behind.
    # metrics.json comes last, with the time of everything before it.
    with clock.phase("files"):
      runs.write_json(out / "config.json", config)
      rows = []
      for rec in result.layers:
        row = {"layer": rec["layer"]}
        for rep in drfm.REPRESENTATIONS:
          for name, value in rec["metrics"][rep].items():
            row[f"{name}_{rep}"] = value
        row.update(train_acc=rec["train_acc"], test_acc=rec["test_acc"], seconds=rec["seconds"])
        rows.append(row)
      runs.write_csv(out / "metrics.csv", rows)
      runs.write_npz(out / "grams.npz", **{f"layer_{l}": g for l, (g, _) in result.grams.items()},
                     **{f"labels_{l}": lab for l, (_, lab) in result.grams.items()},
                     **{f"agop_layer_{l}": g for l, (g, _) in grams_agop.items()},
                     **{f"agop_labels_{l}": lab for l, (_, lab) in grams_agop.items()})
      if result.ms is not None:
        runs.write_npz(out / "ms.npz", **{f"layer_{i + 1}": m for i, m in enumerate(result.ms)})
    name = f"{run_cfg.dataset}, n = {x.shape[0]}, {rfm_cfg.features} features, {rfm_cfg.preset} preset"
    with clock.phase("figures"):
      plots.plot_collapse([result.layers], "nc1", out / "nc1")
      plots.plot_collapse([result.layers], "nc2", out / "nc2")
      plots.plot_grams(result.grams, out / "gram", num_classes=k,
                       title=f"Gram matrices of X_l ({name}; layer {rfm_cfg.depth + 1} = final)")
      if grams_agop:
        plots.plot_grams(grams_agop, out / "gram_agop", num_classes=k,
                         title=f"Gram matrices of X_l M_l^1/2 ({name})")
    with clock.phase("checkpoints"):
      writer.wait()   # the last state was written during the final KRR and the figures
    metrics["timing"] = clock.summary(loop.parts(result.final["seconds"]))
    runs.write_json(out / "metrics.json", metrics)
    import shutil
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics
  finally:
    with contextlib.suppress(DncError):   # an error of the run itself takes precedence
      writer.wait()


def check_out(run_cfg: RunConfig) -> pathlib.Path:
  """The ``--out`` rules (:func:`dnc_jax.io.runs.check_out`); an interrupted run needs --resume."""
  from dnc_jax.io import runs
  return runs.check_out(run_cfg.out, overwrite=run_cfg.overwrite, resume=run_cfg.resume,
                        unfinished=CHECKPOINT, resume_hint="--resume")


def load_data(run_cfg: RunConfig):
  """The dataset of ``run_cfg``; a default ``--n``/``--n-test`` larger than the split takes it all."""
  from dnc_jax import data as data_lib
  n, n_test = run_cfg.n, run_cfg.n_test
  bounded = {}
  if n is None and run_cfg.dataset not in DEFAULT_N:
    n = bounded["n"] = DEFAULT_N_OTHER
  if n_test is None and run_cfg.dataset not in DEFAULT_N_TEST:
    n_test = bounded["n_test"] = DEFAULT_N_TEST_OTHER
  common = dict(data_dir=run_cfg.data_dir, classes=run_cfg.classes, balanced=run_cfg.balanced,
                cache=run_cfg.cache, seed=run_cfg.seed,
                class_proportions=run_cfg.class_proportions)
  try:
    return data_lib.load_dataset(run_cfg.dataset, n=n, n_test=n_test, **common)
  except DataError:
    if not bounded:
      raise
  # A split smaller than a default bound: take it whole (loads from the cache).
  ds = data_lib.load_dataset(run_cfg.dataset, n=run_cfg.n, n_test=run_cfg.n_test, **common)
  if (len(ds.x_train) >= bounded.get("n", float("inf"))
      and len(ds.x_test) >= bounded.get("n_test", float("inf"))):
    # Both splits are large enough: the error was about something else.
    return data_lib.load_dataset(run_cfg.dataset, n=n, n_test=n_test, **common)
  return ds


def save_checkpoint(ckpt: pathlib.Path, state) -> None:
  """Writes the state after a layer: arrays first, then the JSON that points at them."""
  from dnc_jax.io import runs
  import numpy as np
  arrays = {"x": state.x, "x_test": state.x_test}
  for layer, (g, lab) in state.grams.items():
    arrays[f"gram_{layer}"], arrays[f"gram_labels_{layer}"] = g, lab
  for layer, (g, lab) in (state.grams_agop or {}).items():
    arrays[f"agop_gram_{layer}"], arrays[f"agop_gram_labels_{layer}"] = g, lab
  for i, m in enumerate(state.ms or []):
    arrays[f"m_{i + 1}"] = m
  name = f"state_{state.layer:04d}.npz"
  # Uncompressed: zlib took seconds per layer for a few percent of space on float data.
  runs.write_npz_uncompressed(ckpt / name, **arrays)
  runs.write_json(ckpt / "state.json", {"layer": state.layer, "arrays": name,
                                        "layers": state.layers, "grams": sorted(state.grams),
                                        "grams_agop": sorted(state.grams_agop or {}),
                                        "num_ms": len(state.ms or []), "keep_m": state.ms is not None})
  for old in ckpt.glob("state_*.npz"):  # only after state.json points at the new file
    if old.name != name:
      old.unlink()
  for tmp in ckpt.glob(".state*.tmp"):   # left by a process killed while writing
    tmp.unlink(missing_ok=True)


def load_checkpoint(ckpt: pathlib.Path, drfm):
  """The :class:`DeepRFMState` saved in ``ckpt`` (None when there is none)."""
  import json

  import numpy as np
  meta_path = ckpt / "state.json"
  if not meta_path.exists():
    return None
  meta = json.loads(meta_path.read_text())
  with np.load(ckpt / meta["arrays"]) as z:
    grams = {int(l): (z[f"gram_{l}"], z[f"gram_labels_{l}"]) for l in meta["grams"]}
    ms = [z[f"m_{i + 1}"] for i in range(meta["num_ms"])] if meta["keep_m"] else None
    grams_agop = {int(l): (z[f"agop_gram_{l}"], z[f"agop_gram_labels_{l}"])
                  for l in meta.get("grams_agop", [])}
    return drfm.DeepRFMState(meta["layer"], z["x"], z["x_test"], meta["layers"], grams, ms,
                             grams_agop)


def interrupted_message(out) -> str:
  """What an interrupted run prints: where it stopped and the command that continues it."""
  import json
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
      check_out(run_cfg)
      state["out"] = run_cfg.out
      with runs.removed_if_left_empty(run_cfg.out):
        metrics = run(run_cfg, rfm_cfg, clock)
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
