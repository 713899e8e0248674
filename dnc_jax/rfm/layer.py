r"""One Deep RFM layer (Algorithm 1 of the paper), a jitted pure function.

Per layer ``l = 1..L`` on training rows ``X_l`` ``[N, d_l]``:

1. normalise rows to unit ℓ2 norm;
2. kernel ridge regression :math:`\alpha = (k(X_l, X_l) + \mu I)^{-1} Y` (Cholesky);
3. predictor :math:`f_l(x) = \sum_j \alpha_j k(x_j, x)`;
4. :math:`M_l = \mathrm{AGOP}(f_l, X_l)` (self terms masked by index), then
   :math:`M_l \leftarrow M_l / \max_{ij} M_l`;
5. :math:`\tilde X_{l+1} = X_l M_l^{1/2}`;
6. :math:`X_{l+1} = \Phi_l(\tilde X_{l+1})`, a fresh random feature map;

then a final normalise + KRR on :math:`X_{L+1}` (:func:`final_krr`). :func:`rfm_layer`
also returns the collapse metrics of the three
representations ``input`` (:math:`X_l` normalised), ``agop``
(:math:`X_l M_l^{1/2}`) and ``features`` (:math:`\Phi_l(X_l M_l^{1/2})`).

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Algorithm 1.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import metrics as metrics_lib
from dnc_jax.errors import DncError
from dnc_jax.rfm import features as features_lib
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import precision as precision_lib
from dnc_jax.rfm import predictor as predictor_lib
from dnc_jax.rfm.agop import agop_sum, kernel_predictor
from dnc_jax.rfm.config import DeepRFMConfig, LayerOptions

HIGHEST = jax.lax.Precision.HIGHEST


def layer_flops(n: int, n_test: int, d: int, num_classes: int, width: int, *,
                agop: str = "rules") -> dict:
  r"""Floating-point operations of one :func:`rfm_layer`, by stage (SPEC §3).

  Counted as in the implementation (multiply-add = 2):

  * ``kernel``: :math:`2N^2(d + 2K) + 2N_tN(d + 2K)` (train and test distances,
    with their ``2K`` class columns);
  * ``solve``: :math:`N^3/3 + 2N^2K` (Cholesky and two triangular solves) plus
    :math:`2N^2K + 2N_tNK` (train and test predictions);
  * ``agop``, ``"rules"``: :math:`2N^2(d + 2K) + 2N^2K` (forward), :math:`2N^2Kd`
    (Jacobians), :math:`2NKd^2` (:math:`J^\top J`); ``"closed_form"``: no
    forward pass (the solve's distances are reused), :math:`2N^2K(d + K)` (the
    Jacobians' sums, class columns included), :math:`2NK^2d` (class-mean
    terms), :math:`2NKd^2` (:math:`J^\top J`);
  * ``sqrt``: :math:`9d^3` (symmetric eigendecomposition) :math:`+ 2d^3`;
  * ``features``: :math:`2(N+N_t)d^2` (projection) :math:`+ 2(N+N_t)dD`.

  Returns:
    ``{stage: flops}`` with a ``"total"`` entry.
  """
  n, nt, d, k, w = int(n), int(n_test), int(d), int(num_classes), int(width)
  out = {
      "kernel": 2 * n * n * (d + 2 * k) + 2 * nt * n * (d + 2 * k),
      "solve": n**3 / 3 + 2 * n * n * k + 2 * n * n * k + 2 * nt * n * k,
      "agop": (2 * n * n * k * (d + k) + 2 * n * k * k * d + 2 * n * k * d * d
               if agop == "closed_form" else
               2 * n * n * (d + 2 * k) + 2 * n * n * k + 2 * n * n * k * d
               + 2 * n * k * d * d),
      "sqrt": 11 * d**3,
      "features": 2 * (n + nt) * d * d + 2 * (n + nt) * d * w,
  }
  out["total"] = sum(out.values())
  return out


class AgopError(DncError):
  """A layer's AGOP is zero or not finite, so ``M / max M`` is undefined."""


