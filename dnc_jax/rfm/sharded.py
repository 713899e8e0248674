r"""Deep RFM with the training rows sharded over a 1-D device mesh.

The same Algorithm 1 as :mod:`dnc_jax.rfm.driver`, written with JAX's SPMD
machinery: a :class:`jax.sharding.Mesh` with one axis ``"rows"``, arrays placed
with :class:`jax.sharding.NamedSharding`, and each layer one ``jit`` of a
``jax.shard_map`` body with explicit collectives. On ``P`` devices, with
``N`` training rows (padded to a multiple of ``P``), ``d`` input features,
``D`` feature width and ``K`` classes:

=============================  ==========================  ===========================
what                           where                       communication per layer
=============================  ==========================  ===========================
rows ``X_l``, targets, labels  sharded ``[N/P, ·]``        —
class counts and sums          psum                        ``K(d+1)``
all rows for kernel columns    all-gather ``[N, d]``       ``N d``
kernel row block               sharded ``[N/P, N]``        —
Cholesky (``solver=cholesky``) all-gather ``[N, N]``,      ``N²``
                               factor replicated
CG (``solver=cg``)             products on row blocks      per iteration ``N K`` +
                                                           ``3K + rK`` (psum)
``α``                          all-gather ``[N, K]``       ``N K``
AGOP (own rows' ``JᵀJ``)       psum ``[d, d]``             ``d²``
``M``, ``M^{1/2}``, weights    replicated                  — (same key everywhere)
``X M^{1/2}``, ``Φ``           sharded                     —
metrics (3 representations)    psum of class statistics    ``3(K d + 2K + K² + d)``
=============================  ==========================  ===========================

The training rows themselves are all-gathered once per layer (``N d`` floats
per device): the kernel predictor's centres are all rows. The ``[N, N]`` kernel
matrix is never on one device with ``solver="cg"``.

Distances use the class-centred frame of :mod:`dnc_jax.rfm.kernels` built from the
psum-reduced class means, exactly as the one-device layer does, and the self
term of the AGOP is masked by **global** row index, so on float64 the sharded
layer reproduces :func:`dnc_jax.rfm.driver.rfm_layer` to rounding (tests check
relative ``1e-8``). Collapse metrics come from per-class sufficient statistics
reduced across devices — counts and sums first, then a second pass over the
rows for the squared within-class and total deviations (stable, unlike
``E[x²] - E[x]²``) — so a class with no rows on some device is handled.

Several hosts: call :func:`jax.distributed.initialize` on every host before
anything else, then ``make_mesh()`` spans every device of every host; each host
passes the same full arrays (they are placed with
:func:`jax.make_array_from_callback`, so each host only transfers its own
shards). See ``docs/scaling.md``.

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Algorithm 1.
  JAX documentation: "Distributed arrays and automatic parallelization",
  "Manual parallelism with shard_map", "Multi-host and multi-process environments".
"""
from __future__ import annotations

import functools
import logging
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dnc_jax.rfm import features as features_lib
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax import metrics as metrics_lib
from dnc_jax.rfm import solvers
from dnc_jax.rfm.agop import agop_sum, kernel_predictor
from dnc_jax.errors import ConfigError

# The package re-exports the function `deep_rfm`, which shadows the module name.
from dnc_jax.rfm import driver as drfm

HIGHEST = jax.lax.Precision.HIGHEST
AXIS = "rows"
log = logging.getLogger(__name__)

_shard_map = getattr(jax, "shard_map", None)
if _shard_map is None:  # older JAX
  from jax.experimental.shard_map import shard_map as _shard_map  # type: ignore


# -- meshes and placement -----------------------------------------------------------

