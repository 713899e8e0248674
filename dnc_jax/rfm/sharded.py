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

import dataclasses
import functools
import logging
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dnc_jax import metrics as metrics_lib
from dnc_jax.errors import ConfigError
from dnc_jax.rfm import features as features_lib
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax.rfm import solvers
from dnc_jax.rfm.agop import agop_sum, kernel_predictor
from dnc_jax.rfm.config import DeepRFMConfig, LayerOptions
from dnc_jax.rfm.layer import LayerOutput, normalise_rows

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
          f"{n} devices asked for, but {len(all_devices)} device(s) are visible "
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


def _layer_body(x, xt, y, labels, valid, valid_t, params, bandwidth, ridge, *,
                options: LayerOptions, batch_size, n_valid, solver, cg, last):
  """One layer on this device's rows (inside ``shard_map`` over ``AXIS``)."""
  kernel, features, global_mean = options.kernel, options.features, options.global_mean
  num_classes = y.shape[1]
  dtype = x.dtype
  n_loc = x.shape[0]
  dev = jax.lax.axis_index(AXIS)
  row0 = (dev * n_loc).astype(jnp.int32)
  gidx = row0 + jnp.arange(n_loc, dtype=jnp.int32)
  w = valid.astype(dtype)
  x = normalise_rows(x)
  xt = normalise_rows(xt)

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
    "mesh", "options", "batch_size", "n_valid", "solver", "cg", "last"))
def _sharded_layer(x, xt, y, labels, valid, valid_t, key, bandwidth, ridge, sigma, *, mesh,
                   options: LayerOptions, batch_size, n_valid, solver, cg, last=False):
  # The random weights are drawn once, outside the per-device body, and
  # replicated: every device applies the same Φ_l.
  params = features_lib.init_features(key, options.features, x.shape[1],
                                      options.width or x.shape[1], init=options.weight_init,
                                      sigma=sigma, dtype=x.dtype)
  body = functools.partial(_layer_body, options=options, batch_size=batch_size, n_valid=n_valid,
                           solver=solver, cg=cg, last=last)
  in_specs = (_ROW2, _ROW2, _ROW2, _ROW, _ROW, _ROW, _REP, _REP, _REP)
  info_specs = (_REP, _REP, _REP)
  if last:
    out_specs = (_ROW2, _ROW2, _REP, info_specs)
  else:
    out_specs = (_ROW2, _ROW2, _REP, _REP, _ROW2, _ROW2, _REP, info_specs)
  fn = _shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
  return fn(x, xt, y, labels, valid, valid_t, params, bandwidth, ridge)


# -- public entry points ---------------------------------------------------------------