def agop_error(layer: int, config: DeepRFMConfig, dtype) -> AgopError:
  r"""The error for a layer whose normalised AGOP is not finite, with cause and fix.

  The AGOP scales as :math:`(\alpha / L)^2` with the KRR weights
  :math:`\alpha \propto 1/\mu` for a large ridge :math:`\mu`, and it vanishes
  when the kernel between distinct rows underflows (a tiny bandwidth ``L``):
  on digits it becomes exactly 0 in float32 for ``L ≤ 0.002``, ``L ≥ 1e24``
  or ``μ ≥ 1e21``, in float64 for ``L ≤ 3e-4``, ``L ≥ 1e159`` or ``μ ≥ 1e157``
  (docs/numerics.md).
  """
  name = np.dtype(dtype).name
  bw, ridge = float(config.bandwidth), float(config.ridge)
  if bw < 0.1:
    cause = (f"bandwidth {bw:g} is so small that the kernel between distinct rows (unit-norm) "
             f"underflows to 0 in {name}")
  elif ridge > 1e3:
    cause = f"ridge {ridge:g} shrinks the predictor, and so its gradients, below {name}'s range"
  elif bw > 1e3:
    cause = f"bandwidth {bw:g} makes the kernel's gradients (∝ 1/L) underflow in {name}"
  else:
    cause = f"the kernel or its gradients under- or overflowed in {name}"
  fix = "use a bandwidth near the rows' scale (unit norm; the presets' --bandwidth 2.0), a ridge ≤ 1"
  fix += " or --precision float64 (float32 underflows first)" if name == "float32" else ""
  return AgopError(f"layer {layer}: the AGOP M is zero or not finite, so M / max M is undefined: "
                   f"{cause}; {fix}")


def check_agop(m, layer: int, config: DeepRFMConfig) -> None:
  """Raises :func:`agop_error` when the normalised AGOP ``m`` ``[d, d]`` holds NaN or Inf.

  ``m = M / max M`` is finite exactly when the raw ``M`` is finite with ``max M > 0``.
  Checked in NumPy: two tiny XLA programs per layer shape cost more (compiling or
  loading them from the cache) than reading ``[d, d]`` back.
  """
  if not np.isfinite(np.asarray(m)).all():
    raise agop_error(layer, config, m.dtype)


class LayerOutput(NamedTuple):
  """What :func:`rfm_layer` returns besides the next data."""
  m: jax.Array            # [d, d] normalised AGOP
  metrics: dict           # {representation: {metric: scalar}}
  train_pred: jax.Array   # [N, K] predictions of f_l at the training rows
  test_pred: jax.Array    # [N_test, K]
  solve_ok: jax.Array     # [] bool
  root: jax.Array | None = None   # [d, d] M^{1/2} as the layer used it (None: not returned)


def normalise_rows(x: jax.Array) -> jax.Array:
  """Rows scaled to unit ℓ2 norm (zero rows stay zero)."""
  norm = jnp.linalg.norm(x, axis=1, keepdims=True)
  return x / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)


def _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel, matmul_precision="highest", *,
                 return_sq=False):
  """One kernel matrix and one factorisation; distances in the centred frame.

  With ``return_sq`` also the ``[N, N]`` squared distances (zero diagonal), for an
  AGOP that reuses them.
  """
  kfn = kernels_lib.kernel_from_sq(kernel)
  sq = kernels_lib.frame_sq_distances(frame, x, frame.labels, matmul_precision=matmul_precision)
  # The Cholesky reads the lower triangle only, so no symmetrised copy is made.
  sq = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, sq)
  alpha, ok, train_pred = krr_lib.cholesky_fit(kfn(sq, bandwidth), y, ridge)
  sq_t = kernels_lib.frame_sq_distances(frame, xt, kernels_lib.nearest_centre(frame, xt),
                                        matmul_precision=matmul_precision)
  test_pred = jnp.matmul(kfn(sq_t, bandwidth), alpha, precision=HIGHEST)
  if return_sq:
    return alpha, ok, train_pred, test_pred, sq
  return alpha, ok, train_pred, test_pred


