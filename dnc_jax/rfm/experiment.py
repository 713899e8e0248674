"""A Deep RFM run as ``bin/deep_rfm`` does it: data → driver → run directory.

:func:`run` takes a :class:`RunConfig` (what is about the run: data, seed,
precision, paths, progress, devices) and a
:class:`~dnc_jax.rfm.config.DeepRFMConfig` (the method), and writes
``config.json``, ``metrics.json`` (last), ``metrics.csv``, ``grams.npz``
(``ms.npz`` with ``keep_m``) and the figures into ``out``, checkpointing every
layer (:mod:`dnc_jax.rfm.checkpoint`) and timing every phase
(:mod:`dnc_jax.rfm.timing`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import platform
import shutil
import sys
import threading
import time

from dnc_jax.errors import DataError, DncError
from dnc_jax.rfm.checkpoint import CHECKPOINT, CheckpointWriter, load_checkpoint
from dnc_jax.rfm.timing import LoopTimer, PhaseClock

# Defaults of --n / --n-test: None is the whole split; a number is an upper bound
# (a smaller split is taken whole; an explicit --n larger than the split is an error).
DEFAULT_N = {"digits": None}
DEFAULT_N_TEST = {"digits": None}
DEFAULT_N_OTHER, DEFAULT_N_TEST_OTHER = 2000, 1000
# Options that may differ between a run and its resumption (the memory budget only
# sets the AGOP block size, which changes the result at round-off level at most).
RUN_CONTROL = ("out", "resume", "overwrite", "no_progress", "compile_cache", "no_compile_cache",
               "memory_gb")
RUN_FILES = ("config.json", "metrics.json", "metrics.csv", "nc1.png", "nc2.png", "gram.png",
             "gram_agop.png", "grams.npz", "ms.npz")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a Deep RFM run needs besides the method's options (:class:`DeepRFMConfig`)."""
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
  devices: int = 0            # 0: every visible device
  compile_cache: str | None = None    # None: no persistent compilation cache
  options: dict = dataclasses.field(default_factory=dict)   # the parsed flags, for --resume


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
    from dnc_jax.io import runs
  out = check_out(run_cfg)
  with clock.phase("data"):
    ds, x, xt = _load(run_cfg)
  runs.clear_run_files(out, RUN_FILES)
  ckpt = out / CHECKPOINT
  resume_state = load_checkpoint(ckpt) if run_cfg.resume else None
  if resume_state is None:
    shutil.rmtree(ckpt, ignore_errors=True)
    options = {k: v for k, v in run_cfg.options.items() if k not in RUN_CONTROL}
    runs.write_json(ckpt / "options.json", options)
  config = _config_record(run_cfg, rfm_cfg, ds, x, xt)
  if not run_cfg.x64 and rfm_cfg.ridge == 0 and rfm_cfg.depth > 15:
    print("deep_rfm: note: a ridgeless run in float32 may find its kernel system singular "
          "past layer ~18 (docs/numerics.md); --precision auto runs it in float64",
          file=sys.stderr)
  writer = CheckpointWriter(ckpt)
  drawer = _FigureDrawer(out, run_cfg, rfm_cfg, num_classes=ds.num_classes, n=x.shape[0])
  # Whatever happens from here on, the last state reaches the disk before the process ends.
  try:
    result, loop, budget, seconds = _loop(run_cfg, rfm_cfg, clock, ds, x, xt, writer,
                                          resume_state, on_last=drawer.start)
    metrics = _metrics(rfm_cfg, config, result, budget, seconds)
    _write(out, clock, result, metrics, drawer)
    with clock.phase("checkpoints"):
      writer.wait()   # the last state was written during the final KRR and the figures
    metrics["timing"] = clock.summary(loop.parts(result.final["seconds"]))
    runs.write_json(out / "metrics.json", metrics)
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics
  finally:
    drawer.wait()   # a failed run's drawing ends here: pyplot is not shared between threads
    with contextlib.suppress(DncError):   # an error of the run itself takes precedence
      writer.wait()