class MeshPlacement:
  """Rows sharded over a 1-D mesh; each layer one :func:`_sharded_layer` call.

  Rows are padded to a multiple of the device count (padding has weight 0 and
  ``α = 0``). Per device, half of the memory budget
  (:func:`dnc_jax.rfm.memory.budget_bytes`) sizes the AGOP block and the same
  budget decides ``solver="auto"`` and CG's kernel-block cache.
  """

  def __init__(self, config: DeepRFMConfig, mesh: Mesh, n: int, n_test: int, num_classes: int,
               dtype):
    if config.matmul_precision != "highest":
      raise ConfigError(f"matmul_precision={config.matmul_precision!r} is available on the "
                        "single-device Cholesky path only; use matmul_precision='highest' "
                        "or one device with the Cholesky solver")
    if config.agop == "closed_form":
      raise ConfigError(f"agop={config.agop!r} is available on one device with the Cholesky "
                        "solver only; use agop='rules' or 'auto' on a mesh")
    if tuple(mesh.axis_names) != (AXIS,):
      raise ConfigError(f"the mesh must be 1-D with axis {AXIS!r}, got axes {mesh.axis_names}; "
                        "build it with dnc_jax.rfm.sharded.make_mesh")
    self.config, self.mesh, self.n, self.n_test, self.k = config, mesh, n, n_test, num_classes
    self.dtype = np.dtype(dtype)
    self.nd = _mesh_size(mesh)
    self.n_pad, self.nt_pad = padded_rows(n, self.nd), padded_rows(n_test, self.nd)
    device = mesh.devices.flat[0]
    self.budget = memory_lib.budget_bytes(config.memory_gb, device)
    self.backend = device.platform
    self.solver = solvers.resolve_solver(config.solver.method, n, self.dtype.itemsize,
                                         self.budget)
    self.valid = shard_rows(np.ones(n, bool), mesh, self.n_pad, fill=False)
    self.valid_t = shard_rows(np.ones(n_test, bool), mesh, self.nt_pad, fill=False)

  def cg_options(self, d: int) -> solvers.CGOptions:
    s = self.config.solver
    return solvers.cg_options(self.n_pad // self.nd, self.n_pad, d, self.dtype.itemsize,
                              tol=s.cg_tol, max_iter=s.cg_max_iter if self.solver == "cg" else 1,
                              preconditioner=s.preconditioner, rank=s.cg_rank,
                              memory_bytes=self.budget)

  def place(self, x, x_test):
    return (shard_rows(np.asarray(x, self.dtype), self.mesh, self.n_pad),
            shard_rows(np.asarray(x_test, self.dtype), self.mesh, self.nt_pad))

  def place_targets(self, y, labels):
    return (shard_rows(np.asarray(y, self.dtype), self.mesh, self.n_pad),
            shard_rows(np.asarray(labels, np.int32), self.mesh, self.n_pad))

  def _call(self, x, x_test, y, labels, key, config, **kw):
    return _sharded_layer(x, x_test, y, labels, self.valid, self.valid_t, key, config.bandwidth,
                          config.ridge, config.sigma, mesh=self.mesh,
                          options=config.layer_options(mesh=True),
                          n_valid=self.n, solver=self.solver, cg=self.cg_options(x.shape[1]),
                          **kw)

  def layer(self, x, x_test, y, labels, key, config, layer):
    d_in = x.shape[1]
    bs = config.agop_batch_size or memory_lib.block_rows(
        self.n_pad // self.nd, memory_lib.layer_bytes(
            self.n_pad, 0, d_in, config.width or d_in, self.k, itemsize=self.dtype.itemsize)[2],
        self.budget // 2, backend=self.backend)
    xn, xtn, m, mets, tp, ttp, ok, info = self._call(x, x_test, y, labels, key, config,
                                                     batch_size=bs)
    jax.block_until_ready(xn)
    srec = self.solve_record(info, ok, f"layer {layer}")
    return xn, xtn, LayerOutput(m, mets, tp, ttp, ok), {"agop": "rules", "solve": srec,
                                                        "devices": self.nd}

  def final(self, x, x_test, y, labels, config):
    # width=1: the last call only solves; its feature weights are never used.
    tp, ttp, ok, info = self._call(x, x_test, y, labels, jax.random.key(0),
                                   dataclasses.replace(config, width=1), batch_size=1, last=True)
    return tp, ttp, {"solve": self.solve_record(info, ok, "final KRR")}

  def solve_record(self, info, ok, where: str) -> dict:
    """The ``solve`` entry of a record; raises SolveError when the solve failed."""
    iters, resid, hist = info
    iters = int(iters)
    cg = self.solver == "cg"
    rec = {"solver": self.solver, "iterations": iters,
           "residual": float(resid) if cg else None,
           "residuals": [float(v) for v in np.asarray(hist)[:iters + 1]] if cg else None}
    if cg:
      log.info("%s: CG %d iterations, relative residual %.3e", where, iters, float(resid))
    if not bool(ok):
      if cg:
        opts = self.cg_options(1)
        raise solvers.cg_error(rec["residuals"][-1], opts.tol, opts.max_iter,
                               self.config.ridge, self.n, where)
      raise krr_lib.solve_error(self.config.ridge, self.n, where, dtype=self.dtype)
    return rec

  def host(self, a, n=None):
    return to_host(a) if n is None else to_host(a)[:n]

  def gram(self, z, labels, num_classes, per_class):
    """Fig. 1's Gram picture of sharded rows ``z``: only the chosen rows come to the host."""
    order = metrics_lib.gram_order(labels, num_classes=num_classes, per_class=per_class)
    mean = jnp.sum(z[:self.n], axis=0) / self.n          # the sample mean of ALL rows
    zs = z[jnp.asarray(order)] - mean
    zs = zs / jnp.linalg.norm(zs, axis=1, keepdims=True)
    return to_host(jnp.matmul(zs, zs.T, precision=HIGHEST)), labels[order]


def sharded_rfm_layer(x, x_test, y, labels, key, config: DeepRFMConfig, *, mesh: Mesh,
                      batch_size: int):
  r""":func:`dnc_jax.rfm.layer.rfm_layer` with the rows sharded over ``mesh``.

  Same arguments and outputs as ``rfm_layer`` (``x`` ``[N, d]``, ``x_test``
  ``[N_test, d]``, ``y`` ``[N, K]``, ``labels`` ``[N]``); rows are padded to a
  multiple of the device count and the padding removed from the outputs;
  ``config.solver`` chooses Cholesky or CG.

  Returns:
    ``(x_next [N, D], x_test_next [N_test, D], LayerOutput)``; ``solve_ok`` is
    False when Cholesky broke down or CG hit its cap.
  """
  x = np.asarray(x)
  n, nt = x.shape[0], np.asarray(x_test).shape[0]
  place = MeshPlacement(config, mesh, n, nt, np.asarray(y).shape[1], x.dtype)
  xs, xts = place.place(x, x_test)
  ys, labs = place.place_targets(y, labels)
  xn, xtn, m, mets, tp, ttp, ok, _ = place._call(xs, xts, ys, labs, key, config,
                                                 batch_size=batch_size)
  return xn[:n], xtn[:nt], LayerOutput(m, mets, tp[:n], ttp[:nt], ok)
