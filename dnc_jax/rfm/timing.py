"""Where a whole Deep RFM command's wall time goes, by phase (``timing`` in metrics.json).

:class:`PhaseClock` times windows per phase and takes JAX's compilation events
out of them; :class:`LoopTimer` records the layer loop's own windows through
the driver's ``callback`` and ``on_state`` hooks; :func:`format_timing` is the
one-line summary a run prints.
"""
from __future__ import annotations

import contextlib
import os
import time


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
