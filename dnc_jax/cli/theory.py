"""``bin/theory``: numerical checks of the paper's theory (SPEC §5).

``bin/theory thm53|lemma_c2|thm54|prop_a1|all --out DIR``: parse → :class:`TheoryConfig`
→ one :mod:`dnc_jax.theory` report per check → ``DIR/config.json``,
``DIR/results.json`` (named quantities; ``conventions`` says what each means),
``DIR/summary.md`` (the tables printed to stdout; :mod:`dnc_jax.theory.report`) and
one PNG per check (:mod:`dnc_jax.viz.theory`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

from dnc_jax.cli import HelpFormatter
from dnc_jax.errors import DncError

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

  _thm53_options(p.add_argument_group("thm53 (Theorem 5.3)"), Thm53Config())
  _lemma_c2_options(p.add_argument_group("lemma_c2 (Lemma C.2)"), LemmaC2Config())
  _thm54_options(p.add_argument_group("thm54 (Theorem 5.4, Proposition B.1)"), Thm54Config())
  _prop_a1_options(p.add_argument_group("prop_a1 (Proposition A.1)"), PropA1Config())
  return p


def _thm53_options(g, d) -> None:
  """Options of thm53 (Theorem 5.3); ``d`` holds their defaults."""
  g.add_argument("--class-sizes", type=_ints, default=d.class_sizes,
                 help="balanced (or any) class sizes of the synthetic data")
  g.add_argument("--unbalanced-sizes", type=_ints, default=d.unbalanced_sizes,
                 help="class sizes of the second data set (empty string: skip)")
  g.add_argument("--dim", type=int, default=d.dim,
                 help="data dimension d; Assumption 5.1 needs d >= N")
  g.add_argument("--noise", type=float, default=d.noise,
                 help="within-class noise (relative to the class-mean norm; rows are normalised)")
  g.add_argument("--lambda-hat", type=float, default=d.lambda_hat,
                 help="identity weight of the linearised predictor kernel XX^T + lambda_hat I")
  g.add_argument("--lambda-map", type=float, default=d.lambda_map,
                 help="identity weight of the linearised feature map XX^T + lambda_map I")
  g.add_argument("--layers", type=int, default=d.layers, help="layers of the iteration")
  g.add_argument("--ratios", type=_floats, default=d.ratios,
                 help="lambda_hat/lambda_map values of the sweep")
  g.add_argument("--lambda-maps", type=_floats, default=d.lambda_maps,
                 help="lambda_map values of the sweep")
  g.add_argument("--compare-layers", type=int, default=d.compare_layers,
                 help="layers of the real-kernel comparison")
  g.add_argument("--kernel", choices=("laplace", "gaussian"), default=d.kernel,
                 help="predictor kernel of the real-kernel comparison")
  g.add_argument("--bandwidth", type=float, default=d.bandwidth,
                 help="its bandwidth L")
  g.add_argument("--width", type=int, default=d.width,
                 help="ReLU random features per layer in the comparison (W ~ N(0, 2/D))")
  g.add_argument("--ridge", type=float, default=d.ridge,
                 help="ridge of the comparison's kernel solve (0 = ridgeless)")


def _lemma_c2_options(g, d) -> None:
  """Options of lemma_c2 (Lemma C.2); ``d`` holds their defaults."""
  g.add_argument("--c2-class-sizes", type=lambda t: tuple(_ints(s) for s in t.split(";")),
                 default=d.class_sizes,
                 help="';'-separated lists of class sizes, e.g. '4,4,4;10,20,30'")
  g.add_argument("--c2-lambda-map", type=float, default=d.lambda_map, help="lambda_map")
  g.add_argument("--c2-lambda-hat", type=float, default=d.lambda_hat,
                 help="lambda_hat of the fixed-point test (one layer applied to A*)")


def _thm54_options(g, d) -> None:
  """Options of thm54 (Theorem 5.4, Proposition B.1); ``d`` holds their defaults."""
  g.add_argument("--classes", type=int, default=d.num_classes, help="K")
  g.add_argument("--per-class", type=int, default=d.per_class, help="n (balanced)")
  g.add_argument("--mu", type=float, default=d.mu, help="ridge mu > 0")
  g.add_argument("--starts", type=int, default=d.starts, help="random starts of the ascent")
  g.add_argument("--steps", type=int, default=d.steps, help="projected-gradient steps")
  g.add_argument("--projection-iters", type=int, default=d.projection_iters,
                 help="Dykstra iterations per projection")
  g.add_argument("--step-size", type=float, default=d.step_size,
                 help="ascent step (default 4 mu^2 / n_max)")
  g.add_argument("--random", type=int, default=d.random,
                 help="random feasible kernels evaluated for comparison")
  g.add_argument("--b1-dim", type=int, default=d.dim,
                 help="data dimension for Prop. B.1 (needs >= K n)")
  g.add_argument("--b1-kernels", type=_strs, default=d.kernels,
                 help="Mahalanobis kernels to optimise (gaussian, laplace; empty: skip)")
  g.add_argument("--b1-bandwidth", type=float, default=d.bandwidth, help="their bandwidth L")
  g.add_argument("--b1-steps", type=int, default=d.mahalanobis_steps, help="Adam steps on M")
  g.add_argument("--b1-lr", type=float, default=d.learning_rate, help="Adam learning rate")


def _prop_a1_options(g, d) -> None:
  """Options of prop_a1 (Proposition A.1); ``d`` holds their defaults."""
  g.add_argument("--angles", type=int, default=d.angles,
                 help="evenly spaced angles in [0, pi], endpoints included")
  g.add_argument("--a1-width", type=int, default=d.width, help="D of the mean check")
  g.add_argument("--a1-widths", type=_ints, default=d.widths, help="D values of the variance fit")
  g.add_argument("--draws", type=int, default=d.draws,
                 help="independent W per width (multiple of 8)")
  g.add_argument("--a1-dim", type=int, default=d.dim, help="input dimension d")


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


DESCRIPTIONS = {"thm53": "Theorem 5.3, linearised Deep RFM", "lemma_c2": "Lemma C.2",
                "thm54": "Theorem 5.4 and Proposition B.1",
                "prop_a1": "Proposition A.1, ReLU random features"}


def compute(check: str, cfg: TheoryConfig, key):
  """The report of one check: one :mod:`dnc_jax.theory` call with the options of ``cfg``."""
  from dnc_jax import theory
  if check == "thm53":
    c = cfg.thm53
    return theory.theorem_5_3_report(
        key, class_sizes=c.class_sizes, unbalanced_sizes=c.unbalanced_sizes, dim=c.dim,
        noise=c.noise, lambda_hat=c.lambda_hat, lambda_map=c.lambda_map, num_layers=c.layers,
        ratios=c.ratios, lambda_maps=c.lambda_maps, compare_layers=c.compare_layers,
        kernel=c.kernel, bandwidth=c.bandwidth, width=c.width, ridge=c.ridge)
  if check == "lemma_c2":
    c = cfg.lemma_c2
    return theory.lemma_c2_report(class_sizes=c.class_sizes, lambda_map=c.lambda_map,
                                  lambda_hat=c.lambda_hat)
  if check == "thm54":
    c = cfg.thm54
    return theory.theorem_5_4_report(
        key, num_classes=c.num_classes, per_class=c.per_class, mu=c.mu, num_starts=c.starts,
        num_steps=c.steps, projection_iters=c.projection_iters, step_size=c.step_size,
        num_random=c.random, dim=c.dim, kernels=c.kernels, bandwidth=c.bandwidth,
        mahalanobis_steps=c.mahalanobis_steps, learning_rate=c.learning_rate)
  c = cfg.prop_a1
  return theory.proposition_a1_report(key, angles=c.angles, width=c.width, widths=c.widths,
                                      num_draws=c.draws, dim=c.dim)


def run(cfg: TheoryConfig) -> dict:
  """Runs the checks of ``cfg``; returns ``{check: report}`` and the wall times."""
  import jax

  from dnc_jax.io import runs
  root = jax.random.key(cfg.seed)
  keys = {check: jax.random.fold_in(root, i) for i, check in enumerate(CHECKS)}
  reports, seconds = {}, {}
  for i, check in enumerate(cfg.checks):
    runs.check_interrupt()   # between checks: nothing is half-computed
    if cfg.progress:
      print(f"theory: [{i + 1}/{len(cfg.checks)}] {check} ({DESCRIPTIONS[check]}) ...",
            file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    reports[check] = compute(check, cfg, keys[check])
    seconds[check] = time.perf_counter() - t0
    if cfg.progress:
      print(f"theory: [{i + 1}/{len(cfg.checks)}] {check} done in {seconds[check]:.1f} s",
            file=sys.stderr, flush=True)
  runs.check_interrupt()
  return {"reports": reports, "seconds": seconds}


def save(cfg: TheoryConfig, out: dict) -> pathlib.Path:
  """Writes config.json, results.json, summary.md and the figures; returns the directory."""
  from dnc_jax.io import runs
  from dnc_jax.theory import report
  d = pathlib.Path(cfg.out)

  def write(name, text):
    runs.atomic_write_bytes(d / name, text.encode())

  if cfg.overwrite:
    runs.clear_run_files(d, RUN_FILES + tuple(f"{c}.png" for c in CHECKS))
  write("config.json", json.dumps({"config": dataclasses.asdict(cfg)}, indent=2))
  results = report.results_json(out["reports"], check=cfg.check, seed=cfg.seed,
                                seconds=out["seconds"])
  write("results.json", json.dumps(results, indent=1))
  write("summary.md", report.summary_markdown(out["reports"], seconds=out["seconds"]))
  if cfg.figures:
    from dnc_jax.viz.theory import FIGURES
    for check, rep in out["reports"].items():
      FIGURES[check](rep, str(d / f"{check}.png"))
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
