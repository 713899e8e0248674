"""Executable versions of the paper's theory (Section 5, Appendices A–C), in float64.

* :mod:`~dnc_jax.theory.common` — conventions, 0/1 targets, NC1 of a Gram matrix,
  full-rank synthetic data, geometric-rate fits.
* :mod:`~dnc_jax.theory.linearised_rfm` — Theorem 5.3: the linearised Deep RFM
  iteration, its rate and floor, and the real kernels beside it.
* :mod:`~dnc_jax.theory.fixed_point_inverse` — Lemma C.2: the inverse of
  ``YYᵀ + λ_map I`` and whether it is a fixed point.
* :mod:`~dnc_jax.theory.optimal_kernel` — Theorem 5.4 and Proposition B.1: the
  kernel maximising the ridge objective is ``YYᵀ``.
* :mod:`~dnc_jax.theory.relu_features` — Proposition A.1: ReLU random features and
  the arc-cosine kernel.
* :mod:`~dnc_jax.theory.report` — conventions of every named quantity, JSON-ready
  results and the Markdown tables.

The figures are in :mod:`dnc_jax.viz.theory`; the names re-exported here are those
used elsewhere in the package, its tests and documents.
"""
from dnc_jax.theory.common import (collapse_target, fit_geometric_rate, gram_nc1,
                                   make_full_rank_data)
from dnc_jax.theory.fixed_point_inverse import check_lemma_c2, lemma_c2_inverse, lemma_c2_report
from dnc_jax.theory.linearised_rfm import (check_theorem_5_3, compare_with_nonlinear_kernels,
                                           kappa_value, kernel_linearisation,
                                           linearised_deep_rfm, local_rate, sweep_theorem_5_3,
                                           theorem_5_3_report)
from dnc_jax.theory.optimal_kernel import (check_proposition_b1, check_theorem_5_4,
                                           kernel_objective, make_feasible, objective_at_target,
                                           project_feasible, random_feasible_kernel,
                                           realise_collapsed_kernel, theorem_5_4_report)
from dnc_jax.theory.relu_features import (check_proposition_a1, proposition_a1_report,
                                          relu_product_expectation, relu_product_variance)
from dnc_jax.theory.report import CONVENTIONS, as_dict

_FIGURES = ("plot_theorem_5_3", "plot_lemma_c2", "plot_theorem_5_4", "plot_proposition_a1")


def __getattr__(name):
  # The figures live in dnc_jax.viz.theory, imported on first use: importing the
  # theory loads neither the figure code nor matplotlib.
  if name in _FIGURES:
    from dnc_jax.viz import theory as figures
    return getattr(figures, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