def rfm_layer(x: jax.Array, x_test: jax.Array, y: jax.Array, labels: jax.Array, key: jax.Array,
              config: DeepRFMConfig, *, batch_size: int):
  r"""One Deep RFM layer (steps 1–6), a pure function.

  Args:
    x: ``[N, d]`` training rows ``X_l`` (normalised here).
    x_test: ``[N_test, d]`` test rows pushed through the same maps.
    y: ``[N, K]`` ±1 targets (``K`` classes).
    labels: ``[N]`` integer labels (for the metrics).
    key: PRNG key of this layer's feature map.
    config: the run's options. Only its :class:`~dnc_jax.rfm.config.LayerOptions`
      (kernel, feature map, width ``D`` (``None``: ``d``), metrics convention,
      AGOP implementation, matmul precision) are static; its bandwidth, ridge
      and cos scale enter as traced scalars, and its other fields are not read.
    batch_size: rows per AGOP block (static).

  Returns:
    ``(x_next [N, D], x_test_next [N_test, D], LayerOutput)``.
  """
  return _rfm_layer(x, x_test, y, labels, key, config.bandwidth, config.ridge, config.sigma,
                    options=config.layer_options(), batch_size=int(batch_size))


@functools.partial(jax.jit, static_argnames=("options", "batch_size"))
def _rfm_layer(x, x_test, y, labels, key, bandwidth, ridge, sigma, *, options: LayerOptions,
               batch_size: int):
  # Bandwidth, ridge and sigma stay traced: a sweep over them compiles once per shape.
  num_classes = y.shape[1]
  x = normalise_rows(x)
  xt = normalise_rows(x_test)
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  mp, kernel = options.matmul_precision, options.kernel
  if options.agop == "closed_form":
    # The solve's [N, N] distances serve the Jacobians too: no second distance pass.
    alpha, ok, train_pred, test_pred, sq = _fit_predict(x, y, xt, frame, bandwidth, ridge,
                                                        kernel, mp, return_sq=True)
    m = predictor_lib.closed_form_agop_sum(
        x, alpha, kernel=kernel, bandwidth=bandwidth, batch_size=batch_size, frame=frame,
        sq_distances=sq, matmul_precision=mp) / x.shape[0]
  else:
    alpha, ok, train_pred, test_pred = _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel, mp)
    f = kernel_predictor(x, alpha, kernel=kernel, bandwidth=bandwidth, exclude_self=True,
                         frame=frame, matmul_precision=mp)
    m = agop_sum(f, x, batch_size=batch_size, matmul_precision=mp) / x.shape[0]
  m = m / jnp.max(m)
  root = metrics_lib.psd_sqrt(m)
  xa = precision_lib.matmul(x, root, mp)
  xta = precision_lib.matmul(xt, root, mp)
  params = features_lib.init_features(key, options.features, x.shape[1],
                                      options.width or x.shape[1], init=options.weight_init,
                                      sigma=sigma, dtype=x.dtype)
  xn = features_lib.apply_features(params, xa, options.features, matmul_precision=mp)
  xtn = features_lib.apply_features(params, xta, options.features, matmul_precision=mp)

  def collapse(z):
    st = metrics_lib.class_stats(z, labels, num_classes, options.global_mean)
    return metrics_lib.collapse_from_stats(z, labels, st)

  mets = {"input": collapse(x), "agop": collapse(xa), "features": collapse(xn)}
  return xn, xtn, LayerOutput(m, mets, train_pred, test_pred, ok, root)


@functools.partial(jax.jit, static_argnames=("kernel", "num_classes"))
def final_krr(x, x_test, y, labels, bandwidth, ridge, *, kernel: str, num_classes: int):
  """The final normalise + KRR on ``X_{L+1}``: ``(train_pred, test_pred, ok)``."""
  x = normalise_rows(x)
  xt = normalise_rows(x_test)
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  _, ok, train_pred, test_pred = _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel)
  return train_pred, test_pred, ok


