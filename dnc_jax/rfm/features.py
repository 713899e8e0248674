r"""Random feature maps ``Φ`` applied between Deep RFM layers.

* ``relu``: :math:`\Phi(z) = \mathrm{ReLU}(z W^\top)`, ``W`` of shape ``[D, d]`` with
  entries i.i.d. :math:`N(0, 2/D)` (``init="normal"``, the paper's Prop. A.1) or
  :math:`U(\pm 1/\sqrt{d})` (``init="uniform"``, the authors' code, i.e. the
  default initialisation of a PyTorch linear layer).
* ``cos``: random Fourier features of the ℓ1-Laplace kernel
  :math:`\exp(-\sigma\|x - z\|_1)`: :math:`\Phi(z) = \sqrt{2/D}\cos(z W^\top + b)`,
  :math:`W_{ij} \sim \mathrm{Cauchy}(0, \sigma)`, :math:`b \sim U[0, 2\pi)`.

References:
  Beaglehole et al., NeurIPS 2024, Section 4 and Proposition A.1.
  Rahimi, Recht. Random features for large-scale kernel machines. NeurIPS 2007.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dnc_jax.rfm import precision as precision_lib
from dnc_jax.errors import ConfigError

FEATURES = ("relu", "cos")
INITS = ("normal", "uniform")


class FeatureParams(NamedTuple):
  """Parameters of one random feature map: ``w`` ``[D, d]``, ``b`` ``[D]``."""
  w: jax.Array
  b: jax.Array


def init_features(key: jax.Array, kind: str, in_dim: int, width: int, *, init: str = "normal",
                  sigma: float = 0.05, dtype=jnp.float32) -> FeatureParams:
  """Draws the random weights of a feature map.

  Args:
    key: PRNG key.
    kind: ``"relu"`` or ``"cos"``.
    in_dim: input dimension ``d``.
    width: output dimension ``D``.
    init: ``"normal"`` (N(0, 2/D)) or ``"uniform"`` (U(±1/√d)); ReLU only.
    sigma: Cauchy scale of the cos features.
    dtype: parameter dtype. The weights are always drawn in float32 and then
      cast, so float32 and float64 runs with the same key use the same features
      (their difference then measures arithmetic alone).

  Returns:
    :class:`FeatureParams` with ``w`` ``[D, d]`` and ``b`` ``[D]`` (zeros for ReLU).
  """
  kw, kb = jax.random.split(key)
  f32 = jnp.float32
  if kind == "relu":
    if init == "normal":
      w = jax.random.normal(kw, (width, in_dim), f32) * math.sqrt(2.0 / width)
    elif init == "uniform":
      bound = 1.0 / math.sqrt(in_dim)
      w = jax.random.uniform(kw, (width, in_dim), f32, -bound, bound)
    else:
      raise ConfigError(f"unknown ReLU weight init {init!r}; choose one of {', '.join(INITS)}")
    return FeatureParams(w.astype(dtype), jnp.zeros((width,), dtype))
  if kind == "cos":
    w = sigma * jax.random.cauchy(kw, (width, in_dim), f32)
    b = jax.random.uniform(kb, (width,), f32, 0.0, 2.0 * math.pi)
    return FeatureParams(w.astype(dtype), b.astype(dtype))
  raise ConfigError(f"unknown feature map {kind!r}; choose one of {', '.join(FEATURES)}")


def apply_features(params: FeatureParams, z: jax.Array, kind: str, *,
                   matmul_precision: str = "highest") -> jax.Array:
  """Applies the feature map to rows ``z`` ``[n, d]``; returns ``[n, D]``.

  ``matmul_precision``: see :mod:`dnc_jax.rfm.precision`.
  """
  pre = precision_lib.matmul(z, params.w.T, matmul_precision) + params.b
  if kind == "relu":
    return jax.nn.relu(pre)
  if kind == "cos":
    return math.sqrt(2.0 / params.w.shape[0]) * jnp.cos(pre)
  raise ConfigError(f"unknown feature map {kind!r}; choose one of {', '.join(FEATURES)}")
