r"""Memory budget of a Deep RFM layer: block sizes from a budget, and peak use.

A layer (:func:`dnc_jax.rfm.driver.rfm_layer`, one jit) goes through two phases:

* the solve: the ``[N, N]`` kernel matrix and its Cholesky factor. XLA
  factorises in place, but the distance matmul's output and the kernel values
  (in the factor's column-major layout) coexist once: about ``2.5 N²`` floats;
* the AGOP: one block of ``B`` rows. With ``agop="rules"`` each row has ``K``
  cotangents of size ``N`` and their intermediates: about ``B (2 (K + 1) N + 2 K d)``
  floats. With ``agop="closed_form"`` a row has one ``[N]`` row of Jacobian
  weights and ``[K, d + K]`` products, about ``B (3 N + 3 K (d + K))`` floats, and
  the ``[N, K (d + K)]`` weighted training rows are built once;

on top of arrays that live throughout: the ``[N_t, N]`` test kernel rows, a few
``[N + N_t, max(d, D)]`` representations and ``[d, d]`` matrices.

With ``agop="rules"`` XLA lays the two phases out in the same memory. With
``agop="closed_form"`` the solve's ``[N, N]`` distances stay alive for the
AGOP, and XLA's buffer assignment then keeps up to about ``4 N²`` floats for the
solve beside the AGOP's blocks instead of overlapping them.

:func:`plan_layer` picks the AGOP (``"auto"``: the closed form when it fits, else
the rules) and its block size ``B`` so the estimate fits the budget, and refuses
(with the fix) a problem whose ``[N, N]`` phase alone does not fit. The estimate
is an upper bound of XLA's own buffer assignment
(``compiled.memory_analysis()``: arguments + outputs + temporaries) within
1.05–1.65× for the rules on seven shapes and 1.1–2.1× for the closed form on ten
(N 1000–4000, d 32–1024, D 64–1024; ``tests/test_memory.py`` checks three).
"""
from __future__ import annotations

import os
import resource
import sys
from typing import NamedTuple

import jax

from dnc_jax.errors import ConfigError

GiB = 2**30
# Past a few hundred rows a block gains no matmul efficiency on a CPU but loses
# cache locality; an accelerator keeps gaining from larger GEMMs up to thousands.
MAX_BLOCK_ROWS = {"cpu": 256}
MAX_BLOCK_ROWS_ACCELERATOR = 4096
# Fewer rows per block than this and the closed form's products are too thin to pay for
# its kept distances: "auto" then takes the rules.
_MIN_CLOSED_FORM_ROWS = 32
# Leave room for the runtime, the host copy of the data and fragmentation.
_USABLE_FRACTION = 0.8


class LayerPlan(NamedTuple):
  """How a layer fits in memory.

  Attributes:
    batch_size: rows per AGOP block.
    fixed_bytes: arrays that live through the layer.
    solve_bytes: the ``[N, N]`` phase.
    per_row_bytes: the AGOP phase per block row.
    estimate_bytes: ``fixed + max(solve, batch_size * per_row)`` (rules) or
      ``fixed + solve + batch_size * per_row`` (closed form).
    budget_bytes: the budget the plan was made for.
    agop: the AGOP implementation planned for, ``"closed_form"`` or ``"rules"``.
  """
  batch_size: int
  fixed_bytes: int
  solve_bytes: int
  per_row_bytes: int
  estimate_bytes: int
  budget_bytes: int
  agop: str = "rules"


def available_bytes(device: jax.Device | None = None) -> int:
  """Memory free for a computation on ``device`` (default: the first device).

  Accelerators: the allocator's limit minus what is in use; CPU: the host's
  available memory (``MemAvailable``).
  """
  device = device or jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
      return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  return _host_available_bytes()


def _host_available_bytes() -> int:
  avail = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          avail = int(line.split()[1]) * 1024
  except OSError:
    pass
  if avail is None:
    try:
      avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
      avail = 8 * GiB
  limit = _cgroup_room()
  return avail if limit is None else min(avail, limit)


def _cgroup_room() -> int | None:
  """Memory left under a container's limit (cgroup v2 or v1), or None without one."""
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    try:
      with open(limit_file) as f:
        raw = f.read().strip()
      if raw == "max" or int(raw) >= 2**60:
        return None
      with open(usage_file) as f:
        return max(0, int(raw) - int(f.read().strip()))
    except (OSError, ValueError):
      continue
  return None


def format_bytes(b: float) -> str:
  """``b`` bytes in GiB, MiB or KiB with three significant digits (never "0.0 GiB")."""
  for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(b) >= size:
      return f"{b / size:.3g} {unit}"
  return f"{b:.0f} bytes"


def budget_bytes(memory_gb: float | None, device: jax.Device | None = None) -> int:
  """``memory_gb`` in bytes, or a fraction of what the device has free."""
  if memory_gb is not None:
    if not memory_gb > 0:
      raise ConfigError(f"memory_gb must be > 0, got {memory_gb} (GiB per layer; "
                        "bin/deep_rfm: --memory-gb)")
    return int(memory_gb * GiB)
  return int(_USABLE_FRACTION * available_bytes(device))