def _load(run_cfg: RunConfig):
  """``(dataset, x, x_test)`` in the run's precision, labels checked."""
  import numpy as np
  from dnc_jax import metrics as metrics_lib
  from dnc_jax.io import runs
  ds = load_data(run_cfg)
  runs.check_interrupt()   # a signal during the data load stops here, before any file
  dtype = np.float64 if run_cfg.x64 else np.float32
  x, xt = ds.x_train.astype(dtype), ds.x_test.astype(dtype)
  metrics_lib.check_labels(x, ds.y_train, ds.num_classes)
  return ds, x, xt


def _config_record(run_cfg, rfm_cfg, ds, x, xt) -> dict:
  import jax
  import numpy as np
  return {
      "run": dataclasses.asdict(run_cfg), "deep_rfm": dataclasses.asdict(rfm_cfg),
      "dataset": ds.info, "num_classes": ds.num_classes, "n": int(x.shape[0]),
      "n_test": int(xt.shape[0]), "dim": int(x.shape[1]), "dtype": str(np.dtype(x.dtype)),
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                      "devices": [str(d) for d in jax.devices()],
                      "python": platform.python_version()},
  }


class _FigureDrawer:
  """Draws the run's figures into memory in a thread while the final KRR runs.

  Matplotlib (import and drawing, about 0.8 s of one core) then overlaps the
  final KRR, which computes in XLA outside the GIL, instead of following it; the
  files are written only once the run has succeeded (:meth:`files`).
  """

  def __init__(self, out, run_cfg, rfm_cfg, *, num_classes: int, n: int):
    self.out, self.num_classes = out, num_classes
    self.name = f"{run_cfg.dataset}, n = {n}, {rfm_cfg.features} features, {rfm_cfg.preset} preset"
    self.depth = rfm_cfg.depth
    self.thread, self.drawn, self.error = None, None, None

  def draw(self, layers, grams, grams_agop) -> dict:
    """``{path: bytes}`` of nc1.png, nc2.png, gram.png and gram_agop.png."""
    from dnc_jax.viz import collapse as plots
    files = {}
    plots.plot_collapse([layers], "nc1", self.out / "nc1", into=files)
    plots.plot_collapse([layers], "nc2", self.out / "nc2", into=files)
    plots.plot_grams(grams, self.out / "gram", num_classes=self.num_classes, into=files,
                     title=f"Gram matrices of X_l ({self.name}; layer {self.depth + 1} = final)")
    if grams_agop:
      plots.plot_grams(grams_agop, self.out / "gram_agop", num_classes=self.num_classes,
                       into=files, title=f"Gram matrices of X_l M_l^1/2 ({self.name})")
    return files

  def start(self, state) -> None:
    """Starts drawing from the last layer's state (its records and Gram pictures)."""

    def work():
      try:
        self.drawn = self.draw(state.layers, state.grams, state.grams_agop)
      except Exception as e:   # noqa: BLE001 - drawn again, and raised, by files()
        self.error = e

    self.thread = threading.Thread(target=work, name="draw-figures", daemon=True)
    self.thread.start()

  def wait(self) -> None:
    """Waits for the drawing thread, if any (its figures are kept for :meth:`files`)."""
    if self.thread is not None:
      self.thread.join()

  def files(self, result) -> dict:
    """The drawn figures of ``result``: the thread's, or drawn now (no thread, or it failed)."""
    self.wait()
    if self.thread is not None and self.error is None:
      return self.drawn
    return self.draw(result.layers, result.grams, result.grams_agop)