def make_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"rows"``.

  Args:
    devices: ``None`` — every device (of every host after
      :func:`jax.distributed.initialize`); an integer ``n`` — the first ``n``
      of :func:`jax.devices`; or a sequence of devices.
  """
  all_devices = jax.devices()
  if devices is None:
    chosen = all_devices
  elif isinstance(devices, (int, np.integer)):
    n = int(devices)
    if not 1 <= n <= len(all_devices):
      raise ConfigError(
          f"--devices {n} asked for, but {len(all_devices)} device(s) are visible "
          f"({all_devices[0].platform}); on CPU, simulate more with "
          f"XLA_FLAGS=--xla_force_host_platform_device_count={max(n, 2)} set before JAX starts")
    chosen = all_devices[:n]
  else:
    chosen = list(devices)
    if not chosen:
      raise ConfigError("the device list is empty")
  return Mesh(np.asarray(chosen, dtype=object), (AXIS,))


def _mesh_size(mesh: Mesh) -> int:
  return int(mesh.shape[AXIS])


def padded_rows(n: int, num_devices: int) -> int:
  """``n`` rounded up to a multiple of the device count (at least one row each)."""
  return max(1, -(-n // num_devices)) * num_devices


def shard_rows(a, mesh: Mesh, n_pad: int, fill=0) -> jax.Array:
  """Pads host array ``a`` ``[n, ...]`` to ``n_pad`` rows and shards the rows.

  Uses :func:`jax.make_array_from_callback`, which works on several hosts when
  every host holds the same ``a`` (each host transfers only its own shards).
  """
  a = np.asarray(a)
  if a.shape[0] < n_pad:
    pad = np.full((n_pad - a.shape[0],) + a.shape[1:], fill, a.dtype)
    a = np.concatenate([a, pad])
  spec = P(AXIS, *([None] * (a.ndim - 1)))
  return jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec), lambda idx: a[idx])


def to_host(a: jax.Array) -> np.ndarray:
  """A (possibly multi-host) array as one NumPy array on this host."""
  if getattr(a, "is_fully_addressable", True):
    return np.asarray(a)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


# -- per-device pieces (run inside shard_map) -----------------------------------------

def _frame_from_means(x, labels, means, num_classes) -> kernels_lib.CentredFrame:
  # The one-device frame, with the (psum-reduced) class means of all rows.
  return kernels_lib.centred_frame(x, labels, num_classes, means=means)


def _class_sums(z, labels, w, num_classes, axis_name):
  """psum-reduced ``counts [K]`` and ``sums [K, d]`` of the rows with weight ``w``."""
  counts = jax.ops.segment_sum(w, labels, num_segments=num_classes)
  sums = jax.ops.segment_sum(z * w[:, None], labels, num_segments=num_classes)
  return jax.lax.psum(counts, axis_name), jax.lax.psum(sums, axis_name)


def sharded_collapse(z, labels, w, *, num_classes: int, global_mean: str, n_total: int,
                     axis_name: str = AXIS) -> dict:
  r"""Every metric of :func:`dnc_jax.metrics.collapse_from_stats`, from sharded rows.

  Inside ``shard_map``: ``z`` ``[n_loc, d]``, ``labels`` ``[n_loc]``, ``w``
  ``[n_loc]`` (1 for real rows, 0 for padding). Pass 1 reduces counts and
  sums per class (``psum``); pass 2, with the means known, reduces per-class
  squared deviations :math:`\sum_{i\in c}\|x_i-\mu_c\|^2`, the total
  :math:`\sum_i\|x_i-\mu_G\|^2` and the ``K × K`` matrix
  :math:`P^\top P`, :math:`P = (X - \mu_{c})(\mu - \mu_G)^\top`. A class with
  no rows on a device contributes zeros there.
  """
  dtype = z.dtype
  k = num_classes
  counts, sums = _class_sums(z, labels, w, k, axis_name)
  means = sums / counts[:, None]
  if global_mean == "sample":
    mu_g = jax.lax.psum(jnp.sum(z * w[:, None], axis=0), axis_name) / n_total
  elif global_mean == "class_means":
    mu_g = jnp.mean(means, axis=0)
  else:
    raise ConfigError(f"unknown global mean {global_mean!r}; choose one of "
                      f"{', '.join(metrics_lib.GLOBAL_MEANS)}")
  within = (z - means[labels]) * w[:, None]
  class_sq = jax.lax.psum(jax.ops.segment_sum(jnp.sum(within * within, axis=1), labels,
                                              num_segments=k), axis_name)
  xc = (z - mu_g) * w[:, None]
  tr_t_sum = jax.lax.psum(jnp.sum(xc * xc), axis_name)
  centred = means - mu_g
  p = jnp.matmul(within, centred.T, precision=HIGHEST)                 # [n_loc, K]
  a = jax.lax.psum(jnp.matmul(p.T, p, precision=HIGHEST), axis_name) / n_total
  # From here on the formulas of metrics.collapse_from_stats, on replicated [K, ·] data.
  class_var = class_sq / counts
  tr_w = jnp.sum(class_sq) / n_total
  tr_b = jnp.sum(centred * centred) / k
  tr_t = tr_t_sum / n_total
  g = jnp.matmul(centred, centred.T, precision=HIGHEST)
  gp = metrics_lib._pinv_sym(g)
  papyan = jnp.trace(jnp.matmul(jnp.matmul(gp, gp, precision=HIGHEST), a, precision=HIGHEST))
  diff = means[:, None, :] - means[None, :, :]
  dist2 = jnp.sum(diff * diff, axis=-1)
  off = ~jnp.eye(k, dtype=bool)
  ratio = (class_var[:, None] + class_var[None, :]) / (2.0 * jnp.where(off, dist2, 1.0))
  cdnv = jnp.sum(jnp.where(off, ratio, 0.0)) / (k * (k - 1))
  mbar = centred / jnp.linalg.norm(centred, axis=1, keepdims=True)
  gram = jnp.matmul(mbar, mbar.T, precision=HIGHEST)
  nc2 = jnp.linalg.norm(gram - metrics_lib._etf(k, dtype))
  nc2_orth = jnp.linalg.norm(gram - jnp.eye(k, dtype=dtype))
  return {
      "nc1": tr_w / tr_b, "nc1_papyan": papyan, "cdnv": cdnv,
      "nc2": nc2, "nc2_orthogonal": nc2_orth,
      "tr_w": tr_w, "tr_b": tr_b, "tr_t": tr_t,
      "tr_w_over_t": tr_w / tr_t, "tr_b_over_t": tr_b / tr_t,
  }


def _normalise(x):
  return drfm.normalise_rows(x)


def _layer_body(x, xt, y, labels, valid, valid_t, params, bandwidth, ridge, *, kernel,
                features, num_classes, global_mean, batch_size, n_valid, solver, cg,
                last):
  """One layer on this device's rows (inside ``shard_map`` over ``AXIS``)."""
  dtype = x.dtype
  n_loc = x.shape[0]
  dev = jax.lax.axis_index(AXIS)
  row0 = (dev * n_loc).astype(jnp.int32)
  gidx = row0 + jnp.arange(n_loc, dtype=jnp.int32)
  w = valid.astype(dtype)
  x = _normalise(x)
  xt = _normalise(xt)

  # Centred frame of all rows, from the psum-reduced class means.
  counts, sums = _class_sums(x, labels, w, num_classes, AXIS)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  x_full = jax.lax.all_gather(x, AXIS, axis=0, tiled=True)              # [N, d]
  lab_full = jax.lax.all_gather(labels, AXIS, axis=0, tiled=True)
  valid_full = jax.lax.all_gather(valid, AXIS, axis=0, tiled=True)
  frame = _frame_from_means(x_full, lab_full, means, num_classes)
  kfn = kernels_lib.kernel_from_sq(kernel)
  n_pad = x_full.shape[0]

  if solver == "cholesky":
    # The one-device path: the whole matrix, symmetrised, zero diagonal; padding
    # rows/columns replaced by the identity so their α is exactly 0.
    sq_loc = kernels_lib.frame_sq_distances(frame, x, labels)           # [n_loc, N]
    sq = jax.lax.all_gather(sq_loc, AXIS, axis=0, tiled=True)          # [N, N]
    sq = 0.5 * (sq + sq.T)
    sq = jnp.where(jnp.eye(n_pad, dtype=bool), 0.0, sq)
    both = valid_full[:, None] & valid_full[None, :]
    kmat = jnp.where(both, kfn(sq, bandwidth), jnp.eye(n_pad, dtype=dtype))
    y_full = jax.lax.all_gather(y * w[:, None], AXIS, axis=0, tiled=True)
    alpha, ok = krr_lib.cholesky_solve(kmat, y_full, ridge)
    train_pred = jnp.matmul(jax.lax.dynamic_slice_in_dim(kmat, row0, n_loc, axis=0), alpha,
                            precision=HIGHEST)
    info = (jnp.asarray(0, jnp.int32), jnp.asarray(jnp.nan, dtype),
            jnp.full((cg.max_iter + 1,), jnp.nan, dtype))
  else:
    alpha_loc, train_pred, res = solvers.cg_local(
        frame, x_full, x, labels, row0, valid, valid_full, y, kernel=kernel,
        bandwidth=bandwidth, ridge=ridge, n_valid=n_valid, options=cg, axis_name=AXIS)
    alpha = jax.lax.all_gather(alpha_loc, AXIS, axis=0, tiled=True)
    ok = res.converged
    info = (res.iterations, res.residual, res.residuals)

  ct = kernels_lib.nearest_centre(frame, xt)
  test_pred = solvers.kernel_matvec(frame, xt, ct, None, alpha, kernel=kernel,
                                    bandwidth=bandwidth, block_rows=cg.block_rows)
  if last:
    return train_pred, test_pred, ok, info

  # AGOP: own rows' JᵀJ with the self term masked by GLOBAL index, then psum.
  f = kernel_predictor(x_full, alpha, kernel=kernel, bandwidth=bandwidth, exclude_self=True,
                       frame=frame)

  def f_local(xi, i):
    # agop_sum passes local indices; the self term is masked by global index.
    return f(xi, i + row0.astype(i.dtype)) * w[jnp.minimum(i, n_loc - 1)]

  m = jax.lax.psum(agop_sum(f_local, x, batch_size=batch_size), AXIS) / n_valid
  m = m / jnp.max(m)
  root = metrics_lib.psd_sqrt(m)
  xa = jnp.matmul(x, root, precision=HIGHEST)
  xta = jnp.matmul(xt, root, precision=HIGHEST)
  xn = features_lib.apply_features(params, xa, features)
  xtn = features_lib.apply_features(params, xta, features)

  def collapse(z):
    return sharded_collapse(z, labels, w, num_classes=num_classes, global_mean=global_mean,
                            n_total=n_valid)

  mets = {"input": collapse(x), "agop": collapse(xa), "features": collapse(xn)}
  return xn, xtn, m, mets, train_pred, test_pred, ok, info


