r"""Laplace and Gaussian kernels, with an optional Mahalanobis matrix.

Data are rows: ``x`` is ``[n, d]``, ``z`` is ``[m, d]``, kernel matrices are
``[n, m]``. Every matmul uses ``Precision.HIGHEST``: GPUs otherwise use TF32, and
the expanded distance :math:`\|x\|^2 + \|z\|^2 - 2 x\cdot z` loses all accuracy
once classes collapse. The kernel predictor and its derivatives (for the AGOP)
are in :mod:`dnc_jax.rfm.predictor`.

.. math::
   \|x - z\|_M^2 = (x - z)^\top M (x - z), \qquad
   k_{\mathrm{Lap}}(x, z) = \exp(-\|x - z\|_M / L), \qquad
   k_{\mathrm{Gauss}}(x, z) = \exp(-\|x - z\|_M^2 / (2L^2)).

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Section 4.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.rfm import precision as precision_lib
from dnc_jax.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
KERNELS = ("laplace", "gaussian")


def sq_distances(x: jax.Array, z: jax.Array, M: jax.Array | None = None) -> jax.Array:
  r"""Squared (Mahalanobis) distances ``[n, m]`` between rows of ``x`` and ``z``.

  Uses the expanded form with HIGHEST precision, clipped at 0 (rounding can make
  the expanded form slightly negative).

  Args:
    x: ``[n, d]``.
    z: ``[m, d]``.
    M: optional ``[d, d]`` PSD matrix; ``None`` means the identity.

  Returns:
    ``[n, m]`` array of :math:`\|x_i - z_j\|_M^2`.
  """
  xm = x if M is None else jnp.matmul(x, M, precision=HIGHEST)
  zm = z if M is None else jnp.matmul(z, M, precision=HIGHEST)
  xx = jnp.sum(xm * x, axis=-1)
  zz = jnp.sum(zm * z, axis=-1)
  xz = jnp.matmul(xm, z.T, precision=HIGHEST)
  return jnp.maximum(xx[:, None] + zz[None, :] - 2.0 * xz, 0.0)


def safe_sqrt(sq: jax.Array) -> jax.Array:
  """``sqrt(sq)`` whose derivative at ``sq = 0`` is 0, not infinite (nor NaN)."""
  # The Laplace kernel's gradient at coincident points is defined as 0 (SPEC §3);
  # the inner where keeps sqrt' finite, the outer one gives 0 after the chain rule.
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def laplace_from_sq(sq: jax.Array, bandwidth) -> jax.Array:
  r"""Laplace kernel values from squared distances.

  Differentiated by a hand-written rule,

  .. math:: \frac{\partial}{\partial s} e^{-\sqrt{s}/L} = -\frac{e^{-\sqrt{s}/L}}{2L\sqrt{s}}
     \quad (0 \text{ at } s = 0),

  so reverse mode multiplies each cotangent by one precomputed weight instead of
  replaying ``exp``/``sqrt``/``where`` elementwise: the AGOP's ``vmap(jacrev)``
  pushes ``K`` cotangents of size ``[B, N]`` through this map per block.
  """
  # The bandwidth in the distances' dtype: an integer one would get a float0 tangent.
  return _laplace_from_sq(sq, jnp.asarray(bandwidth, sq.dtype))


@jax.custom_jvp
def _laplace_from_sq(sq: jax.Array, bandwidth: jax.Array) -> jax.Array:
  return jnp.exp(-safe_sqrt(sq) / bandwidth)


@_laplace_from_sq.defjvp
def _laplace_from_sq_jvp(primals, tangents):
  sq, bandwidth = primals
  dsq, dbandwidth = tangents
  r = safe_sqrt(sq)
  k = jnp.exp(-r / bandwidth)
  pos = sq > 0
  w = jnp.where(pos, -k / (2.0 * bandwidth * jnp.where(pos, r, 1.0)), 0.0)
  return k, w * dsq + k * r / (bandwidth * bandwidth) * dbandwidth


def gaussian_from_sq(sq: jax.Array, bandwidth) -> jax.Array:
  """Gaussian kernel values from squared distances."""
  return jnp.exp(-sq / (2.0 * bandwidth * bandwidth))


def laplace_kernel(x: jax.Array, z: jax.Array, *, bandwidth, M: jax.Array | None = None) -> jax.Array:
  r"""Laplace kernel matrix :math:`\exp(-\|x_i - z_j\|_M / L)`.

  Args:
    x: ``[n, d]``.
    z: ``[m, d]``.
    bandwidth: ``L > 0``.
    M: optional ``[d, d]`` Mahalanobis matrix.

  Returns:
    ``[n, m]`` kernel matrix.
  """
  return laplace_from_sq(sq_distances(x, z, M), bandwidth)


def gaussian_kernel(x: jax.Array, z: jax.Array, *, bandwidth, M: jax.Array | None = None) -> jax.Array:
  r"""Gaussian kernel matrix :math:`\exp(-\|x_i - z_j\|_M^2 / (2L^2))`, ``[n, m]``.

  Arguments as :func:`laplace_kernel`: ``x`` ``[n, d]``, ``z`` ``[m, d]``, the
  bandwidth ``L > 0`` and an optional ``[d, d]`` Mahalanobis matrix ``M``.
  """
  return gaussian_from_sq(sq_distances(x, z, M), bandwidth)


def kernel_from_sq(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The map ``(squared distances, bandwidth) -> kernel values`` for ``name``."""
  if name == "laplace":
    return laplace_from_sq
  if name == "gaussian":
    return gaussian_from_sq
  raise ConfigError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")


