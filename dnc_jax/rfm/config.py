r"""Options of a Deep RFM run: :class:`DeepRFMConfig`, its :class:`SolverConfig`, presets.

Presets (:func:`preset_config`):

* ``reference`` — what the authors' code did: ridge 1e-3, Laplace ``L = 2``,
  ReLU weights ``U(±1/√d)``, width 1024 (cos features: width = input dimension),
  AGOP on all training points. The default; it produced the paper's figures.
* ``paper`` — the method as the paper states it: ridgeless, ReLU weights
  ``N(0, 2/D)``, width 1024 (ReLU) or 4096 (cos).

A config is frozen and hashable. Its :class:`LayerOptions` (the options that fix
the traced program of a layer) are the static argument of the jitted layers, so
runs that differ only in depth, bandwidth, ridge, sigma, Gram layers, memory or
preset name reuse one compiled layer per shape.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from dnc_jax import metrics as metrics_lib
from dnc_jax.errors import ConfigError
from dnc_jax.rfm import features as features_lib
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax.rfm import precision as precision_lib

PRESETS = ("reference", "paper")
REPRESENTATIONS = ("input", "agop", "features")
# Layers whose Gram picture a run records by default (the paper's Fig. 1 panels).
GRAM_LAYERS = (1, 3, 7, 13, 19)
SOLVERS = ("cholesky", "cg", "auto")
PRECONDITIONERS = ("nystrom", "none")
AGOP_IMPLEMENTATIONS = ("auto", "closed_form", "rules")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
  r"""How each layer's kernel system :math:`(K + \mu I)\alpha = Y` is solved.

  Attributes:
    method: ``"cholesky"`` (the ``[N, N]`` matrix, factorised), ``"cg"``
      (matrix-free conjugate gradients, rows over a device mesh) or ``"auto"``
      (Cholesky when ``3 N²`` floats fit in the memory budget).
    cg_tol: CG relative residual (``None``: 1e-4 in float32, 1e-8 in float64).
    cg_max_iter: CG iteration cap.
    cg_rank: Nyström landmarks of the preconditioner (at most ``N / 4``).
    preconditioner: ``"nystrom"`` or ``"none"``.
  """
  method: str = "cholesky"
  cg_tol: float | None = None
  cg_max_iter: int = 2000
  cg_rank: int = 1000
  preconditioner: str = "nystrom"

  def validate(self) -> "SolverConfig":
    """Raises ConfigError naming the first invalid option."""
    if self.method not in SOLVERS:
      raise ConfigError(f"unknown solver {self.method!r}; choose one of {', '.join(SOLVERS)}")
    if self.preconditioner not in PRECONDITIONERS:
      raise ConfigError(f"unknown preconditioner {self.preconditioner!r}; choose one of "
                        f"{', '.join(PRECONDITIONERS)}")
    if not isinstance(self.cg_max_iter, int) or self.cg_max_iter < 1:
      raise ConfigError(f"the CG iteration cap must be an integer ≥ 1, got {self.cg_max_iter!r}")
    if self.cg_tol is not None and not 0 < self.cg_tol < 1:
      raise ConfigError(f"the CG tolerance must lie in (0, 1), got {self.cg_tol}")
    if not isinstance(self.cg_rank, int) or self.cg_rank < 1:
      raise ConfigError(f"the Nyström rank must be an integer ≥ 1, got {self.cg_rank!r}")
    return self


@dataclasses.dataclass(frozen=True)
class LayerOptions:
  """The options that fix a layer's traced program: the jitted layers' static argument.

  Bandwidth, ridge and the cos scale enter a layer as traced scalars, and depth,
  memory, Gram pictures and the preset's name live outside it, so they are not
  here: changing them reuses the compiled layer. Fields as in :class:`DeepRFMConfig`;
  ``agop`` is resolved (``"closed_form"`` or ``"rules"``, never ``"auto"``).
  """
  kernel: str = "laplace"
  features: str = "relu"
  width: int | None = 1024
  weight_init: str = "uniform"
  global_mean: str = "sample"
  agop: str = "closed_form"
  matmul_precision: str = "highest"


@dataclasses.dataclass(frozen=True)
class DeepRFMConfig:
  """Options of a Deep RFM run (see :func:`preset_config` for the presets).

  Attributes:
    depth: number of RFM layers ``L`` (paper figures: 19).
    kernel: ``"laplace"`` or ``"gaussian"``.
    bandwidth: kernel bandwidth ``L > 0``.
    ridge: KRR ridge ``μ ≥ 0`` (0 = ridgeless).
    features: random feature map, ``"relu"`` or ``"cos"``.
    width: feature width ``D``; ``None`` = the layer's input dimension.
    weight_init: ReLU weights, ``"normal"`` (N(0, 2/D)) or ``"uniform"`` (U(±1/√d)).
    sigma: Cauchy scale of the cos features.
    global_mean: ``"sample"`` or ``"class_means"`` (metrics convention).
    agop_batch_size: rows per AGOP block (``None``: planned from the memory budget by
      :func:`dnc_jax.rfm.memory.plan_layer`).
    memory_gb: memory budget of a layer in GiB (``None``: 80% of what the device
      has free); sets the AGOP block size, and a problem whose ``[N, N]`` part
      does not fit is refused before any work.
    agop: how a layer computes its AGOP: ``"closed_form"`` (the analytic Jacobian
      as matmuls, reusing the ``[N, N]`` distances of the kernel solve),
      ``"rules"`` (``vmap(jacrev)`` of the kernel predictor through its
      derivative rules; :mod:`dnc_jax.rfm.predictor`) or ``"auto"`` (the
      default: the closed form on one device with the Cholesky solver when its
      kept distances fit the memory plan, else the rules; always the rules on a
      device mesh, which has no closed form).
    matmul_precision: ``"highest"`` (default), ``"tf32"`` or ``"bf16"`` for the
      large matmuls (:mod:`dnc_jax.rfm.precision`). TF32 stays within the seed
      spread of the NC curves; bf16 does not past layer ~13 (measurement only).
    keep_m: return every layer's ``M`` (``[d, d]`` each).
    gram_layers: layers whose Gram picture is recorded (those ``≤ depth``).
    gram_per_class: rows per class in a Gram picture.
    preset: name of the preset these options came from (recorded only).
    solver: how each layer's kernel system is solved (:class:`SolverConfig`).
  """
  depth: int = 19
  kernel: str = "laplace"
  bandwidth: float = 2.0
  ridge: float = 1e-3
  features: str = "relu"
  width: int | None = 1024
  weight_init: str = "uniform"
  sigma: float = 0.05
  global_mean: str = "sample"
  agop_batch_size: int | None = None
  memory_gb: float | None = None
  agop: str = "auto"
  matmul_precision: str = "highest"
  keep_m: bool = False
  gram_layers: tuple[int, ...] = GRAM_LAYERS
  gram_per_class: int = 30
  preset: str = "reference"
  solver: SolverConfig = SolverConfig()

  def validate(self) -> "DeepRFMConfig":
    """Raises ConfigError naming the first invalid option."""
    if not isinstance(self.depth, int) or self.depth < 1:
      raise ConfigError(f"depth must be an integer ≥ 1, got {self.depth!r} (paper: 19)")
    kernels_lib.kernel_from_sq(self.kernel)
    kernels_lib.check_bandwidth(self.bandwidth)
    krr_lib.check_ridge(self.ridge)
    if self.features not in features_lib.FEATURES:
      raise ConfigError(f"unknown feature map {self.features!r}; choose one of "
                        f"{', '.join(features_lib.FEATURES)}")
    if self.width is not None and (not isinstance(self.width, int) or self.width < 1):
      raise ConfigError(f"width must be a positive integer, got {self.width!r} (paper: 1024)")
    if self.weight_init not in features_lib.INITS:
      raise ConfigError(f"unknown weight init {self.weight_init!r}; choose one of "
                        f"{', '.join(features_lib.INITS)}")
    if not self.sigma > 0:
      raise ConfigError(f"sigma must be > 0, got {self.sigma} (paper: 0.05)")
    if self.global_mean not in metrics_lib.GLOBAL_MEANS:
      raise ConfigError(f"unknown global mean {self.global_mean!r}; choose one of "
                        f"{', '.join(metrics_lib.GLOBAL_MEANS)}")
    if self.agop_batch_size is not None and self.agop_batch_size < 1:
      raise ConfigError(f"agop_batch_size must be ≥ 1, got {self.agop_batch_size}")
    if self.agop not in AGOP_IMPLEMENTATIONS:
      raise ConfigError(f"unknown AGOP implementation {self.agop!r}; choose one of "
                        f"{', '.join(AGOP_IMPLEMENTATIONS)}")
    precision_lib.check(self.matmul_precision)
    if self.memory_gb is not None and not self.memory_gb > 0:
      raise ConfigError(f"memory_gb must be > 0, got {self.memory_gb} (GiB per layer)")
    if self.preset not in PRESETS + ("custom",):
      raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(self.solver, SolverConfig):
      raise ConfigError(f"solver must be a SolverConfig, got {self.solver!r}")
    self.solver.validate()
    return self

  def layer_options(self, *, mesh: bool = False) -> LayerOptions:
    """The :class:`LayerOptions` of a layer on one device (``mesh=False``) or a mesh."""
    agop = self.agop if self.agop != "auto" else ("rules" if mesh else "closed_form")
    return LayerOptions(kernel=self.kernel, features=self.features, width=self.width,
                        weight_init=self.weight_init, global_mean=self.global_mean, agop=agop,
                        matmul_precision=self.matmul_precision)


def preset_config(name: str = "reference", **overrides: Any) -> DeepRFMConfig:
  """The options of preset ``name`` with ``overrides`` applied (``None`` values ignored)."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if isinstance(overrides.get("solver"), str):
    overrides["solver"] = SolverConfig(method=overrides["solver"])
  feats = overrides.get("features", "relu")
  if name == "reference":
    base = dict(ridge=1e-3, kernel="laplace", bandwidth=2.0, weight_init="uniform",
                width=1024 if feats == "relu" else None)
  else:
    base = dict(ridge=0.0, weight_init="normal", width=1024 if feats == "relu" else 4096)
  base.update(overrides)
  return DeepRFMConfig(preset=name, **base).validate()


def auto_precision(config: DeepRFMConfig) -> str:
  """The arithmetic a run gets by default: ``"float32"``, or ``"float64"`` when ridgeless.

  Measured at depth 19 (``bench/precision_default.py``, digits and Fashion-MNIST
  n = 2,000, docs/numerics.md): with a ridge, float32's NC1 and NC2 of all three
  representations differ from float64's (same seed) by at most 0.88 of float64's
  own seed-to-seed spread at every layer; ridgeless, float32 cannot factorise
  the kernel system at layer 18-19 where float64 can.
  """
  return "float64" if config.ridge == 0 else "float32"
