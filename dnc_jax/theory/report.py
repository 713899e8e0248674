"""Reports of the theory checks: the conventions of every named quantity, JSON-ready
results and the Markdown summary (the tables ``bin/theory`` prints).

Reports are keyed by check (``"thm53"``, ``"lemma_c2"``, ``"thm54"``,
``"prop_a1"``), each the value of its ``*_report`` function.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np

from dnc_jax.io.jsonio import clean
from dnc_jax.theory.fixed_point_inverse import LemmaC2Result
from dnc_jax.theory.linearised_rfm import NonlinearComparison, Thm53Report, Thm53Sweep
from dnc_jax.theory.optimal_kernel import Thm54Report
from dnc_jax.theory.relu_features import PropA1Result

# What each named quantity in results.json means (written into the file).
CONVENTIONS = {
    "gram_error": "||Xt_{l+1} Xt_{l+1}^T - Y Y^T||_F per layer l (rows are samples; Y one-hot 0/1 "
                  "[N, K], so YY^T is the block of ones; the paper's ||Xt^T Xt - Y^T Y||)",
    "relative_gram_error": "gram_error / ||Y Y^T||_F",
    "step_change": "||Xt_{l+2} Xt_{l+2}^T - Xt_{l+1} Xt_{l+1}^T||_F between consecutive layers",
    "fitted_rate": "exp(slope) of a least-squares line through log(step_change) over the last "
                   "layers above round-off (first layer left out): measured geometric rate",
    "local_rate": "spectral radius of the Jacobian of the symmetrised layer map at its fixed point "
                  "(closed form): the predicted asymptotic rate",
    "bound_rate": "the proof's contraction factor 1-eps = 2 lambda_hat n_max (1 + 1/lambda_map) / "
                  "(kappa lambda_map) (constant C = 1)",
    "floor": "gram_error at the last layer",
    "floor_predicted": "sqrt(sum_c (s_c - 1)^2 n_c^2), s_c the fixed-point scale of class c",
    "floor_order": "(lambda_hat / lambda_map)^2, the theorem's O(.) floor without its constant",
    "kappa": "rescaling: Xt^T Xt = kappa^-1 X^T M X; 'paper' = 1 - 2 lambda_hat (1 + 1/lambda_map), "
             "'fixed_point' = ((n + lambda_map)/(n + lambda_map + lambda_hat))^2 with n = N/K",
    "nc1": "tr(Sigma_W)/tr(Sigma_B) from the Gram matrix, global mean = sample mean (paper)",
    "lemma_c2_relative_error": "||closed form - inv(A*)||_F / ||inv(A*)||_F, A* = YY^T + lambda_map I",
    "objective": "J(k) = sum_c Y_c^T (k + mu I)^-1 k Y_c, Y_c the 0/1 indicator of class c",
    "objective_at_target": "J(YY^T) = sum_c n_c^2/(n_c + mu) (= K n^2/(n + mu) balanced)",
    "relative_distance_to_target": "||k - YY^T||_F / ||YY^T||_F",
    "mc_mean": "mean over draws of ReLU(Wx).ReLU(Wy), W [D, d] i.i.d. N(0, 2/D), unit x, y",
    "expected": "(sin(theta) + (pi - theta) cos(theta))/pi",
    "z_score": "(mc_mean - expected) / (sample std / sqrt(draws))",
    "predicted_variance": "(4/D) (J2/(2 pi) - J1^2/(4 pi^2)), per draw",
}


def as_dict(obj):
  """JSON-ready copy of a result: NamedTuples → dicts, arrays → lists, NaN/inf → None."""
  return clean(_plain(obj))


def _plain(obj):
  """NamedTuples → dicts and JAX arrays → NumPy, recursively (:func:`clean` does the rest)."""
  if hasattr(obj, "_asdict"):
    return {k: _plain(v) for k, v in obj._asdict().items()}
  if isinstance(obj, dict):
    return {k: _plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_plain(v) for v in obj]
  if isinstance(obj, jax.Array):
    return np.asarray(obj)
  return obj


def results_json(reports: dict, *, check: str, seed: int, seconds: dict) -> dict:
  """``results.json`` of a run: its check and seed, :data:`CONVENTIONS`, the wall time
  per check and every report as :func:`as_dict`."""
  results = {"check": check, "seed": seed, "dtype": "float64", "conventions": CONVENTIONS,
             "seconds": seconds}
  for name, rep in reports.items():
    results[name] = as_dict(rep)
  return results


def summary_markdown(reports: dict, *, seconds: dict) -> str:
  """``summary.md`` of a run: the tables of each report, then the wall time per check."""
  lines = []
  for name, rep in reports.items():
    lines += TABLES[name](rep) + [""]
  lines.append("Wall time per check (s): " + ", ".join(
      f"{k} {v:.1f}" for k, v in seconds.items()))
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Tables (Markdown; every number's convention is in the header or the caption).


def _g(v, digits: int = 4) -> str:
  """``v`` to ``digits`` significant digits; "–" for None and NaN."""
  if v is None:
    return "–"
  v = float(v)
  if math.isnan(v):
    return "–"
  return f"{v:.{digits}g}"


def _table(header, rows) -> list[str]:
  """A Markdown table as lines."""
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return out


def tables_thm53(rep: Thm53Report) -> list[str]:
  """Markdown lines: single runs, the λ̂/λ_map sweep and the real-kernel comparison."""
  return _thm53_runs(rep.runs) + _thm53_sweep(rep.sweep) + _thm53_comparison(rep.comparison)


def _thm53_runs(runs: dict) -> list[str]:
  lines = ["### Theorem 5.3: single runs",
           "",
           "Linearised Deep RFM on Gram matrices, float64. gram error = ‖X̃X̃ᵀ − YYᵀ‖_F (rows are "
           "samples, Y one-hot 0/1); fitted rate = exp(slope) of log ‖ΔX̃X̃ᵀ‖_F over the last "
           "layers above round-off; Jacobian rate = closed-form spectral radius of the layer map "
           "at its fixed point; bound = the proof's 1−ε = 2λ̂n_max(1+1/λ_map)/(κλ_map) with "
           "C = 1; condition = bound < 1 and κ > 1/2; floor = gram error at the last layer; "
           "predicted floor = (Σ_c (s_c*−1)² n_c²)^½.",
           ""]
  rows = []
  for name, r in runs.items():
    data, rule = name.split("/")
    rows.append([data + " " + str(r.class_sizes.tolist()), rule, _g(r.kappa, 6),
                 _g(r.lambda_hat / r.lambda_map), _g(r.gram_error[0]), _g(r.fitted_rate),
                 _g(r.local_rate), _g(r.bound_rate), "yes" if r.condition_holds else "no",
                 _g(r.floor, 3), _g(r.floor_predicted, 3), _g(r.floor_order, 3),
                 _g(r.min_eig_data, 3)])
  lines += _table(["data (n_c)", "κ rule", "κ", "λ̂/λ_map", "gram error, layer 1",
                   "fitted rate", "Jacobian rate", "bound 1−ε", "condition", "floor",
                   "predicted floor", "(λ̂/λ_map)²", "λ_min(XXᵀ)"], rows)
  return lines


def _thm53_sweep(sw: Thm53Sweep) -> list[str]:
  lines = ["", "### Theorem 5.3: sweep over λ̂/λ_map (balanced data)", "",
            "Same conventions; '–' where the paper's κ = 1 − 2λ̂(1+1/λ_map) ≤ 0. "
            "r/(1+r) is the large-n approximation of the Jacobian rate.", ""]
  rows = []
  for j, lm in enumerate(sw.lambda_maps):
    for q, ratio in enumerate(sw.ratios):
      rows.append([_g(ratio), _g(lm), _g(ratio / (1 + ratio)),
                   _g(sw.fitted_rate[0, j, q]), _g(sw.local_rate[0, j, q]),
                   _g(sw.floor[0, j, q], 3),
                   _g(sw.fitted_rate[1, j, q]), _g(sw.local_rate[1, j, q]),
                   _g(sw.floor[1, j, q], 3), _g(sw.bound_rate[1, j, q], 3),
                   "yes" if sw.condition_holds[1, j, q] else "no"])
  lines += _table(["λ̂/λ_map", "λ_map", "r/(1+r)", "paper κ: fitted rate", "Jacobian rate",
                   "floor", "fixed-point κ: fitted rate", "Jacobian rate", "floor",
                   "bound 1−ε (fixed-point κ)", "condition (fixed-point κ)"], rows)
  return lines


def _thm53_comparison(c: NonlinearComparison) -> list[str]:
  lines = ["", "### Theorem 5.3: real kernels vs their linearisation (balanced data)", "",
            f"NC1 = tr Σ_W / tr Σ_B of X̃_(l+1) (sample global mean), 0/1 targets. "
            f"Non-linear: {c.kernel} kernel (L = {c.bandwidth:g}), KRR with ridge "
            f"{c.ridge:g} (0 = ridgeless), AGOP (mean over samples), ReLU random features "
            f"D = {c.width}, W ~ N(0, 2/D), rows normalised each layer. Linearised kernels: "
            "k ≈ c0 + c1 XXᵀ + c2 I with (c0, c1, c2) = "
            f"({', '.join(_g(v) for v in c.predictor_coefficients)}) "
            f"for the predictor and ({', '.join(_g(v) for v in c.feature_coefficients)}) for "
            f"the ReLU features. Theorem map: λ̂ = c2/c1 = {_g(c.lambda_hat_effective)}, "
            f"λ_map = a2/a1 = {_g(c.lambda_map_effective)} (ratio "
            f"{_g(c.lambda_hat_effective / c.lambda_map_effective)}), fixed-point κ. Residual = "
            "‖k − linearisation‖_F / ‖k‖_F at that layer's input.", ""]
  rows = []
  for layer in range(c.nc1_nonlinear.size):
    rows.append([layer + 1, _g(c.nc1_nonlinear[layer], 3), _g(c.nc1_linearised_kernels[layer], 3),
                 _g(c.nc1_theorem[layer], 3), _g(c.predictor_residual[layer], 3),
                 _g(c.feature_residual[layer], 3)])
  rows.append(["NC1 rate per layer", _g(c.rate_nonlinear, 3), _g(c.rate_linearised_kernels, 3),
               _g(c.rate_theorem, 3), "", ""])
  lines += _table(["layer", "NC1 non-linear", "NC1 linearised kernels", "NC1 theorem map",
                   "predictor residual", "feature residual"], rows)
  return lines


def tables_lemma_c2(results: Sequence[LemmaC2Result]) -> list[str]:
  """Markdown lines: the closed form's error and the fixed-point test per class sizes."""
  lines = ["### Lemma C.2", "",
           "A* = YYᵀ + λ_map I. error = ‖closed form − inv(A*)‖_F / ‖inv(A*)‖_F (float64); "
           "s_c = scale of class c after one layer of the Theorem 5.3 map applied to A* "
           "(1 = fixed); residual = ‖T(A*) − A*‖_F / ‖A*‖_F.", ""]
  rows = []
  for r in results:
    rows.append([str(r.class_sizes.tolist()), _g(r.lambda_map), _g(r.lambda_hat),
                 _g(r.relative_error, 3), _g(r.inverse_residual, 3),
                 ", ".join(_g(v, 6) for v in r.mapped_scale_paper),
                 _g(r.fixed_point_residual_paper, 3),
                 ", ".join(_g(v, 6) for v in r.mapped_scale_fixed_point),
                 _g(r.fixed_point_residual_fixed_point, 3)])
  lines += _table(["n_c", "λ_map", "λ̂", "error", "‖A*C − I‖_F", "s_c (paper κ)",
                   "residual (paper κ)", "s_c (fixed-point κ)", "residual (fixed-point κ)"], rows)
  return lines