def _loop(run_cfg, rfm_cfg, clock, ds, x, xt, writer, resume_state, *, on_last=None):
  """The driver's layer loop with checkpoints, progress and interrupts at layer boundaries;
  ``on_last`` gets the last layer's state."""
  import jax
  from dnc_jax.io import runs
  from dnc_jax.rfm import driver, memory
  loop = LoopTimer(clock.now)
  bar = None
  if run_cfg.progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=rfm_cfg.depth, desc="Deep RFM", unit="layer", file=sys.stderr,
               initial=0 if resume_state is None else resume_state.layer)

  def on_state(st):
    t = clock.now()
    writer.submit(st)   # written while the next layer computes
    loop.checkpoints.append((t, clock.now()))
    if on_last is not None and st.layer == rfm_cfg.depth:
      on_last(st)

  def callback(rec):
    loop.records.append(rec)
    if bar is not None:
      bar.update(1)
      bar.set_postfix(nc1_agop=f"{rec['nc1']['agop']:.3g}", test_acc=rec["test_acc"])
    runs.check_interrupt()   # the layer is handed to the writer: a safe point
    loop.callback_ends.append(clock.now())

  budget = memory.budget_bytes(rfm_cfg.memory_gb)
  # The run plans with this budget, the one metrics.json reports (free memory is read once).
  planned = dataclasses.replace(rfm_cfg, memory_gb=budget / memory.GiB)
  devices = run_cfg.devices or jax.device_count()
  mesh = None
  if devices > 1 or rfm_cfg.solver.method != "cholesky":
    from dnc_jax.rfm import sharded
    mesh = sharded.make_mesh(devices)
  t0 = time.perf_counter()
  loop.start = clock.now()
  try:
    result = driver.deep_rfm(x, ds.y_train, planned, key=jax.random.key(run_cfg.seed),
                             x_test=xt, labels_test=ds.y_test, num_classes=ds.num_classes,
                             callback=callback, resume=resume_state, on_state=on_state, mesh=mesh)
  except DncError:
    if not run_cfg.resume:   # a failed run leaves nothing behind; a resumed one keeps its layers
      with contextlib.suppress(DncError):
        writer.wait()   # else a write in flight would make the folder again
      shutil.rmtree(writer.ckpt, ignore_errors=True)
    raise
  finally:
    if bar is not None:
      bar.close()
  loop.end = clock.now()
  runs.check_interrupt()   # every layer is saved; the final KRR reruns on resume
  return result, loop, budget, time.perf_counter() - t0


def _metrics(rfm_cfg, config, result, budget, seconds) -> dict:
  """metrics.json's content (without ``timing``, added last)."""
  from dnc_jax import metrics as metrics_lib
  from dnc_jax.rfm import memory
  from dnc_jax.report import rfm as report_rfm
  gram_blocks = {str(l): {"input": report_rfm.gram_block_means(g, lab)}
                 for l, (g, lab) in sorted(result.grams.items())}
  for l, (g, lab) in sorted((result.grams_agop or {}).items()):
    gram_blocks.setdefault(str(l), {})["agop"] = report_rfm.gram_block_means(g, lab)
  peak = memory.peak_bytes()
  return {
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
      "seconds_total": seconds,
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


def _write(out, clock, result, metrics, drawer: _FigureDrawer) -> None:
  """Every file but metrics.json (written last, with the time of everything before it)."""
  from dnc_jax.io import runs
  from dnc_jax.rfm.config import REPRESENTATIONS
  from dnc_jax.viz import collapse as plots
  grams_agop = result.grams_agop or {}
  # Written only once the run has succeeded: a failed run leaves nothing behind.
  with clock.phase("files"):
    runs.write_json(out / "config.json", metrics["config"])
    rows = []
    for rec in result.layers:
      row = {"layer": rec["layer"]}
      for rep in REPRESENTATIONS:
        for name, value in rec["metrics"][rep].items():
          row[f"{name}_{rep}"] = value
      row.update(train_acc=rec["train_acc"], test_acc=rec["test_acc"], seconds=rec["seconds"])
      rows.append(row)
    runs.write_csv(out / "metrics.csv", rows)
    # Uncompressed: zlib saved a fifth of the size for 0.15 s per run (Gram values barely compress).
    runs.write_npz_uncompressed(
        out / "grams.npz", **{f"layer_{l}": g for l, (g, _) in result.grams.items()},
        **{f"labels_{l}": lab for l, (_, lab) in result.grams.items()},
        **{f"agop_layer_{l}": g for l, (g, _) in grams_agop.items()},
        **{f"agop_labels_{l}": lab for l, (_, lab) in grams_agop.items()})
    if result.ms is not None:
      runs.write_npz(out / "ms.npz", **{f"layer_{i + 1}": m for i, m in enumerate(result.ms)})
  with clock.phase("figures"):
    plots.write_figures(drawer.files(result))


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