def layer_bytes(n: int, n_test: int, d: int, width: int, num_classes: int, *,
                itemsize: int = 4, agop: str = "rules") -> tuple[int, int, int]:
  """``(fixed, solve, per_row)`` bytes of one layer (see the module docstring)."""
  n, nt, d, k = int(n), int(n_test), int(d), int(num_classes)
  wide = max(d, int(width))
  fixed = 2 * nt * n + 4 * (n + nt) * wide + 4 * d * d + 8 * n * k
  if agop == "closed_form":
    fixed += n * k * (d + k)                 # the weighted rows α_jk (r_j, e_j), built once
    solve = 4 * n * n
    per_row = 3 * n + 3 * k * (d + k)
  else:
    solve = 2.5 * n * n
    per_row = 2 * (k + 1) * n + 2 * k * d
  return int(fixed * itemsize), int(solve * itemsize), int(per_row * itemsize)


def plan_layer(n: int, n_test: int, d: int, width: int, num_classes: int, *,
               itemsize: int = 4, budget: int, batch_size: int | None = None,
               backend: str | None = None, agop: str = "rules") -> LayerPlan:
  """The AGOP implementation and block size that keep a layer within ``budget`` bytes.

  Args:
    n, n_test, d, width, num_classes: the layer's shape (``N``, ``N_t``, input
      dimension, feature width ``D``, ``K``).
    itemsize: bytes per float (4 or 8).
    budget: bytes the layer may use.
    batch_size: a fixed block size (the plan only reports its estimate).
    backend: ``"cpu"``, ``"gpu"``, ... (default: JAX's default backend); sets
      the largest useful block.
    agop: ``"rules"``, ``"closed_form"`` or ``"auto"`` (the closed form when it
      fits the budget with blocks of at least 32 rows, else the rules, which keep
      no distances beside the solve).

  Raises:
    ConfigError: when the ``[N, N]`` phase alone exceeds the budget.
  """
  if agop == "auto":
    try:
      plan = plan_layer(n, n_test, d, width, num_classes, itemsize=itemsize, budget=budget,
                        batch_size=batch_size, backend=backend, agop="closed_form")
    except ConfigError:
      plan = None
    # The closed form only when it fits the budget with blocks large enough to be GEMMs
    # (a fixed block size is not checked against the budget above).
    if (plan is not None and plan.estimate_bytes <= budget
        and plan.batch_size >= min(n, _MIN_CLOSED_FORM_ROWS)):
      return plan
    agop = "rules"
  fixed, solve, per_row = layer_bytes(n, n_test, d, width, num_classes, itemsize=itemsize,
                                      agop=agop)
  overlap = agop != "closed_form"
  if batch_size is None:
    room = budget - fixed
    agop_room = room if overlap else room - solve
    if solve > room or per_row > agop_room:
      need = fixed + (max(solve, per_row) if overlap else solve + per_row)
      fix = ("agop='rules' (bin/deep_rfm: --agop rules), which does not keep the distances, "
             if agop == "closed_form" else "")
      what = ("the [N, N] kernel matrix, its factor and the distances kept for the AGOP"
              if agop == "closed_form" else "the [N, N] kernel matrix and its factor")
      raise ConfigError(
          f"a Deep RFM layer with N = {n} training rows needs about {format_bytes(need)} "
          f"({what}) but the budget is {format_bytes(budget)}; "
          f"use {fix}fewer rows, the matrix-free solver over devices (SolverConfig(method='cg') "
          "on a mesh), or raise memory_gb if the machine has more free (bin/deep_rfm: --n, "
          "--solver cg --devices D, --memory-gb)")
    batch_size = block_rows(n, per_row, agop_room, backend=backend)
  blocks = int(batch_size) * per_row
  estimate = fixed + (max(solve, blocks) if overlap else solve + blocks)
  return LayerPlan(int(batch_size), fixed, solve, per_row, estimate, int(budget), agop)


def block_rows(n: int, per_row: int, room: int, *, backend: str | None = None) -> int:
  """Rows per AGOP block for ``n`` rows: within ``room`` bytes and the backend's cap,
  as few blocks as that allows, evened out so the last is not mostly padding."""
  cap = MAX_BLOCK_ROWS.get(backend or jax.default_backend(), MAX_BLOCK_ROWS_ACCELERATOR)
  n = max(1, int(n))
  rows = int(max(1, min(n, cap, room // max(1, per_row))))
  blocks = -(-n // rows)
  return -(-n // blocks)


def peak_bytes() -> dict:
  """Peak memory so far: ``device`` (accelerator allocator, or None) and ``host`` (RSS).

  The host figure is the process's peak resident set, which on a CPU run is
  where the arrays live.
  """
  device = None
  dev = jax.devices()[0]
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    device = stats.get("peak_bytes_in_use")
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  host = rss if sys.platform == "darwin" else rss * 1024   # bytes on macOS, KiB on Linux
  return {"device": None if device is None else int(device), "host": int(host)}