def get_kernel(name: str) -> Callable[..., jax.Array]:
  """The kernel function ``(x, z, *, bandwidth, M=None) -> [n, m]`` for ``name``."""
  kernel_from_sq(name)  # validates the name
  return laplace_kernel if name == "laplace" else gaussian_kernel


def check_bandwidth(bandwidth) -> None:
  """Raises ConfigError for a concrete bandwidth that is not positive and finite."""
  if isinstance(bandwidth, jax.core.Tracer):
    return
  b = float(np.asarray(bandwidth))
  if not (b > 0.0 and b < float("inf")):
    raise ConfigError(f"bandwidth must be a positive finite number, got {bandwidth}; "
                      "the paper uses L = 2.0 (--bandwidth 2.0)")


def _checked(fn):
  jitted = jax.jit(fn)

  def wrapper(x, z, *, bandwidth, M=None):
    from dnc_jax import validate
    check_bandwidth(bandwidth)
    if not validate.is_traced(x, z, M):
      validate.rows(x, "x")
      validate.rows(z, "z", dim=x.shape[1])
      if M is not None:
        validate.square(M, "M", x.shape[1])
      for a, name in ((x, "x"), (z, "z"), (M, "M")):
        if a is not None:
          validate.finite(a, name)
    return jitted(x, z, bandwidth=bandwidth, M=M)

  wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
  wrapper.__wrapped__ = fn
  return wrapper


laplace_kernel = _checked(laplace_kernel)
gaussian_kernel = _checked(gaussian_kernel)


class CentredFrame(NamedTuple):
  r"""Training rows stored relative to their class means, for accurate distances.

  The expanded form :math:`\|x\|^2 + \|z\|^2 - 2x\cdot z` cancels catastrophically
  in float32 when ``x`` and ``z`` are close (collapsed classes): its error is
  about ``eps · ‖x‖²`` while ``‖x - z‖²`` may be ``1e-8``. Distances are exact
  under translation, so for a query ``x`` with centre :math:`\mu_c` (its class
  mean, or the nearest class mean) and a training row
  :math:`x_j = \mu_{c_j} + r_j`:

  .. math::
     \|x - x_j\|^2 = \|r\|^2 + \|r_j\|^2 + \|\mu_{c_j} - \mu_c\|^2
       + 2 r_j\cdot(\mu_{c_j} - \mu_c) - 2 r\cdot r_j - 2 r\cdot(\mu_{c_j} - \mu_c),

  with :math:`r = x - \mu_c`. Within a class every term is a product of small
  residuals, so float32 keeps its relative accuracy; across classes the
  distances are large and the expanded form is accurate anyway. The cost is
  the same single matmul as the plain form (``[m, d + 2K] × [d + 2K, N]``
  with the class columns of :func:`frame_sq_distances`).

  Attributes:
    labels: ``[N]`` class of each training row.
    means: ``[K, d]`` class means.
    resid: ``[N, d]`` residuals ``r_j = x_j - μ_{c_j}`` (exact differences).
    resid_sq: ``[N]`` ``‖r_j‖²``.
    resid_means: ``[N, K]`` ``r_j · μ_a``.
    own_const: ``[N]`` ``‖r_j‖² + 2 r_j · μ_{c_j}``.
    row_mean_sq_dist: ``[N, K]`` ``‖μ_{c_j} - μ_a‖²`` (exact differences).
    onehot: ``[N, K]`` one-hot labels (a matmul, not a gather, in the hot loop).
  """
  labels: jax.Array
  means: jax.Array
  resid: jax.Array
  resid_means: jax.Array
  own_const: jax.Array
  row_mean_sq_dist: jax.Array
  onehot: jax.Array


