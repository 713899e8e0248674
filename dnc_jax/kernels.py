r"""Laplace and Gaussian kernels, with an optional Mahalanobis matrix.

Data are rows: ``x`` is ``[n, d]``, ``z`` is ``[m, d]``, kernel matrices are
``[n, m]``. Every matmul uses ``Precision.HIGHEST``: GPUs otherwise use TF32, and
the expanded distance :math:`\|x\|^2 + \|z\|^2 - 2 x\cdot z` loses all accuracy
once classes collapse.

.. math::
   \|x - z\|_M^2 = (x - z)^\top M (x - z), \qquad
   k_{\mathrm{Lap}}(x, z) = \exp(-\|x - z\|_M / L), \qquad
   k_{\mathrm{Gauss}}(x, z) = \exp(-\|x - z\|_M^2 / (2L^2)).

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Section 4.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

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


def _safe_sqrt(sq: jax.Array) -> jax.Array:
  # sqrt'(0) is infinite; the Laplace kernel's gradient at coincident points is
  # defined as 0 (SPEC §3), which the tiny floor gives after the chain rule.
  tiny = jnp.finfo(sq.dtype).tiny
  return jnp.sqrt(jnp.maximum(sq, tiny))


def laplace_from_sq(sq: jax.Array, bandwidth) -> jax.Array:
  """Laplace kernel values from squared distances."""
  return jnp.exp(-_safe_sqrt(sq) / bandwidth)


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
  r"""Gaussian kernel matrix :math:`\exp(-\|x_i - z_j\|_M^2 / (2L^2))`.

  Args:
    x: ``[n, d]``.
    z: ``[m, d]``.
    bandwidth: ``L > 0``.
    M: optional ``[d, d]`` Mahalanobis matrix.

  Returns:
    ``[n, m]`` kernel matrix.
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
  b = float(jnp.asarray(bandwidth))
  if not (b > 0.0 and b < float("inf")):
    raise ConfigError(f"bandwidth must be a positive finite number, got {bandwidth}; "
                      "the paper uses L = 2.0 (--bandwidth 2.0)")


def _checked(fn):
  jitted = jax.jit(fn)

  def wrapper(x, z, *, bandwidth, M=None):
    check_bandwidth(bandwidth)
    return jitted(x, z, bandwidth=bandwidth, M=M)

  wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
  wrapper.__wrapped__ = fn
  return wrapper


laplace_kernel = _checked(laplace_kernel)
gaussian_kernel = _checked(gaussian_kernel)