_ROW = P(AXIS)
_ROW2 = P(AXIS, None)
_REP = P()


@functools.partial(jax.jit, static_argnames=(
    "mesh", "kernel", "features", "width", "weight_init", "num_classes", "global_mean",
    "batch_size", "n_valid", "solver", "cg", "last"))
def _sharded_layer(x, xt, y, labels, valid, valid_t, key, bandwidth, ridge, sigma, *, mesh,
                   kernel, features, width, weight_init, num_classes, global_mean, batch_size,
                   n_valid, solver, cg, last=False):
  # The random weights are drawn once, outside the per-device body, and
  # replicated: every device applies the same Φ_l.
  params = features_lib.init_features(key, features, x.shape[1], width, init=weight_init,
                                      sigma=sigma, dtype=x.dtype)
  body = functools.partial(
      _layer_body, kernel=kernel, features=features, num_classes=num_classes,
      global_mean=global_mean, batch_size=batch_size, n_valid=n_valid, solver=solver, cg=cg,
      last=last)
  in_specs = (_ROW2, _ROW2, _ROW2, _ROW, _ROW, _ROW, _REP, _REP, _REP)
  info_specs = (_REP, _REP, _REP)
  if last:
    out_specs = (_ROW2, _ROW2, _REP, info_specs)
  else:
    out_specs = (_ROW2, _ROW2, _REP, _REP, _ROW2, _ROW2, _REP, info_specs)
  fn = _shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
  return fn(x, xt, y, labels, valid, valid_t, params, bandwidth, ridge)