def tables_thm54(rep: Thm54Report) -> list[str]:
  """Markdown lines: the relaxed ascent and the Mahalanobis kernels."""
  r = rep.relaxed
  lines = ["### Theorem 5.4: relaxed problem", "",
           f"J(k) = Σ_c Y_cᵀ(k+μI)⁻¹k Y_c with 0/1 class indicators, μ = {_g(r.mu)}, classes "
           f"{r.class_sizes.tolist()}; J(YYᵀ) = Σ_c n_c²/(n_c+μ) = {r.objective_at_target:.10g}. "
           "Projected gradient ascent (Dykstra projection onto PSD ∩ {k ≥ 0} ∩ {diag = 1}); "
           "finals made exactly feasible before J is evaluated. distance = ‖k − YYᵀ‖_F / ‖YYᵀ‖_F.",
           ""]
  rows = []
  for s in range(r.objectives.size):
    rows.append([s, _g(r.start_objectives[s], 6), f"{r.objectives[s]:.12g}",
                 _g(r.objectives[s] - r.objective_at_target, 3),
                 _g(r.relative_distance[s], 3)])
  lines += _table(["start", "J(start)", "J(final)", "J(final) − J(YYᵀ)", "distance"], rows)
  lines += ["", f"{r.random_objectives.size} random feasible kernels: max J = "
            f"{r.random_objectives.max():.6g}, mean J = {r.random_objectives.mean():.6g} "
            f"(all below J(YYᵀ) = {r.objective_at_target:.6g}); largest J − J(YYᵀ) over finals "
            f"and randoms = {_g(r.max_excess, 3)}; smallest eigenvalue of the finals "
            f"{_g(r.min_eigenvalue, 3)}, smallest entry {_g(r.min_entry, 3)}."]
  if rep.parametrised:
    lines += ["", "### Theorem 5.4 through Mahalanobis kernels (Proposition B.1)", "",
              "Full-rank data (N ≤ d). Construction: M from R = X Nᵀ with class c mapped to "
              "β e_c; distance = ‖k_M − YYᵀ‖_F/‖YYᵀ‖_F, closed form φ(β√2)(N² − Σn_c²)^½/‖YYᵀ‖_F. "
              "Optimised: Adam on N (M = NᵀN) from N ≈ I.", ""]
    rows = []
    for kind, b in rep.parametrised.items():
      for i, beta in enumerate(b.betas):
        rows.append([kind, f"construction β = {_g(beta)}", _g(b.constructive_distance[i], 3),
                     _g(b.constructive_distance_predicted[i], 3),
                     f"{b.constructive_objective[i]:.8g}"])
      rows.append([kind, f"Adam, {b.optimised_distance.size * b.record_every} steps (start J = "
                   f"{b.initial_objective:.6g})", _g(b.final_distance, 3), "",
                   f"{b.final_objective:.8g}"])
    lines += _table(["kernel", "M", "distance", "closed form", "J(k_M)"], rows)
    lines += ["", f"J(YYᵀ) = {r.objective_at_target:.8g}."]
  return lines


