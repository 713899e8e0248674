"""``bin/theory``: numerical checks of the paper's theory (SPEC §5).

``bin/theory thm53|lemma_c2|thm54|prop_a1|all --out DIR``: parse → :class:`TheoryConfig`
→ one :mod:`dnc_jax.theory` report per check → ``DIR/config.json``,
``DIR/results.json`` (named quantities; ``conventions`` says what each means),
``DIR/summary.md`` (the tables printed to stdout) and one PNG per check.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import ConfigError, DncError

CHECKS = ("thm53", "lemma_c2", "thm54", "prop_a1")
# What marks an output directory of this command (refused as --out without --overwrite).
RUN_FILES = ("config.json", "results.json", "summary.md")


def _ints(text: str) -> tuple:
  try:
    return tuple(int(v) for v in text.split(",") if v.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _floats(text: str) -> tuple:
  try:
    return tuple(float(v) for v in text.split(",") if v.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _strs(text: str) -> tuple:
  return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class Thm53Config:
  class_sizes: tuple = (20, 20, 20)
  unbalanced_sizes: tuple = (10, 20, 30)
  dim: int = 120
  noise: float = 1.0
  lambda_hat: float = 0.01
  lambda_map: float = 1.0
  layers: int = 30
  ratios: tuple = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
  lambda_maps: tuple = (0.5, 1.0, 2.0)
  compare_layers: int = 10
  kernel: str = "laplace"
  bandwidth: float = 2.0
  width: int = 1024
  ridge: float = 0.0


@dataclasses.dataclass(frozen=True)
class LemmaC2Config:
  class_sizes: tuple = ((4, 4, 4), (20, 20, 20), (10, 20, 30))
  lambda_map: float = 1.0
  lambda_hat: float = 0.01


@dataclasses.dataclass(frozen=True)
class Thm54Config:
  num_classes: int = 3
  per_class: int = 4
  mu: float = 1.0
  starts: int = 4
  steps: int = 300
  projection_iters: int = 100
  step_size: float | None = None
  random: int = 500
  dim: int = 16
  kernels: tuple = ("gaussian", "laplace")
  bandwidth: float = 1.0
  mahalanobis_steps: int = 2000
  learning_rate: float = 0.05


@dataclasses.dataclass(frozen=True)
class PropA1Config:
  angles: int = 12
  width: int = 4096
  widths: tuple = (64, 256, 1024, 4096)
  draws: int = 512
  dim: int = 4


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
  check: str
  out: str
  seed: int = 0
  figures: bool = True
  overwrite: bool = False
  progress: bool = True
  thm53: Thm53Config = Thm53Config()
  lemma_c2: LemmaC2Config = LemmaC2Config()
  thm54: Thm54Config = Thm54Config()
  prop_a1: PropA1Config = PropA1Config()

  @property
  def checks(self) -> tuple:
    return CHECKS if self.check == "all" else (self.check,)


def build_parser() -> argparse.ArgumentParser:
  d53, dc2, d54, da1 = Thm53Config(), LemmaC2Config(), Thm54Config(), PropA1Config()
  p = argparse.ArgumentParser(
      prog="theory",
      description="Numerical checks of the theory of 'Average gradient outer product as a "
                  "mechanism for deep neural collapse' (Section 5, Appendices A-C), in float64. "
                  "thm53: linearised Deep RFM on Gram matrices (rate and floor of "
                  "||Xt Xt^T - YY^T||_F, sweep of lambda_hat/lambda_map, real Laplace/ReLU "
                  "kernels vs their linearisation); lemma_c2: the fixed point's inverse; thm54: "
                  "maximising sum_c Y_c^T (k+mu I)^-1 k Y_c over PSD, non-negative, unit-diagonal "
                  "k, and over Mahalanobis kernels (Prop. B.1); prop_a1: E[ReLU(Wx).ReLU(Wy)] "
                  "and its 1/D variance. Rows are samples; Y is 0/1 one-hot, so the collapsed "
                  "Gram matrix YY^T (the paper's Y^T Y) is a block of ones per class.",
      formatter_class=HelpFormatter)
  p.add_argument("check", choices=CHECKS + ("all",), help="which statement to check")
  p.add_argument("--out", required=True, help="output directory (created)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the results already in --out (otherwise refused)")
  p.add_argument("--no-progress", action="store_true",
                 help="do not report each check as it starts and ends (on stderr)")
  p.add_argument("--seed", type=int, default=0, help="seed of the one PRNG key")
  p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

  g = p.add_argument_group("thm53 (Theorem 5.3)")
  g.add_argument("--class-sizes", type=_ints, default=d53.class_sizes,
                 help="balanced (or any) class sizes of the synthetic data")
  g.add_argument("--unbalanced-sizes", type=_ints, default=d53.unbalanced_sizes,
                 help="class sizes of the second data set (empty string: skip)")
  g.add_argument("--dim", type=int, default=d53.dim,
                 help="data dimension d; Assumption 5.1 needs d >= N")
  g.add_argument("--noise", type=float, default=d53.noise,
                 help="within-class noise (relative to the class-mean norm; rows are normalised)")
  g.add_argument("--lambda-hat", type=float, default=d53.lambda_hat,
                 help="identity weight of the linearised predictor kernel XX^T + lambda_hat I")
  g.add_argument("--lambda-map", type=float, default=d53.lambda_map,
                 help="identity weight of the linearised feature map XX^T + lambda_map I")
  g.add_argument("--layers", type=int, default=d53.layers, help="layers of the iteration")
  g.add_argument("--ratios", type=_floats, default=d53.ratios,
                 help="lambda_hat/lambda_map values of the sweep")
  g.add_argument("--lambda-maps", type=_floats, default=d53.lambda_maps,
                 help="lambda_map values of the sweep")
  g.add_argument("--compare-layers", type=int, default=d53.compare_layers,
                 help="layers of the real-kernel comparison")
  g.add_argument("--kernel", choices=("laplace", "gaussian"), default=d53.kernel,
                 help="predictor kernel of the real-kernel comparison")
  g.add_argument("--bandwidth", type=float, default=d53.bandwidth,
                 help="its bandwidth L")
  g.add_argument("--width", type=int, default=d53.width,
                 help="ReLU random features per layer in the comparison (W ~ N(0, 2/D))")
  g.add_argument("--ridge", type=float, default=d53.ridge,
                 help="ridge of the comparison's kernel solve (0 = ridgeless)")

  g = p.add_argument_group("lemma_c2 (Lemma C.2)")
  g.add_argument("--c2-class-sizes", type=lambda t: tuple(_ints(s) for s in t.split(";")),
                 default=dc2.class_sizes,
                 help="';'-separated lists of class sizes, e.g. '4,4,4;10,20,30'")
  g.add_argument("--c2-lambda-map", type=float, default=dc2.lambda_map, help="lambda_map")
  g.add_argument("--c2-lambda-hat", type=float, default=dc2.lambda_hat,
                 help="lambda_hat of the fixed-point test (one layer applied to A*)")

  g = p.add_argument_group("thm54 (Theorem 5.4, Proposition B.1)")
  g.add_argument("--classes", type=int, default=d54.num_classes, help="K")
  g.add_argument("--per-class", type=int, default=d54.per_class, help="n (balanced)")
  g.add_argument("--mu", type=float, default=d54.mu, help="ridge mu > 0")
  g.add_argument("--starts", type=int, default=d54.starts, help="random starts of the ascent")
  g.add_argument("--steps", type=int, default=d54.steps, help="projected-gradient steps")
  g.add_argument("--projection-iters", type=int, default=d54.projection_iters,
                 help="Dykstra iterations per projection")
  g.add_argument("--step-size", type=float, default=d54.step_size,
                 help="ascent step (default 4 mu^2 / n_max)")
  g.add_argument("--random", type=int, default=d54.random,
                 help="random feasible kernels evaluated for comparison")
  g.add_argument("--b1-dim", type=int, default=d54.dim,
                 help="data dimension for Prop. B.1 (needs >= K n)")
  g.add_argument("--b1-kernels", type=_strs, default=d54.kernels,
                 help="Mahalanobis kernels to optimise (gaussian, laplace; empty: skip)")
  g.add_argument("--b1-bandwidth", type=float, default=d54.bandwidth, help="their bandwidth L")
  g.add_argument("--b1-steps", type=int, default=d54.mahalanobis_steps, help="Adam steps on M")
  g.add_argument("--b1-lr", type=float, default=d54.learning_rate, help="Adam learning rate")

  g = p.add_argument_group("prop_a1 (Proposition A.1)")
  g.add_argument("--angles", type=int, default=da1.angles,
                 help="evenly spaced angles in [0, pi], endpoints included")
  g.add_argument("--a1-width", type=int, default=da1.width, help="D of the mean check")
  g.add_argument("--a1-widths", type=_ints, default=da1.widths, help="D values of the variance fit")
  g.add_argument("--draws", type=int, default=da1.draws,
                 help="independent W per width (multiple of 8)")
  g.add_argument("--a1-dim", type=int, default=da1.dim, help="input dimension d")
  return p


def parse(argv=None) -> TheoryConfig:
  a = build_parser().parse_args(argv)
  return TheoryConfig(
      check=a.check, out=a.out, seed=a.seed, figures=not a.no_figures, overwrite=a.overwrite,
      progress=not a.no_progress,
      thm53=Thm53Config(
          class_sizes=a.class_sizes, unbalanced_sizes=a.unbalanced_sizes, dim=a.dim,
          noise=a.noise, lambda_hat=a.lambda_hat, lambda_map=a.lambda_map, layers=a.layers,
          ratios=a.ratios, lambda_maps=a.lambda_maps, compare_layers=a.compare_layers,
          kernel=a.kernel, bandwidth=a.bandwidth, width=a.width, ridge=a.ridge),
      lemma_c2=LemmaC2Config(class_sizes=a.c2_class_sizes, lambda_map=a.c2_lambda_map,
                             lambda_hat=a.c2_lambda_hat),
      thm54=Thm54Config(
          num_classes=a.classes, per_class=a.per_class, mu=a.mu, starts=a.starts,
          steps=a.steps, projection_iters=a.projection_iters, step_size=a.step_size,
          random=a.random, dim=a.b1_dim, kernels=a.b1_kernels, bandwidth=a.b1_bandwidth,
          mahalanobis_steps=a.b1_steps, learning_rate=a.b1_lr),
      prop_a1=PropA1Config(angles=a.angles, width=a.a1_width, widths=a.a1_widths,
                           draws=a.draws, dim=a.a1_dim))


# ---------------------------------------------------------------------------
# Running.


def run(cfg: TheoryConfig) -> dict:
  """Runs the checks of ``cfg``; returns ``{check: report}`` and the wall times."""
  import jax
  import numpy as np

  from dnc_jax import theory

  root = jax.random.key(cfg.seed)
  keys = {check: jax.random.fold_in(root, i) for i, check in enumerate(CHECKS)}
  from dnc_jax.io import runs
  reports, seconds = {}, {}
  for i, check in enumerate(cfg.checks):
    runs.check_interrupt()   # between checks: nothing is half-computed
    if cfg.progress:
      print(f"theory: [{i + 1}/{len(cfg.checks)}] {check} ({DESCRIPTIONS[check]}) ...",
            file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    if check == "thm53":
      c = cfg.thm53
      reports[check] = theory.theorem_5_3_report(
          keys[check], class_sizes=c.class_sizes, unbalanced_sizes=c.unbalanced_sizes,
          dim=c.dim, noise=c.noise, lambda_hat=c.lambda_hat, lambda_map=c.lambda_map,
          num_layers=c.layers, ratios=c.ratios, lambda_maps=c.lambda_maps,
          compare_layers=c.compare_layers, kernel=c.kernel, bandwidth=c.bandwidth,
          width=c.width, ridge=c.ridge)
    elif check == "lemma_c2":
      c = cfg.lemma_c2
      reports[check] = [
          theory.check_lemma_c2(np.repeat(np.arange(len(s)), s), num_classes=len(s),
                                lambda_map=c.lambda_map, lambda_hat=c.lambda_hat)
          for s in c.class_sizes]
    elif check == "thm54":
      c = cfg.thm54
      reports[check] = theory.theorem_5_4_report(
          keys[check], num_classes=c.num_classes, per_class=c.per_class, mu=c.mu,
          num_starts=c.starts, num_steps=c.steps, projection_iters=c.projection_iters,
          step_size=c.step_size, num_random=c.random, dim=c.dim, kernels=c.kernels,
          bandwidth=c.bandwidth, mahalanobis_steps=c.mahalanobis_steps,
          learning_rate=c.learning_rate)
    elif check == "prop_a1":
      c = cfg.prop_a1
      if c.angles < 2:
        raise ConfigError(f"--angles {c.angles}: need at least 2 angles.")
      reports[check] = theory.check_proposition_a1(
          keys[check], thetas=np.linspace(0.0, np.pi, c.angles), width=c.width,
          widths=c.widths, num_draws=c.draws, dim=c.dim)
    seconds[check] = time.perf_counter() - t0
    if cfg.progress:
      print(f"theory: [{i + 1}/{len(cfg.checks)}] {check} done in {seconds[check]:.1f} s",
            file=sys.stderr, flush=True)
  runs.check_interrupt()
  return {"reports": reports, "seconds": seconds}


DESCRIPTIONS = {"thm53": "Theorem 5.3, linearised Deep RFM", "lemma_c2": "Lemma C.2",
                "thm54": "Theorem 5.4 and Proposition B.1",
                "prop_a1": "Proposition A.1, ReLU random features"}


# ---------------------------------------------------------------------------
# Tables (Markdown; every number's convention is in the header or the caption).


def _g(v, digits: int = 4) -> str:
  if v is None:
    return "–"
  v = float(v)
  if math.isnan(v):
    return "–"
  return f"{v:.{digits}g}"


def _table(header, rows) -> list:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return out


def tables_thm53(rep) -> list:
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
  for name, r in rep.runs.items():
    data, rule = name.split("/")
    rows.append([data + " " + str(r.class_sizes.tolist()), rule, _g(r.kappa, 6),
                 _g(r.lambda_hat / r.lambda_map), _g(r.gram_error[0]), _g(r.fitted_rate),
                 _g(r.local_rate), _g(r.bound_rate), "yes" if r.condition_holds else "no",
                 _g(r.floor, 3), _g(r.floor_predicted, 3), _g(r.floor_order, 3),
                 _g(r.min_eig_data, 3)])
  lines += _table(["data (n_c)", "κ rule", "κ", "λ̂/λ_map", "gram error, layer 1",
                   "fitted rate", "Jacobian rate", "bound 1−ε", "condition", "floor",
                   "predicted floor", "(λ̂/λ_map)²", "λ_min(XXᵀ)"], rows)
  sw = rep.sweep
  lines += ["", "### Theorem 5.3: sweep over λ̂/λ_map (balanced data)", "",
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
  c = rep.comparison
  lines += ["", "### Theorem 5.3: real kernels vs their linearisation (balanced data)", "",
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


def tables_lemma_c2(results) -> list:
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


def tables_thm54(rep) -> list:
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


def tables_prop_a1(r) -> list:
  import numpy as np
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


def save(cfg: TheoryConfig, out: dict) -> pathlib.Path:
  """Writes config.json, results.json, summary.md and the figures; returns the directory."""
  from dnc_jax import theory
  from dnc_jax.io import runs
  d = pathlib.Path(cfg.out)

  def write(name, text):
    runs.atomic_write_bytes(d / name, text.encode())

  if cfg.overwrite:
    runs.clear_run_files(d, RUN_FILES + tuple(f"{c}.png" for c in CHECKS))
  write("config.json", json.dumps({"config": dataclasses.asdict(cfg)}, indent=2))
  results = {"check": cfg.check, "seed": cfg.seed, "dtype": "float64",
             "conventions": theory.CONVENTIONS,
             "seconds": out["seconds"]}
  for check, rep in out["reports"].items():
    results[check] = theory.as_dict(rep)
  write("results.json", json.dumps(results, indent=1))
  lines = []
  for check, rep in out["reports"].items():
    lines += TABLES[check](rep) + [""]
  lines.append("Wall time per check (s): " + ", ".join(
      f"{k} {v:.1f}" for k, v in out["seconds"].items()))
  write("summary.md", "\n".join(lines) + "\n")
  if cfg.figures:
    plots = {"thm53": theory.plot_theorem_5_3, "lemma_c2": theory.plot_lemma_c2,
             "thm54": theory.plot_theorem_5_4, "prop_a1": theory.plot_proposition_a1}
    for check, rep in out["reports"].items():
      plots[check](rep, str(d / f"{check}.png"))
  return d


def check_out(cfg: TheoryConfig) -> None:
  """The ``--out`` rules of every command (:func:`dnc_jax.io.runs.check_out`)."""
  from dnc_jax.io import runs
  runs.check_out(cfg.out, overwrite=cfg.overwrite, markers=RUN_FILES)


def main(argv=None) -> int:
  from dnc_jax.io import runs
  t0 = time.perf_counter()

  def on_first(signum):
    print("\ntheory: stopping after the current check (nothing is written); interrupt again "
          "to stop at once", file=sys.stderr)

  with runs.deferred_interrupts(on_first=on_first):
    try:
      cfg = parse(argv)
      check_out(cfg)   # before ~100 s of computing
      out = run(cfg)
      with runs.removed_if_left_empty(cfg.out):
        d = save(cfg, out)
    except DncError as e:
      print(f"theory: error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt as e:
      print("theory: interrupted; nothing was written", file=sys.stderr)
      return getattr(e, "exit_code", 130)
  print((d / "summary.md").read_text())
  print(f"wrote {d}/results.json, summary.md{' and figures' if cfg.figures else ''} "
        f"in {time.perf_counter() - t0:.1f} s")
  return 0