# -- public entry points ---------------------------------------------------------------

def _cg_opts(n_pad, num_devices, d, itemsize, *, solver, cg_tol, cg_max_iter, cg_rank,
             preconditioner, memory_bytes) -> solvers.CGOptions:
  return solvers.cg_options(n_pad // num_devices, n_pad, d, itemsize, tol=cg_tol,
                            max_iter=cg_max_iter if solver == "cg" else 1,
                            preconditioner=preconditioner, rank=cg_rank,
                            memory_bytes=memory_bytes)


def _resolve_solver(solver, n, itemsize, memory_bytes):
  solvers.check_solver(solver)
  if solver == "auto":
    return solvers.choose_solver(n, itemsize=itemsize, memory_bytes=memory_bytes)
  return solver


def sharded_rfm_layer(x, x_test, y, labels, key, bandwidth, ridge, sigma, *, mesh: Mesh,
                      kernel: str, features: str, width: int, weight_init: str,
                      num_classes: int, global_mean: str, batch_size: int,
                      solver: str = "cholesky", cg_tol: float | None = None,
                      cg_max_iter: int = 2000, cg_rank: int = 1000,
                      preconditioner: str = "nystrom", memory_bytes: int | None = None):
  r""":func:`dnc_jax.rfm.driver.rfm_layer` with the rows sharded over ``mesh``.

  Same arguments and outputs as ``rfm_layer`` (``x`` ``[N, d]``, ``x_test``
  ``[N_test, d]``, ``y`` ``[N, K]``, ``labels`` ``[N]``); rows are padded to a
  multiple of the device count and the padding removed from the outputs.

  Args:
    mesh: a 1-D mesh with axis ``"rows"`` (:func:`make_mesh`).
    solver: ``"cholesky"``, ``"cg"`` or ``"auto"``.
    cg_tol, cg_max_iter, cg_rank, preconditioner, memory_bytes: CG options
      (:func:`dnc_jax.rfm.solvers.cg_options`).

  Returns:
    ``(x_next [N, D], x_test_next [N_test, D], LayerOutput)``; ``solve_ok`` is
    False when Cholesky broke down or CG hit its cap.
  """
  x = np.asarray(x)
  n = x.shape[0]
  nd = _mesh_size(mesh)
  n_pad = padded_rows(n, nd)
  nt = np.asarray(x_test).shape[0]
  nt_pad = padded_rows(nt, nd)
  itemsize = x.dtype.itemsize
  solver = _resolve_solver(solver, n, itemsize, memory_bytes)
  cg = _cg_opts(n_pad, nd, x.shape[1], itemsize, solver=solver, cg_tol=cg_tol,
                cg_max_iter=cg_max_iter, cg_rank=cg_rank, preconditioner=preconditioner,
                memory_bytes=memory_bytes)
  args = (shard_rows(x, mesh, n_pad), shard_rows(np.asarray(x_test, x.dtype), mesh, nt_pad),
          shard_rows(np.asarray(y, x.dtype), mesh, n_pad),
          shard_rows(np.asarray(labels, np.int32), mesh, n_pad),
          shard_rows(np.ones(n, bool), mesh, n_pad, fill=False),
          shard_rows(np.ones(nt, bool), mesh, nt_pad, fill=False))
  xn, xtn, m, mets, tp, ttp, ok, _ = _sharded_layer(
      *args, key, bandwidth, ridge, sigma, mesh=mesh, kernel=kernel, features=features,
      width=width, weight_init=weight_init, num_classes=num_classes, global_mean=global_mean,
      batch_size=batch_size, n_valid=n, solver=solver, cg=cg)
  return xn[:n], xtn[:nt], drfm.LayerOutput(m, mets, tp[:n], ttp[:nt], ok)