def tables_prop_a1(r: PropA1Result) -> list[str]:
  """Markdown lines: Monte Carlo mean per angle and variance per width."""
  lines = ["### Proposition A.1", "",
           f"ReLU(Wx)·ReLU(Wy), unit x, y at angle θ, W [D, d] i.i.d. N(0, 2/D), D = {r.width}, "
           f"{r.num_draws} draws. formula = (sin θ + (π−θ) cos θ)/π; SE = sample std/√draws; "
           "z = (mean − formula)/SE (θ = π: the product is exactly 0).", ""]
  rows = [[_g(t, 4), f"{m:.6f}", _g(s, 3), f"{e:.6f}", f"{z:+.2f}"]
          for t, m, s, e, z in zip(r.thetas, r.mc_mean, r.mc_se, r.expected, r.z_scores)]
  lines += _table(["θ", "MC mean", "SE", "formula", "z"], rows)
  lines += ["", "Variance per draw against D (mean over θ < π of sample variance / exact "
            "(4/D)(J₂/2π − J₁²/4π²)):", ""]
  rows = [[int(w), _g(v, 4)] for w, v in zip(r.widths, r.variance_ratio)]
  lines += _table(["D", "MC variance / exact"], rows)
  lines += ["", f"log-log slope of the variance against D: {r.variance_slope:.4f} (exact: −1); "
            f"max |z| = {np.max(np.abs(r.z_scores)):.2f}."]
  return lines


TABLES = {"thm53": tables_thm53, "lemma_c2": tables_lemma_c2, "thm54": tables_thm54,
          "prop_a1": tables_prop_a1}
