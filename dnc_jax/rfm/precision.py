r"""Precision of the large float32 matmuls of a Deep RFM layer.

Three modes for the matmuls that carry a layer's FLOPs (the distance cross
products, hence the AGOP's Jacobian GEMM, the AGOP's :math:`J^\top J`, the
projection by :math:`M^{1/2}` and the random features); the Cholesky solve,
the predictions and the metrics always run at full float32:

* ``"highest"`` (default): full float32 products (``Precision.HIGHEST``). GPUs
  otherwise round float32 operands to TF32, which the expanded distance
  :math:`\|x\|^2 + \|z\|^2 - 2x\cdot z` cannot afford once classes collapse.
* ``"tf32"``: operands rounded to TF32 (10-bit mantissa), float32 accumulation:
  the GPU tensor-core path (``Precision.DEFAULT`` on Ampere and later). On a
  CPU (or TPU), where no TF32 unit exists, the operands are rounded as the GPU
  rounds them and multiplied at full precision; the summation order, hence the
  last bits, still differ from a GPU's.
* ``"bf16"``: operands cast to bfloat16 (8-bit mantissa), float32 accumulation.
  For measurement only: it moves NC1 of deep layers outside the seed spread
  (1.3× at layer 14, 4.5× at layer 19 on digits), so ``bin/deep_rfm`` does not
  offer it.

What the cheaper modes change in the NC curves is measured by
``bench/precision.py`` (``docs/performance.md``); ``"highest"`` is the default.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.errors import ConfigError

MATMUL_PRECISIONS = ("highest", "tf32", "bf16")
HIGHEST = jax.lax.Precision.HIGHEST


def check(mode: str) -> str:
  """``mode`` if it is one of :data:`MATMUL_PRECISIONS`, else ConfigError."""
  if mode not in MATMUL_PRECISIONS:
    raise ConfigError(f"unknown matmul precision {mode!r}; choose one of "
                      f"{', '.join(MATMUL_PRECISIONS)} (default: highest)")
  return mode


@jax.custom_jvp
def round_tf32(x: jax.Array) -> jax.Array:
  """``x`` (float32) rounded to nearest-even at TF32's 10-bit mantissa."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  # Round to nearest even on the 13 dropped bits, then clear them.
  lsb = (bits >> 13) & jnp.uint32(1)
  bits = (bits + jnp.uint32(0x0FFF) + lsb) & jnp.uint32(0xFFFFE000)
  rounded = jax.lax.bitcast_convert_type(bits, jnp.float32).astype(x.dtype)
  return jnp.where(jnp.isnan(x), x, rounded)   # some NaN payloads would carry into ±0


@round_tf32.defjvp
def _round_tf32_jvp(primals, tangents):
  # Straight through (rounding is the identity up to 2^-11); a tangent must be
  # linear for reverse mode, so the backward products of the CPU emulation see
  # rounded primal operands but unrounded cotangents.
  (x,), (dx,) = primals, tangents
  return round_tf32(x), dx


def _prepared(a: jax.Array, b: jax.Array, mode: str):
  """``(a, b, keyword arguments)`` of a product in precision ``mode``."""
  check(mode)
  if mode == "highest" or a.dtype == jnp.float64:
    return a, b, {"precision": HIGHEST}
  if mode == "bf16":
    return a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), {"preferred_element_type": a.dtype}
  if jax.default_backend() == "gpu":   # tf32
    return a, b, {"precision": jax.lax.Precision.DEFAULT}
  return round_tf32(a), round_tf32(b), {"precision": HIGHEST}


def matmul(a: jax.Array, b: jax.Array, mode: str = "highest") -> jax.Array:
  """``a @ b`` in precision ``mode``; the result has ``a``'s dtype."""
  a, b, kw = _prepared(a, b, mode)
  return jnp.matmul(a, b, **kw)


def einsum(spec: str, a: jax.Array, b: jax.Array, mode: str = "highest") -> jax.Array:
  """Two-operand ``jnp.einsum`` in precision ``mode``; the result has ``a``'s dtype."""
  a, b, kw = _prepared(a, b, mode)
  return jnp.einsum(spec, a, b, **kw)