def _gram(x_pad, n, labels_np, num_classes, per_class):
  """Fig. 1's Gram picture from sharded rows: only the chosen rows come to the host."""
  order = np.argsort(labels_np, kind="stable")
  if per_class is not None:
    order = np.concatenate([order[labels_np[order] == c][:per_class]
                            for c in range(num_classes)])
  xs = drfm.normalise_rows(x_pad)
  mean = jnp.sum(xs[:n], axis=0) / n          # the sample mean of ALL rows
  xs = xs[jnp.asarray(order)] - mean
  xs = xs / jnp.linalg.norm(xs, axis=1, keepdims=True)
  return to_host(jnp.matmul(xs, xs.T, precision=HIGHEST)), labels_np[order]


def sharded_deep_rfm(x, labels, config: drfm.DeepRFMConfig | None = None, *, key: jax.Array,
                     x_test=None, labels_test=None, num_classes: int | None = None,
                     mesh: Mesh | None = None, devices: int | Sequence[jax.Device] | None = None,
                     solver: str = "cholesky", cg_tol: float | None = None,
                     cg_max_iter: int = 2000, cg_rank: int = 1000,
                     preconditioner: str = "nystrom", memory_bytes: int | None = None,
                     callback: Callable[[dict], None] | None = None,
                     resume=None, on_state=None) -> drfm.DeepRFMResult:
  r""":func:`dnc_jax.rfm.driver.deep_rfm` on a device mesh, with a choice of solver.

  The rows (train and test) stay sharded across layers; only metrics,
  predictions for the accuracies and the Gram-picture rows come to the host.
  Layer ``l`` uses ``fold_in(key, l)`` as ``deep_rfm`` does, so one seed gives
  the same run on any number of devices (up to rounding).

  Args:
    x, labels, config, key, x_test, labels_test, num_classes, callback: as
      :func:`~dnc_jax.rfm.driver.deep_rfm`.
    mesh: a 1-D mesh with axis ``"rows"``; default :func:`make_mesh` ``(devices)``.
    devices: ``None`` (all devices), a count, or a device list.
    solver: ``"cholesky"``, ``"cg"`` (matrix-free, Nyström-preconditioned
      conjugate gradients) or ``"auto"`` (Cholesky when ``3 N²`` floats fit in
      ``memory_bytes``).
    cg_tol: CG relative residual (default 1e-4 float32, 1e-8 float64).
    cg_max_iter: CG iteration cap.
    cg_rank: Nyström landmarks.
    preconditioner: ``"nystrom"`` or ``"none"``.
    memory_bytes: per-device memory budget (default: half of one device).
    resume, on_state: as :func:`~dnc_jax.rfm.driver.deep_rfm` (a
      ``DeepRFMState`` to continue from; a function called with one after each
      layer — it gathers the rows to the host, so it costs ``N D`` per layer).

  Returns:
    :class:`~dnc_jax.rfm.driver.DeepRFMResult`; each layer record also has
    ``solve`` (``solver``, ``iterations``, ``residual``, ``residuals``) and
    ``devices``.

  Raises:
    ConfigError: invalid data or options (before any work).
    SolveError: Cholesky broke down, or CG did not converge (names the layer,
      the residual reached and the cap, and suggests a fix).
  """
  config = (config or drfm.preset_config("reference")).validate()
  if config.matmul_precision != "highest":
    raise ConfigError(f"matmul_precision={config.matmul_precision!r} is available on the "
                      "single-device Cholesky path only; drop --matmul-precision, or run with "
                      "--devices 1 --solver cholesky")
  labels_np = np.asarray(labels)
  if num_classes is None:
    num_classes = int(labels_np.max()) + 1 if labels_np.size else 0
  drfm._check_data(x, labels_np, x_test, labels_test, num_classes)
  mesh = mesh if mesh is not None else make_mesh(devices)
  if tuple(mesh.axis_names) != (AXIS,):
    raise ConfigError(f"the mesh must be 1-D with axis {AXIS!r}, got axes {mesh.axis_names}; "
                      "build it with dnc_jax.rfm.sharded.make_mesh")
  nd = _mesh_size(mesh)
  x = np.asarray(x)
  if x.dtype not in (np.float32, np.float64):
    x = x.astype(np.float32)
  if x.dtype == np.float64 and not jax.config.jax_enable_x64:
    x = x.astype(np.float32)
  dtype = x.dtype
  n = x.shape[0]
  if x_test is None:
    x_test = np.zeros((0, x.shape[1]), dtype)
    labels_test = np.zeros((0,), np.int32)
  x_test = np.asarray(x_test, dtype)
  labels_test = np.asarray(labels_test)
  nt = x_test.shape[0]
  n_pad, nt_pad = padded_rows(n, nd), padded_rows(nt, nd)
  solver = _resolve_solver(solver, n, dtype.itemsize, memory_bytes)
  y_np = (2.0 * np.eye(num_classes, dtype=dtype)[labels_np] - 1.0).astype(dtype)
  xs = shard_rows(x, mesh, n_pad)
  xts = shard_rows(x_test, mesh, nt_pad)
  ys = shard_rows(y_np, mesh, n_pad)
  labs = shard_rows(labels_np.astype(np.int32), mesh, n_pad)
  valid = shard_rows(np.ones(n, bool), mesh, n_pad, fill=False)
  valid_t = shard_rows(np.ones(nt, bool), mesh, nt_pad, fill=False)

  def opts(d):
    return _cg_opts(n_pad, nd, d, dtype.itemsize, solver=solver, cg_tol=cg_tol,
                    cg_max_iter=cg_max_iter, cg_rank=cg_rank, preconditioner=preconditioner,
                    memory_bytes=memory_bytes)

  def solve_info(info, ok, where):
    iters, resid, hist = info
    iters = int(iters)
    rec = {"solver": solver, "iterations": iters,
           "residual": None if solver == "cholesky" else float(resid),
           "residuals": None if solver == "cholesky"
           else [float(v) for v in np.asarray(hist)[:iters + 1]]}
    if solver == "cg":
      log.info("%s: CG %d iterations, relative residual %.3e", where, iters, float(resid))
    if not bool(ok):
      if solver == "cg":
        cg = opts(1)
        raise solvers.cg_error(rec["residuals"][-1], cg.tol, cg.max_iter, config.ridge, n,
                               where)
      raise krr_lib.solve_error(config.ridge, n, where, dtype=dtype)
    return rec

  start, layers, grams, ms = drfm.resume_point(resume, config, n)
  if resume is not None:
    xs = shard_rows(np.asarray(resume.x, dtype), mesh, n_pad)
    xts = shard_rows(np.asarray(resume.x_test, dtype), mesh, nt_pad)
  # Per device: half for the AGOP block (the solver's arrays take the rest).
  budget = memory_lib.budget_bytes(config.memory_gb, mesh.devices.flat[0])
  for layer in range(start, config.depth + 1):
    t0 = time.perf_counter()
    d_in = xs.shape[1]
    width = config.width or d_in
    bs = config.agop_batch_size or memory_lib.block_rows(
        n_pad // nd, memory_lib.layer_bytes(n_pad, 0, d_in, width, num_classes,
                                            itemsize=jnp.dtype(dtype).itemsize)[2],
        budget // 2, backend=mesh.devices.flat[0].platform)
    xn, xtn, m, mets, tp, ttp, ok, info = _sharded_layer(
        xs, xts, ys, labs, valid, valid_t, jax.random.fold_in(key, layer), config.bandwidth,
        config.ridge, config.sigma, mesh=mesh, kernel=config.kernel, features=config.features,
        width=width, weight_init=config.weight_init, num_classes=num_classes,
        global_mean=config.global_mean, batch_size=bs, n_valid=n, solver=solver,
        cg=opts(d_in))
    jax.block_until_ready(xn)
    srec = solve_info(info, ok, f"layer {layer}")
    drfm.check_agop(m, layer, config)
    mets = jax.tree.map(float, mets)
    record = {
        "layer": layer,
        "nc1": {r: mets[r]["nc1"] for r in drfm.REPRESENTATIONS},
        "nc2": {r: mets[r]["nc2"] for r in drfm.REPRESENTATIONS},
        "train_acc": drfm._accuracy(to_host(tp)[:n], labels_np),
        "test_acc": drfm._accuracy(to_host(ttp)[:nt], labels_test),
        "seconds": time.perf_counter() - t0,
        "dim_in": d_in, "dim_out": int(xn.shape[1]),
        "gflop": drfm.layer_flops(n, nt, d_in, num_classes, xn.shape[1])["total"] / 1e9,
        "metrics": mets, "solve": srec, "devices": nd,
    }
    if layer in config.gram_layers:
      grams[layer] = _gram(xs, n, labels_np, num_classes, config.gram_per_class)
    if ms is not None:
      ms.append(to_host(m))
    layers.append(record)
    xs, xts = xn, xtn
    if on_state is not None:
      on_state(drfm.DeepRFMState(layer, to_host(xs)[:n], to_host(xts)[:nt], list(layers),
                                 dict(grams), None if ms is None else list(ms)))
    if callback is not None:
      callback(record)

  t0 = time.perf_counter()
  tp, ttp, ok, info = _sharded_layer(
      xs, xts, ys, labs, valid, valid_t, key, config.bandwidth, config.ridge, config.sigma,
      mesh=mesh, kernel=config.kernel, features=config.features, width=1,
      weight_init=config.weight_init, num_classes=num_classes, global_mean=config.global_mean,
      batch_size=1, n_valid=n, solver=solver, cg=opts(xs.shape[1]), last=True)
  srec = solve_info(info, ok, "final KRR")
  final = {"train_acc": drfm._accuracy(to_host(tp)[:n], labels_np),
           "test_acc": drfm._accuracy(to_host(ttp)[:nt], labels_test),
           "seconds": time.perf_counter() - t0, "solve": srec}
  grams[config.depth + 1] = _gram(xs, n, labels_np, num_classes, config.gram_per_class)
  return drfm.DeepRFMResult(layers, final, ms, grams)


def deep_rfm_cg(x, labels, config: drfm.DeepRFMConfig | None = None, *, key: jax.Array,
                devices: int | Sequence[jax.Device] | None = 1, **kwargs) -> drfm.DeepRFMResult:
  """Deep RFM with every kernel system solved by preconditioned CG (one device by default).

  Shorthand for ``sharded_deep_rfm(..., solver="cg")``; ``kwargs`` as there.
  """
  return sharded_deep_rfm(x, labels, config, key=key, devices=devices, solver="cg", **kwargs)
