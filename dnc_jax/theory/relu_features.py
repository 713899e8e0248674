r"""Proposition A.1: ReLU random features realise the arc-cosine kernel, with a
``1/D`` variance.

For unit ``x, y`` at angle θ and ``W`` ``[D, d]`` with i.i.d. :math:`N(0, 2/D)`
entries,
:math:`E[\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)] = (\sin\theta + (\pi-\theta)\cos\theta)/\pi`
and :math:`\mathrm{Var} = \frac{4}{D}\bigl(\frac{J_2(\theta)}{2\pi}
- \frac{J_1(\theta)^2}{4\pi^2}\bigr)`, :math:`J_1 = \sin\theta+(\pi-\theta)\cos\theta`,
:math:`J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1+2\cos^2\theta)`.
:func:`check_proposition_a1` compares both with Monte Carlo draws of ``W``;
:func:`proposition_a1_report` runs it on evenly spaced angles.

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Appendix A.
  Cho, Saul. Kernel methods for deep learning. NeurIPS 2009 (arc-cosine
  kernels).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.theory.common import HIGHEST


def relu_product_expectation(theta) -> np.ndarray:
  r""":math:`E[\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)] = (\sin\theta + (\pi-\theta)\cos\theta)/\pi`
  for unit ``x, y`` at angle θ and ``W ~ N(0, 2/D)`` (any ``D``)."""
  t = np.asarray(theta, dtype=np.float64)
  return (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi


def relu_product_variance(theta, *, width: int) -> np.ndarray:
  r"""Exact variance of :math:`\mathrm{ReLU}(Wx)\cdot\mathrm{ReLU}(Wy)`, ``W`` ``[D, d]``.

  A sum of ``D`` i.i.d. terms :math:`\frac{2}{D}\mathrm{ReLU}(g_1)\mathrm{ReLU}(g_2)`
  with :math:`\mathrm{corr}(g_1, g_2) = \cos\theta`, and
  :math:`E[\mathrm{ReLU}(g_1)^2\mathrm{ReLU}(g_2)^2] = J_2(\theta)/(2\pi)` (Cho & Saul), so
  :math:`\mathrm{Var} = \frac{4}{D}(J_2/(2\pi) - J_1^2/(4\pi^2))`.
  """
  t = np.asarray(theta, dtype=np.float64)
  j1 = np.sin(t) + (np.pi - t) * np.cos(t)
  j2 = 3.0 * np.sin(t) * np.cos(t) + (np.pi - t) * (1.0 + 2.0 * np.cos(t) ** 2)
  return 4.0 / float(width) * (j2 / (2.0 * np.pi) - j1 ** 2 / (4.0 * np.pi ** 2))


@functools.partial(jax.jit, static_argnames=("widths", "num_draws", "dim", "chunk"))
def _relu_products(key, thetas, *, widths, num_draws, dim, chunk):
  """``[W, num_draws, A]`` samples of ReLU(Wx)·ReLU(Wy_θ), ``W`` ``[D, dim]`` ~ N(0, 2/D).

  One standard-normal ``G`` ``[max(widths), dim]`` is drawn per sample; width ``D``
  uses its first ``D`` rows scaled by ``sqrt(2/D)`` (nested draws: each width has
  the exact law, widths are correlated with each other, which no statistic here
  uses).
  """
  k_basis, k_w = jax.random.split(key)
  q, _ = jnp.linalg.qr(jax.random.normal(k_basis, (dim, 2), thetas.dtype))
  x, x_perp = q[:, 0], q[:, 1]
  ys = jnp.cos(thetas)[:, None] * x[None, :] + jnp.sin(thetas)[:, None] * x_perp[None, :]
  d_max = max(widths)

  def one(k):
    g = jax.random.normal(k, (d_max, dim), thetas.dtype)
    fx = jax.nn.relu(jnp.matmul(g, x, precision=HIGHEST))                 # [D]
    fy = jax.nn.relu(jnp.matmul(g, ys.T, precision=HIGHEST))              # [D, A]
    csum = jnp.cumsum(fx[:, None] * fy, axis=0)                           # [D, A]
    return jnp.stack([2.0 / w * csum[w - 1] for w in widths])            # [W, A]

  keys = jax.random.split(k_w, num_draws).reshape(num_draws // chunk, chunk)
  out = jax.lax.map(jax.vmap(one), keys).reshape(num_draws, len(widths), -1)
  return jnp.transpose(out, (1, 0, 2))


class PropA1Result(NamedTuple):
  """Outcome of :func:`check_proposition_a1` (NumPy float64)."""
  thetas: np.ndarray            # [A] radians
  width: int
  num_draws: int
  mc_mean: np.ndarray           # [A]
  mc_se: np.ndarray             # [A] standard error of the mean
  expected: np.ndarray          # [A]
  z_scores: np.ndarray          # [A]
  widths: np.ndarray            # [W]
  mc_variance: np.ndarray       # [W, A] sample variance per draw
  predicted_variance: np.ndarray  # [W, A]
  variance_slope: float         # slope of log(mean_theta var) vs log D (expected -1)
  variance_ratio: np.ndarray    # [W] mean over angles of mc_variance / predicted


def check_proposition_a1(key: jax.Array, *, thetas: Sequence[float] | None = None,
                         width: int = 4096, widths: Sequence[int] = (64, 256, 1024, 4096),
                         num_draws: int = 512, dim: int = 4) -> PropA1Result:
  r"""Monte Carlo check of Proposition A.1 and of the ``1/D`` variance.

  Args:
    key: PRNG key.
    thetas: angles in ``[0, π]`` (default: 12 evenly spaced, endpoints included).
    width: ``D`` for the mean check.
    widths: ``D`` values for the variance scaling (each uses ``num_draws`` draws).
    num_draws: independent ``W`` ``[D, dim]`` per width; a multiple of 8.
    dim: input dimension ``d`` (irrelevant in law; kept to draw the full ``W``).

  Returns:
    :class:`PropA1Result`.
  """
  th = np.linspace(0.0, np.pi, 12) if thetas is None else np.asarray(thetas, dtype=np.float64)
  if th.ndim != 1 or th.size < 1 or th.min() < 0.0 or th.max() > np.pi:
    raise ConfigError("thetas must be a non-empty list of angles in [0, pi] (radians).")
  if int(dim) < 2:
    raise ConfigError(f"dim={dim}: two distinct unit vectors need d >= 2.")
  chunk = 8
  if int(num_draws) < 16 or int(num_draws) % chunk:
    raise ConfigError(f"num_draws={num_draws}: use a multiple of {chunk}, at least 16.")
  all_widths = sorted(set(int(w) for w in widths) | {int(width)})
  if all_widths[0] < 1:
    raise ConfigError("widths must be positive.")
  with jax.enable_x64(True):
    out = np.asarray(_relu_products(key, jnp.asarray(th), widths=tuple(all_widths),
                                    num_draws=int(num_draws), dim=int(dim), chunk=chunk))
  samples = dict(zip(all_widths, out))
  s = samples[int(width)]
  mean = s.mean(axis=0)
  se = s.std(axis=0, ddof=1) / math.sqrt(num_draws)
  expected = relu_product_expectation(th)
  # at theta = pi the product is 0 up to round-off (y = -x): no spread to test against
  degenerate = se < 1e-10
  z = np.where(degenerate, 0.0, (mean - expected) / np.where(degenerate, 1.0, se))
  ws = np.asarray(sorted(set(int(w) for w in widths)))
  var = np.stack([samples[w].var(axis=0, ddof=1) for w in ws])
  pred = np.stack([relu_product_variance(th, width=w) for w in ws])
  # angles where the variance vanishes (theta = pi: one of the two ReLUs is 0) are left out
  keep = pred[0] > 1e-12
  slope = float(np.polyfit(np.log(ws), np.log(var[:, keep].mean(axis=1)), 1)[0]) \
      if ws.size >= 2 and keep.any() else float("nan")
  ratio = (var[:, keep] / pred[:, keep]).mean(axis=1) if keep.any() else np.full(ws.size, np.nan)
  return PropA1Result(
      thetas=th, width=int(width), num_draws=int(num_draws), mc_mean=mean, mc_se=se,
      expected=expected, z_scores=z,
      widths=ws, mc_variance=var, predicted_variance=pred, variance_slope=slope,
      variance_ratio=ratio)


def proposition_a1_report(key: jax.Array, *, angles: int = 12, width: int = 4096,
                          widths: Sequence[int] = (64, 256, 1024, 4096), num_draws: int = 512,
                          dim: int = 4) -> PropA1Result:
  """:func:`check_proposition_a1` at ``angles`` evenly spaced angles in ``[0, π]``,
  endpoints included."""
  if int(angles) < 2:
    raise ConfigError(f"angles={angles}: need at least 2 angles.")
  return check_proposition_a1(key, thetas=np.linspace(0.0, np.pi, int(angles)), width=width,
                              widths=widths, num_draws=num_draws, dim=dim)
