r"""Lemma C.2: the inverse of the collapsed fixed point, and whether it is fixed.

:math:`A^* = YY^\top + \lambda_{map} I` ``[N, N]`` has inverse
:math:`\lambda_{map}^{-1}I - \lambda_{map}^{-1}(\lambda_{map}+n)^{-1} YY^\top`
(balanced); in general :math:`\lambda_{map}^{-1}I - \sum_c
\lambda_{map}^{-1}(\lambda_{map}+n_c)^{-1} y_c y_c^\top`
(:func:`lemma_c2_inverse`). :func:`check_lemma_c2` compares it with a direct
inverse and applies one layer of Theorem 5.3's map
(:mod:`dnc_jax.theory.linearised_rfm`) to :math:`A^*`; :func:`lemma_c2_report`
does so for several class sizes. Conventions: :mod:`dnc_jax.theory.common`.

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Appendix C.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.theory.common import HIGHEST, check_classes, labels32, one_hot01, positive
from dnc_jax.theory.linearised_rfm import KAPPA_RULES, kappa_value, linearised_deep_rfm


def lemma_c2_inverse(labels: jax.Array, *, num_classes: int, lambda_map: float,
                     dtype=None) -> jax.Array:
  r"""Closed-form :math:`(A^*)^{-1}` for :math:`A^* = YY^\top + \lambda_{map} I` ``[N, N]``.

  .. math::
     (A^*)^{-1} = \lambda_{map}^{-1} I
     - \sum_c \frac{1}{\lambda_{map}(\lambda_{map}+n_c)} y_c y_c^\top,

  which for balanced classes is the paper's
  :math:`\lambda_{map}^{-1}I - \lambda_{map}^{-1}(\lambda_{map}+n)^{-1}YY^\top`.
  """
  check_classes(labels, num_classes)
  lm = positive("lambda_map", lambda_map, "λ_map")
  return _lemma_c2_inverse(labels32(labels), lm, num_classes=num_classes, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("num_classes", "dtype"))
def _lemma_c2_inverse(labels, lambda_map, *, num_classes, dtype):
  y = one_hot01(labels, num_classes=num_classes, dtype=dtype)
  counts = jnp.sum(y, axis=0)
  weights = 1.0 / (lambda_map * (lambda_map + counts))
  n = y.shape[0]
  return (jnp.eye(n, dtype=y.dtype) / lambda_map
          - jnp.matmul(y * weights[None, :], y.T, precision=HIGHEST))


class LemmaC2Result(NamedTuple):
  """Outcome of :func:`check_lemma_c2` (NumPy float64; NaN where the paper's κ <= 0)."""
  lambda_map: float
  lambda_hat: float
  class_sizes: np.ndarray
  relative_error: float          # closed form vs direct inverse
  inverse_residual: float        # ||A* C - I||_F, C the closed form
  mapped_scale_paper: np.ndarray  # [K] s_c after one layer from A*, paper kappa (1 = fixed)
  mapped_scale_fixed_point: np.ndarray  # [K] same with kappa="fixed_point"
  fixed_point_residual_paper: float     # ||T(A*) - A*||_F / ||A*||_F
  fixed_point_residual_fixed_point: float


def check_lemma_c2(labels: jax.Array, *, num_classes: int, lambda_map: float,
                   lambda_hat: float) -> LemmaC2Result:
  r"""Checks Lemma C.2 and whether :math:`A^*` is a fixed point of Theorem 5.3's map.

  The closed form is compared with a direct float64 inverse (``numpy.linalg.inv``).
  Then one layer of :func:`linearised_deep_rfm` is applied to :math:`A^*` and the
  per-class scales of the image :math:`\sum_c s_c n_c u_c u_c^\top + \lambda_{map} I`
  are read off as :math:`s_c = y_c^\top\tilde G y_c / n_c^2`; theory:
  :math:`s_c = \kappa^{-1}((n_c+\lambda_{map})/(n_c+\lambda_{map}+\hat\lambda))^2`,
  so :math:`A^*` is fixed iff every :math:`s_c = 1`.
  """
  sizes = check_classes(labels, num_classes)
  lm = positive("lambda_map", lambda_map, "λ_map")
  lh = positive("lambda_hat", lambda_hat, "λ̂")
  n_total = int(sizes.sum())
  y = np.eye(num_classes)[np.asarray(labels)]
  a_star = y @ y.T + lm * np.eye(n_total)
  direct = np.linalg.inv(a_star)
  with jax.enable_x64(True):
    lab = labels32(labels)
    closed = np.asarray(lemma_c2_inverse(lab, num_classes=num_classes, lambda_map=lm,
                                         dtype=jnp.float64))
    rel = float(np.linalg.norm(closed - direct) / np.linalg.norm(direct))
    resid = float(np.linalg.norm(a_star @ closed - np.eye(n_total)))
    scales, resids = {}, {}
    for rule in KAPPA_RULES:
      try:
        kap = kappa_value(lh, lm, rule=rule, class_size=n_total / num_classes)
      except ConfigError:
        scales[rule], resids[rule] = np.full(num_classes, np.nan), float("nan")
        continue
      g_tilde = np.asarray(linearised_deep_rfm(
          jnp.asarray(a_star), lab, num_classes=num_classes, lambda_hat=lh, lambda_map=lm,
          kappa=kap, num_layers=2).gram_tilde[0])
      resids[rule] = float(np.linalg.norm(g_tilde + lm * np.eye(n_total) - a_star)
                           / np.linalg.norm(a_star))
      scales[rule] = np.einsum("ic,ij,jc->c", y, g_tilde, y) / sizes.astype(np.float64) ** 2
  return LemmaC2Result(
      lambda_map=lm, lambda_hat=lh, class_sizes=sizes, relative_error=rel, inverse_residual=resid,
      mapped_scale_paper=scales["paper"], mapped_scale_fixed_point=scales["fixed_point"],
      fixed_point_residual_paper=resids["paper"],
      fixed_point_residual_fixed_point=resids["fixed_point"])


def lemma_c2_report(*, class_sizes: Sequence[Sequence[int]] = ((4, 4, 4), (20, 20, 20),
                                                               (10, 20, 30)),
                    lambda_map: float = 1.0, lambda_hat: float = 0.01) -> list[LemmaC2Result]:
  """:func:`check_lemma_c2` for each list of class sizes ``[K]`` (classes contiguous)."""
  return [check_lemma_c2(np.repeat(np.arange(len(s)), s), num_classes=len(s),
                         lambda_map=lambda_map, lambda_hat=lambda_hat) for s in class_sizes]