def centred_frame(x: jax.Array, labels: jax.Array, num_classes: int, *,
                  means: jax.Array | None = None) -> CentredFrame:
  """Builds the :class:`CentredFrame` of training rows ``x`` ``[N, d]``.

  ``means`` ``[K, d]`` are the class means (computed from ``x`` when ``None``; a
  sharded caller passes the means of all devices' rows).
  """
  if means is None:
    counts = jax.ops.segment_sum(jnp.ones((x.shape[0],), x.dtype), labels,
                                 num_segments=num_classes)
    means = (jax.ops.segment_sum(x, labels, num_segments=num_classes)
             / jnp.maximum(counts, 1.0)[:, None])
  resid = x - means[labels]
  diff = means[:, None, :] - means[None, :, :]
  resid_means = jnp.matmul(resid, means.T, precision=HIGHEST)
  own = jnp.take_along_axis(resid_means, labels[:, None], axis=1)[:, 0]
  own_const = jnp.sum(resid * resid, axis=1) + 2.0 * own
  msd = jnp.sum(diff * diff, axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
  return CentredFrame(labels, means, resid, resid_means, own_const, msd[labels], onehot)


def nearest_centre(frame: CentredFrame, q: jax.Array) -> jax.Array:
  """Index ``[m]`` of the class mean nearest to each query row ``q`` ``[m, d]``."""
  return jnp.argmin(sq_distances(q, frame.means), axis=1).astype(frame.labels.dtype)


def frame_sq_distances(frame: CentredFrame, q: jax.Array, centre: jax.Array, *,
                       matmul_precision: str = "highest") -> jax.Array:
  """Squared distances ``[m, N]`` from queries ``q`` ``[m, d]`` to the frame's rows.

  ``centre`` ``[m]`` gives each query's centre class; any choice is exact in
  exact arithmetic, the nearest class mean is the accurate one. Differentiable
  in ``q`` with gradient ``2 (q_i - x_j)``.

  The class-pair terms (``r · μ_{c_j}``, ``r_j · μ_c`` and ``‖μ_{c_j} − μ_c‖²``)
  enter as ``2K`` extra columns of the one ``[m, d] × [d, N]`` product (one-hot
  classes against per-row class terms), so the ``[m, N]`` matrix is made by one
  GEMM and one elementwise pass, with no gathers over it.

  ``matmul_precision`` (:mod:`dnc_jax.rfm.precision`) applies to the
  ``[m, d] × [d, N]`` residual product, the only large matmul here; the class
  columns are multiplied at ``HIGHEST`` precision.
  """
  mu = frame.means[centre]                                   # [m, d]
  r = q - jax.lax.stop_gradient(mu)
  r_sq = jnp.sum(r * r, axis=1)                              # [m]
  rmu = jnp.matmul(r, frame.means.T, precision=HIGHEST)      # [m, K]  r · μ_a
  own = jnp.take_along_axis(rmu, centre[:, None], axis=1)[:, 0]   # [m]  r · μ_c
  k = frame.means.shape[0]
  # Query side (one-hot centre, −2 r·μ_a) against row side (−2 r_j·μ_a + ‖μ_{c_j} − μ_a‖²,
  # one-hot class): their product is −2 r_j·μ_c + ‖μ_{c_j} − μ_c‖² − 2 r·μ_{c_j}.
  q_cls = jnp.concatenate([jax.nn.one_hot(centre, k, dtype=r.dtype), -2.0 * rmu], axis=1)
  z_cls = jnp.concatenate([frame.row_mean_sq_dist - 2.0 * frame.resid_means, frame.onehot],
                          axis=1)
  if precision_lib.check(matmul_precision) == "highest":
    pair = jnp.matmul(jnp.concatenate([-2.0 * r, q_cls], axis=1),
                      jnp.concatenate([frame.resid, z_cls], axis=1).T, precision=HIGHEST)
  else:
    pair = (precision_lib.matmul(-2.0 * r, frame.resid.T, matmul_precision)
            + jnp.matmul(q_cls, z_cls.T, precision=HIGHEST))
  sq = (r_sq + 2.0 * own)[:, None] + frame.own_const[None, :] + pair
  return jnp.maximum(sq, 0.0)
