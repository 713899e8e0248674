"""Figures of the theory checks (:mod:`dnc_jax.theory`), one PNG per check.

* :func:`plot_theorem_5_3` — error per layer, fitted against predicted rates over
  λ̂/λ_map, floors, and the real kernels beside their linearisation.
* :func:`plot_lemma_c2` — the closed form's error and the fixed-point residuals.
* :func:`plot_theorem_5_4` — the objective and the distance to YYᵀ along the ascent,
  random feasible kernels, and the Mahalanobis kernels of Proposition B.1.
* :func:`plot_proposition_a1` — Monte Carlo against the arc-cosine formula, and the
  variance against the width.

:data:`FIGURES` maps each check of ``bin/theory`` to its figure. matplotlib is
imported on first use (:func:`dnc_jax.viz.style.pyplot`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dnc_jax.theory.fixed_point_inverse import LemmaC2Result
from dnc_jax.theory.linearised_rfm import Thm53Report
from dnc_jax.theory.optimal_kernel import Thm54Report
from dnc_jax.theory.relu_features import PropA1Result, relu_product_expectation
from dnc_jax.viz import style
from dnc_jax.viz.collapse import legend_outside


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_theorem_5_3(report: Thm53Report, path: str) -> str:
  """Four panels: error per layer, fitted vs predicted rates over λ̂/λ_map, floors,
  and the non-linear comparison. Writes a PNG to ``path``; returns it."""
  plt = style.pyplot()
  fig, ax = plt.subplots(2, 2, figsize=(12, 9))
  a = ax[0, 0]
  for name, r in report.runs.items():
    a.semilogy(np.arange(1, r.gram_error.size + 1), np.maximum(r.relative_gram_error, 1e-17),
               marker=".", label=f"{name} (κ={r.kappa:.4f})")
  a.set_xlabel("layer l")
  a.set_ylabel("‖X̃X̃ᵀ − YYᵀ‖_F / ‖YYᵀ‖_F")
  a.set_title(f"Theorem 5.3: λ̂={next(iter(report.runs.values())).lambda_hat:g}, "
              f"λ_map={next(iter(report.runs.values())).lambda_map:g}")
  a.legend(fontsize=8)
  sw = report.sweep
  a = ax[0, 1]
  for i, rule in enumerate(sw.kappa_rules):
    for j, lm in enumerate(sw.lambda_maps):
      line = a.loglog(sw.ratios, sw.fitted_rate[i, j], marker="o" if i == 0 else "s",
                      linestyle="none", label=f"fitted, κ {rule}, λ_map={lm:g}")
      a.loglog(sw.ratios, sw.local_rate[i, j], color=line[0].get_color(), linewidth=0.8)
  a.loglog(sw.ratios, sw.ratios / (1 + sw.ratios), "k--", label="r/(1+r)")
  bound = sw.bound_rate[1, list(sw.lambda_maps).index(1.0)] if 1.0 in sw.lambda_maps \
      else sw.bound_rate[1, 0]
  a.loglog(sw.ratios, bound, "k:", label="proof's bound (κ fixed point, C=1)")
  a.axhline(1.0, color="grey", linewidth=0.5)
  a.set_xlabel("r = λ̂ / λ_map")
  a.set_ylabel("geometric rate per layer")
  a.set_title("fitted rate (markers) vs Jacobian rate (lines)")
  a.legend(fontsize=6)
  a = ax[1, 0]
  for i, rule in enumerate(sw.kappa_rules):
    for j, lm in enumerate(sw.lambda_maps):
      a.loglog(sw.ratios, np.maximum(sw.floor[i, j], 1e-16), marker="o" if i == 0 else "s",
               label=f"κ {rule}, λ_map={lm:g}")
  a.loglog(sw.ratios, sw.ratios ** 2, "k--", label="(λ̂/λ_map)²")
  a.set_xlabel("r = λ̂ / λ_map")
  a.set_ylabel("floor ‖X̃X̃ᵀ − YYᵀ‖_F at the last layer")
  a.set_title("floor (balanced classes)")
  a.legend(fontsize=6)
  a = ax[1, 1]
  c = report.comparison
  layers = np.arange(1, c.nc1_nonlinear.size + 1)
  a.semilogy(layers, c.nc1_nonlinear, "o-", label=f"{c.kernel} KRR + ReLU features (D={c.width})")
  a.semilogy(layers, c.nc1_linearised_kernels, "s-", label="same, kernels linearised")
  a.semilogy(layers, c.nc1_theorem, "^-",
             label=f"Thm 5.3 map, λ̂={c.lambda_hat_effective:.3g}, λ_map={c.lambda_map_effective:.3g}")
  a.set_xlabel("layer l")
  a.set_ylabel("NC1 of X̃_{l+1} = tr Σ_W / tr Σ_B")
  a.set_title("real kernels vs their linearisation")
  a.legend(fontsize=7)
  return _save(plt, fig, path)


def plot_lemma_c2(results: Sequence[LemmaC2Result], path: str) -> str:
  """Bar chart of the Lemma C.2 errors and of the fixed-point residuals."""
  plt = style.pyplot()
  fig, ax = plt.subplots(1, 2, figsize=(10, 4))
  names = [f"n_c={r.class_sizes.tolist()}" for r in results]
  ax[0].bar(names, [max(r.relative_error, 1e-18) for r in results])
  ax[0].set_yscale("log")
  ax[0].set_ylabel("‖closed form − inv(A*)‖_F / ‖inv(A*)‖_F")
  ax[0].set_title("Lemma C.2 (float64)")
  width = 0.35
  pos = np.arange(len(results))
  ax[1].bar(pos - width / 2, [max(r.fixed_point_residual_paper, 1e-18) for r in results], width,
            label="κ paper")
  ax[1].bar(pos + width / 2, [max(r.fixed_point_residual_fixed_point, 1e-18) for r in results],
            width, label="κ fixed point")
  ax[1].set_xticks(pos, names)
  ax[1].set_yscale("log")
  ax[1].set_ylabel("‖T(A*) − A*‖_F / ‖A*‖_F")
  ax[1].set_title("is A* = YYᵀ + λ_map I a fixed point?")
  legend_outside(ax[1])   # inside the panel it covers the tallest bars
  return _save(plt, fig, path)


def plot_theorem_5_4(report: Thm54Report, path: str) -> str:
  """Objective and distance to YYᵀ along the ascent; random kernels; Mahalanobis runs."""
  plt = style.pyplot()
  r = report.relaxed
  fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
  steps = np.arange(1, r.history.shape[1] + 1)
  for s in range(r.history.shape[0]):
    ax[0].plot(steps, r.history[s], linewidth=1)
  ax[0].axhline(r.objective_at_target, color="k", linestyle="--",
                label=f"J(YYᵀ) = Σ n_c²/(n_c+μ) = {r.objective_at_target:.4g}")
  counts, edges = np.histogram(r.random_objectives, bins=30)
  ax[0].barh(0.5 * (edges[1:] + edges[:-1]), counts * (0.3 * steps[-1] / max(counts.max(), 1)),
             height=np.diff(edges), alpha=0.4,
             label=f"{r.random_objectives.size} random feasible k (histogram)")
  ax[0].set_xlabel("ascent step")
  ax[0].set_ylabel("J(k) = Σ_c Y_cᵀ(k+μI)⁻¹k Y_c")
  ax[0].set_title(f"Theorem 5.4, μ={r.mu:g}, n_c={r.class_sizes.tolist()}")
  ax[0].legend(fontsize=7)
  for s in range(r.distance_history.shape[0]):
    ax[1].semilogy(steps, np.maximum(r.distance_history[s], 1e-17), linewidth=1)
  ax[1].set_xlabel("ascent step")
  ax[1].set_ylabel("‖k − YYᵀ‖_F / ‖YYᵀ‖_F")
  ax[1].set_title("projected gradient ascent reaches YYᵀ")
  for kind, b in report.parametrised.items():
    st = np.arange(1, b.optimised_distance.size + 1) * b.record_every
    ax[2].semilogy(st, b.optimised_distance, label=f"{kind} kernel, L={b.bandwidth:g}: Adam on M")
  ax[2].set_xlabel("Adam step")
  ax[2].set_ylabel("‖k_M − YYᵀ‖_F / ‖YYᵀ‖_F")
  ax[2].set_title("Proposition B.1: Mahalanobis kernels")
  ax[2].legend(fontsize=7)
  return _save(plt, fig, path)


def plot_proposition_a1(result: PropA1Result, path: str) -> str:
  """MC mean ± 2 SE against the arc-cosine formula; variance against D."""
  plt = style.pyplot()
  r = result
  fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
  grid = np.linspace(0.0, np.pi, 200)
  ax[0].plot(grid, relu_product_expectation(grid), "k-", label="(sin θ + (π−θ) cos θ)/π")
  ax[0].errorbar(r.thetas, r.mc_mean, yerr=2 * r.mc_se, fmt="o", markersize=4,
                 label=f"Monte Carlo, D={r.width}, {r.num_draws} draws (±2 SE)")
  ax[0].set_xlabel("θ (radians)")
  ax[0].set_ylabel("ReLU(Wx)·ReLU(Wy)")
  ax[0].set_title("Proposition A.1, W ~ N(0, 2/D)")
  ax[0].legend(fontsize=8)
  keep = r.predicted_variance[0] > 1e-12
  for i in np.nonzero(keep)[0][:: max(1, keep.sum() // 4)]:
    line = ax[1].loglog(r.widths, r.mc_variance[:, i], "o", label=f"θ={r.thetas[i]:.2f}")
    ax[1].loglog(r.widths, r.predicted_variance[:, i], "-", color=line[0].get_color())
  ax[1].set_xlabel("width D")
  ax[1].set_ylabel("variance per draw")
  ax[1].set_title(f"variance ∝ 1/D (fitted slope {r.variance_slope:.3f}); lines: exact")
  ax[1].legend(fontsize=8)
  return _save(plt, fig, path)


FIGURES = {"thm53": plot_theorem_5_3, "lemma_c2": plot_lemma_c2, "thm54": plot_theorem_5_4,
           "prop_a1": plot_proposition_a1}
