r"""The Deep RFM driver: Algorithm 1's layer loop, records, Gram pictures and resume.

One loop for every placement of the rows: :class:`OneDevice` runs the jitted
layer :func:`dnc_jax.rfm.layer.rfm_layer` on ordinary arrays; a device mesh
(:class:`dnc_jax.rfm.sharded.MeshPlacement`) runs the ``shard_map`` layer with a
Cholesky or conjugate-gradient solve. Layer ``l`` draws its features from
``fold_in(key, l)`` on either, so a run continues exactly from a saved
:class:`DeepRFMState` and one seed gives the same run on any number of devices
(up to rounding).

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Algorithm 1.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import metrics as metrics_lib
from dnc_jax import validate
from dnc_jax.errors import ConfigError
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import memory as memory_lib
# Re-exported: the options and the layer are part of the driver's interface.
from dnc_jax.rfm.config import (PRESETS, REPRESENTATIONS, DeepRFMConfig,  # noqa: F401
                                SolverConfig, preset_config)
from dnc_jax.rfm.layer import (HIGHEST, AgopError, LayerOutput, agop_error,  # noqa: F401
                               check_agop, final_krr, layer_flops, normalise_rows, rfm_layer)


class DeepRFMResult(NamedTuple):
  """Result of :func:`deep_rfm`.

  Attributes:
    layers: one dict per layer: ``layer``, ``nc1``/``nc2`` per representation,
      ``metrics`` (every collapse metric per representation), ``train_acc``,
      ``test_acc``, ``seconds``, ``dim_in``, ``dim_out``.
    final: ``train_acc``, ``test_acc`` and ``seconds`` of the final KRR.
    ms: the layers' ``M`` (``[d_l, d_l]`` NumPy arrays) when ``keep_m``, else ``None``.
    grams: ``{layer: (gram [m, m], labels [m])}`` Gram pictures of ``input``
      (layer ``L + 1`` is the final representation).
    grams_agop: the same for ``agop``, :math:`\tilde X_l = X_l M_l^{1/2}` (the
      representation of the paper's Gram figures), at the layers ``≤ L`` of
      ``config.gram_layers``.
  """
  layers: list
  final: dict
  ms: list | None
  grams: dict
  grams_agop: dict | None = None


class DeepRFMState(NamedTuple):
  """Where a run stands after ``layer`` layers: enough to continue it exactly.

  Attributes:
    layer: layers done.
    x: ``[N, D]`` training representation ``X_{layer+1}``.
    x_test: ``[N_test, D]`` test representation.
    layers: the records of the layers done.
    grams: Gram pictures recorded so far.
    ms: the layers' ``M`` so far (when ``keep_m``), else ``None``.
    grams_agop: Gram pictures of ``agop`` recorded so far (``None``: none).
  """
  layer: int
  x: np.ndarray
  x_test: np.ndarray
  layers: list
  grams: dict
  ms: list | None
  grams_agop: dict | None = None


def resume_point(resume: DeepRFMState | None, config: DeepRFMConfig, n: int):
  """``(first layer to run, layer records, grams, ms)`` for a fresh or resumed run."""
  if resume is None:
    return 1, [], {}, [] if config.keep_m else None
  if resume.layer > config.depth or resume.x.shape[0] != n:
    raise ConfigError(f"cannot resume: the saved state (layer {resume.layer}, "
                      f"{resume.x.shape[0]} rows) does not fit this run (depth "
                      f"{config.depth}, {n} rows)")
  ms = list(resume.ms or []) if config.keep_m else None
  return resume.layer + 1, list(resume.layers), dict(resume.grams), ms


def _accuracy(pred, labels) -> float | None:
  if labels is None or len(labels) == 0:
    return None
  return float(np.mean(np.argmax(np.asarray(pred), axis=1) == np.asarray(labels)))


def _floating(x, name: str):
  """``x`` as a floating array: integer or boolean data (e.g. raw pixels) become float32, or
  float64 with x64 enabled; anything else is refused with a one-line error."""
  dt = getattr(x, "dtype", None)
  if dt is None:
    x = np.asarray(x)
    dt = x.dtype
  if jnp.issubdtype(dt, jnp.floating):
    return x
  if jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.bool_):
    return np.asarray(x, dtype=jax.dtypes.canonicalize_dtype(jnp.float64))
  raise ConfigError(f"{name} must be numeric, got dtype {dt}; convert with {name}.astype(np.float32)")


def _check_data(x, labels, x_test, labels_test, num_classes):
  metrics_lib.check_labels(x, labels, num_classes)  # shapes, labels and NaN/Inf of x
  if x_test is not None:
    if x_test.ndim != 2 or x_test.shape[1] != x.shape[1]:
      raise ConfigError(f"x_test must have shape [n_test, {x.shape[1]}], got {x_test.shape}")
    validate.finite(x_test, "x_test")
    if labels_test is None or np.asarray(labels_test).shape != (x_test.shape[0],):
      raise ConfigError("labels_test must be given with x_test, shape [n_test]")


class Placement(Protocol):
  """Where the rows live and which layer runs on them (one device, or a mesh)."""

  def place(self, x, x_test) -> tuple[Any, Any]:
    """``(x, x_test)`` placed for the layer."""

  def place_targets(self, y, labels) -> tuple[Any, Any]:
    """``(y [N, K], labels [N])`` placed for the layer."""

  def layer(self, x, x_test, y, labels, key, config: DeepRFMConfig,
            layer: int) -> tuple[Any, Any, LayerOutput, dict]:
    """``(x_next, x_test_next, output, extra record fields)``; raises SolveError."""

  def final(self, x, x_test, y, labels, config: DeepRFMConfig) -> tuple[Any, Any, dict]:
    """``(train_pred, test_pred, extra fields)`` of the final KRR; raises SolveError."""

  def host(self, a, n: int | None = None) -> np.ndarray:
    """The first ``n`` rows of ``a`` (all when ``None``) as a NumPy array."""

  def gram(self, z, labels: np.ndarray, num_classes: int, per_class: int):
    """Fig. 1's Gram picture of the rows ``z``: ``(gram [m, m], labels [m])``."""


class OneDevice:
  """Rows as ordinary arrays on the default device; the Cholesky layer :func:`rfm_layer`."""

  def __init__(self, config: DeepRFMConfig, n: int, n_test: int, num_classes: int, dtype):
    self.config, self.n, self.n_test, self.k, self.dtype = config, n, n_test, num_classes, dtype
    self.budget = memory_lib.budget_bytes(config.memory_gb)

  def plan(self, d_in: int) -> memory_lib.LayerPlan:
    """The layer's AGOP block size and memory estimate (refuses a layer that does not fit)."""
    return memory_lib.plan_layer(self.n, self.n_test, d_in, self.config.width or d_in, self.k,
                                 itemsize=jnp.dtype(self.dtype).itemsize, budget=self.budget,
                                 batch_size=self.config.agop_batch_size, agop=self.config.agop)

  def place(self, x, x_test):
    return jnp.asarray(x, self.dtype), jnp.asarray(x_test, self.dtype)

  def place_targets(self, y, labels):
    return y, labels

  def layer(self, x, x_test, y, labels, key, config, layer):
    plan = self.plan(x.shape[1])
    # "auto" becomes what the plan chose: the closed form when it fits the budget.
    config = dataclasses.replace(config, agop=plan.agop)
    x_next, xt_next, out = rfm_layer(x, x_test, y, labels, key, config, batch_size=plan.batch_size)
    jax.block_until_ready(x_next)
    if not bool(out.solve_ok):
      raise krr_lib.solve_error(config.ridge, self.n, f"layer {layer}", dtype=self.dtype)
    return x_next, xt_next, out, {"agop": plan.agop, "agop_batch_size": plan.batch_size,
                                  "memory_estimate_bytes": plan.estimate_bytes}

  def final(self, x, x_test, y, labels, config):
    train_pred, test_pred, ok = final_krr(x, x_test, y, labels, config.bandwidth, config.ridge,
                                          kernel=config.kernel, num_classes=self.k)
    if not bool(ok):
      raise krr_lib.solve_error(config.ridge, self.n, "final KRR", dtype=self.dtype)
    return train_pred, test_pred, {}

  def host(self, a, n=None):
    return np.asarray(a)

  def gram(self, z, labels, num_classes, per_class):
    g, gl = metrics_lib.gram_picture(z, labels, num_classes=num_classes, per_class=per_class)
    return np.asarray(g), gl


def _placement(config, mesh, n, n_test, num_classes, dtype, d_in) -> Placement:
  if mesh is None and config.solver.method == "cholesky":
    placement = OneDevice(config, n, n_test, num_classes, dtype)
    placement.plan(d_in)   # refuses a problem that does not fit before any work
    return placement
  from dnc_jax.rfm import sharded
  return sharded.MeshPlacement(config, mesh if mesh is not None else sharded.make_mesh(1), n,
                               n_test, num_classes, dtype)


def _prepare(x, labels, x_test, labels_test, num_classes):
  """Checked arrays: ``(x, labels, x_test, labels_test, num_classes)``."""
  x = _floating(x, "x")
  x_test = None if x_test is None else _floating(x_test, "x_test")
  labels_np = np.asarray(labels)
  if num_classes is None:
    num_classes = int(labels_np.max()) + 1 if labels_np.size else 0
  _check_data(x, labels_np, x_test, labels_test, num_classes)
  x = jnp.asarray(x)
  if x_test is None:
    x_test = jnp.zeros((0, x.shape[1]), x.dtype)
    labels_test = np.zeros((0,), np.int32)
  return x, labels_np, jnp.asarray(x_test, x.dtype), np.asarray(labels_test), num_classes


def _check_range(config: DeepRFMConfig, dtype) -> None:
  """Refuses a bandwidth, ridge or cos scale that the run's float type cannot hold."""
  info = np.finfo(dtype)
  for name in ("bandwidth", "ridge", "sigma"):
    value = float(getattr(config, name))
    if value > float(info.max):
      raise ConfigError(f"{name} {value:g} overflows {info.dtype.name} (largest {info.max:.3g}); "
                        f"use a smaller {name} or float64 (jax x64; bin/deep_rfm --precision "
                        "float64)")


_normalised = jax.jit(normalise_rows)


@jax.jit
def _gram_inputs(x, root):
  """``(X_l, X_l M^{1/2})`` with ``X_l`` row-normalised, for a Gram layer's two pictures."""
  xs = normalise_rows(x)
  return xs, jnp.matmul(xs, root, precision=HIGHEST)


def _record(layer, out, extra, *, seconds, placement, labels, labels_test, dims) -> dict:
  """One layer's record (the order of its keys is the order of metrics.csv's columns)."""
  n, n_test, d_in, d_out, k = dims
  mets = jax.tree.map(float, out.metrics)
  record = {
      "layer": layer,
      "nc1": {r: mets[r]["nc1"] for r in REPRESENTATIONS},
      "nc2": {r: mets[r]["nc2"] for r in REPRESENTATIONS},
      "train_acc": _accuracy(placement.host(out.train_pred, n), labels),
      "test_acc": _accuracy(placement.host(out.test_pred, n_test), labels_test),
      "seconds": seconds,
      "dim_in": d_in, "dim_out": d_out,
      "gflop": layer_flops(n, n_test, d_in, k, d_out, agop=extra.get("agop", "rules"))["total"]
               / 1e9,
  }
  return {**record, **extra, "metrics": mets}


def deep_rfm(x, labels, config: DeepRFMConfig | None = None, *, key: jax.Array,
             x_test=None, labels_test=None, num_classes: int | None = None,
             callback: Callable[[dict], None] | None = None,
             resume: DeepRFMState | None = None,
             on_state: Callable[[DeepRFMState], None] | None = None,
             mesh=None) -> DeepRFMResult:
  r"""Runs Deep RFM (Algorithm 1) for ``config.depth`` layers plus the final KRR.

  Args:
    x: ``[N, d]`` training rows (float32, or float64 with x64 enabled).
    labels: ``[N]`` integer labels in ``0..K-1``.
    config: options (default: the ``reference`` preset).
    key: PRNG key; layer ``l``'s features use ``fold_in(key, l)``.
    x_test: optional ``[N_test, d]`` test rows, pushed through the same maps.
    labels_test: ``[N_test]`` labels of ``x_test``.
    num_classes: ``K`` (default: ``max(labels) + 1``).
    callback: called with each layer's record as soon as it is done.
    resume: a :class:`DeepRFMState` saved by ``on_state``; the run continues
      from it with the same ``key`` and gives the same numbers as an
      uninterrupted run (layer ``l`` always uses ``fold_in(key, l)``).
    on_state: called with the :class:`DeepRFMState` after each layer (e.g. to
      checkpoint it; on a mesh it gathers the rows to the host, ``N D`` per layer).
    mesh: a 1-D device mesh with axis ``"rows"`` (:func:`dnc_jax.rfm.sharded.make_mesh`)
      to shard the rows over. ``None``: one device, unless ``config.solver``
      asks for CG (or ``auto`` picks it), which runs on a one-device mesh.

  Returns:
    :class:`DeepRFMResult`. On a mesh each layer record also has ``solve``
    (``solver``, ``iterations``, ``residual``, ``residuals``) and ``devices``; on
    one device, ``agop_batch_size`` and ``memory_estimate_bytes``.

  Raises:
    ConfigError: invalid data or options (before any work).
    SolveError: a kernel system could not be solved: Cholesky broke down or CG
      did not converge (names the layer and suggests a fix).
  """
  config = (config or preset_config("reference")).validate()
  x, labels_np, x_test, labels_test, num_classes = _prepare(x, labels, x_test, labels_test,
                                                            num_classes)
  n, n_test, dtype = x.shape[0], x_test.shape[0], x.dtype
  _check_range(config, dtype)
  lab = jnp.asarray(labels_np, jnp.int32)
  y = 2.0 * jax.nn.one_hot(lab, num_classes, dtype=dtype) - 1.0
  start, layers, grams, ms = resume_point(resume, config, n)
  d_in = (x if resume is None else resume.x).shape[1]
  place = _placement(config, mesh, n, n_test, num_classes, dtype, d_in)
  grams_agop = dict(resume.grams_agop or {}) if resume is not None else {}
  if resume is not None:
    x, x_test = resume.x, resume.x_test
  x, x_test = place.place(x, x_test)
  y, lab = place.place_targets(y, lab)
  per_class = config.gram_per_class

  for layer in range(start, config.depth + 1):
    t0 = time.perf_counter()
    x_next, xt_next, out, extra = place.layer(x, x_test, y, lab, jax.random.fold_in(key, layer),
                                              config, layer)
    check_agop(out.m, layer, config)
    record = _record(layer, out, extra, seconds=time.perf_counter() - t0, placement=place,
                     labels=labels_np, labels_test=labels_test,
                     dims=(n, n_test, x.shape[1], int(x_next.shape[1]), num_classes))
    if layer in config.gram_layers:
      # The layer's own root: a second eigh here cost as much as the rest of the picture.
      root = metrics_lib.psd_sqrt(out.m) if out.root is None else out.root
      xs, xa = _gram_inputs(x, root)
      grams[layer] = place.gram(xs, labels_np, num_classes, per_class)
      grams_agop[layer] = place.gram(xa, labels_np, num_classes, per_class)
    if layer == config.depth:
      # The final representation's picture is in the last state, so that a caller can
      # draw every figure while the final KRR runs.
      grams[layer + 1] = place.gram(_normalised(x_next), labels_np, num_classes, per_class)
    if ms is not None:
      ms.append(place.host(out.m))
    layers.append(record)
    x, x_test = x_next, xt_next
    if on_state is not None:
      on_state(DeepRFMState(layer, place.host(x, n), place.host(x_test, n_test), list(layers),
                            dict(grams), None if ms is None else list(ms), dict(grams_agop)))
    if callback is not None:
      callback(record)

  if config.depth + 1 not in grams:   # resumed from a state saved before this picture existed
    grams[config.depth + 1] = place.gram(_normalised(x), labels_np, num_classes, per_class)
  t0 = time.perf_counter()
  train_pred, test_pred, extra = place.final(x, x_test, y, lab, config)
  final = {"train_acc": _accuracy(place.host(train_pred, n), labels_np),
           "test_acc": _accuracy(place.host(test_pred, n_test), labels_test),
           "seconds": time.perf_counter() - t0, **extra}
  return DeepRFMResult(layers, final, ms, grams, grams_agop)


def sharded_deep_rfm(x, labels, config: DeepRFMConfig | None = None, *, key: jax.Array,
                     mesh=None, devices: int | Sequence[jax.Device] | None = None,
                     solver: str | None = None, cg_tol: float | None = None,
                     cg_max_iter: int | None = None, cg_rank: int | None = None,
                     preconditioner: str | None = None, memory_bytes: int | None = None,
                     **kwargs) -> DeepRFMResult:
  """:func:`deep_rfm` with the rows sharded over ``mesh`` (default: ``make_mesh(devices)``).

  Args:
    solver, cg_tol, cg_max_iter, cg_rank, preconditioner: override the fields of
      ``config.solver`` (:class:`SolverConfig`) that are given.
    memory_bytes: per-device memory budget (overrides ``config.memory_gb``).
    kwargs: as :func:`deep_rfm` (``x_test``, ``labels_test``, ``num_classes``,
      ``callback``, ``resume``, ``on_state``).
  """
  from dnc_jax.rfm import sharded
  config = config or preset_config("reference")
  given = dict(method=solver, cg_tol=cg_tol, cg_max_iter=cg_max_iter, cg_rank=cg_rank,
               preconditioner=preconditioner)
  solver_cfg = dataclasses.replace(config.solver, **{k: v for k, v in given.items()
                                                     if v is not None})
  config = dataclasses.replace(config, solver=solver_cfg)
  if memory_bytes is not None:
    config = dataclasses.replace(config, memory_gb=memory_bytes / memory_lib.GiB)
  mesh = mesh if mesh is not None else sharded.make_mesh(devices)
  return deep_rfm(x, labels, config, key=key, mesh=mesh, **kwargs)


def deep_rfm_cg(x, labels, config: DeepRFMConfig | None = None, *, key: jax.Array,
                devices: int | Sequence[jax.Device] | None = 1, **kwargs) -> DeepRFMResult:
  """Deep RFM with every kernel system solved by preconditioned CG (one device by default).

  Shorthand for ``sharded_deep_rfm(..., solver="cg")``; ``kwargs`` as there.
  """
  return sharded_deep_rfm(x, labels, config, key=key, devices=devices, solver="cg", **kwargs)
