r"""Deep Recursive Feature Machines (Algorithm 1 of the paper).

Per layer ``l = 1..L`` on training rows ``X_l`` ``[N, d_l]``:

1. normalise rows to unit ℓ2 norm;
2. kernel ridge regression :math:`\alpha = (k(X_l, X_l) + \mu I)^{-1} Y` (Cholesky);
3. predictor :math:`f_l(x) = \sum_j \alpha_j k(x_j, x)`;
4. :math:`M_l = \mathrm{AGOP}(f_l, X_l)` (self terms masked by index), then
   :math:`M_l \leftarrow M_l / \max_{ij} M_l`;
5. :math:`\tilde X_{l+1} = X_l M_l^{1/2}`;
6. :math:`X_{l+1} = \Phi_l(\tilde X_{l+1})`, a fresh random feature map;

then a final normalise + KRR on :math:`X_{L+1}`. Each layer is one jitted pure
function :func:`rfm_layer`; it also returns the collapse metrics of the three
representations ``input`` (:math:`X_l` normalised), ``agop``
(:math:`X_l M_l^{1/2}`) and ``features`` (:math:`\Phi_l(X_l M_l^{1/2})`).

Presets (:func:`preset_config`):

* ``reference`` — what the authors' code did: ridge 1e-3, Laplace ``L = 2``,
  ReLU weights ``U(±1/√d)``, width 1024 (cos features: width = input dimension),
  AGOP on all training points. The default; it produced the paper's figures.
* ``paper`` — the method as the paper states it: ridgeless, ReLU weights
  ``N(0, 2/D)``, width 1024 (ReLU) or 4096 (cos).

References:
  Beaglehole, Súkeník, Mondelli, Belkin. Average gradient outer product as a
  mechanism for deep neural collapse. NeurIPS 2024, Algorithm 1.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.rfm import features as features_lib
from dnc_jax.rfm.agop import agop_sum, kernel_predictor
from dnc_jax.rfm import kernels as kernels_lib
from dnc_jax.rfm import memory as memory_lib
from dnc_jax.rfm import precision as precision_lib
from dnc_jax.rfm import krr as krr_lib
from dnc_jax import metrics as metrics_lib
from dnc_jax import validate
from dnc_jax.errors import ConfigError, DncError

HIGHEST = jax.lax.Precision.HIGHEST
PRESETS = ("reference", "paper")
REPRESENTATIONS = ("input", "agop", "features")


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
    matmul_precision: ``"highest"`` (default), ``"tf32"`` or ``"bf16"`` for the
      large matmuls (:mod:`dnc_jax.rfm.precision`). TF32 stays within the seed
      spread of the NC curves; bf16 does not past layer ~13 (measurement only).
    keep_m: return every layer's ``M`` (``[d, d]`` each).
    gram_layers: layers whose Gram picture is recorded (those ``≤ depth``).
    gram_per_class: rows per class in a Gram picture.
    preset: name of the preset these options came from (recorded only).
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
  matmul_precision: str = "highest"
  keep_m: bool = False
  gram_layers: tuple[int, ...] = (1, 3, 7, 13, 19)
  gram_per_class: int = 30
  preset: str = "reference"

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
    precision_lib.check(self.matmul_precision)
    if self.memory_gb is not None and not self.memory_gb > 0:
      raise ConfigError(f"memory_gb must be > 0, got {self.memory_gb} (GiB per layer)")
    if self.preset not in PRESETS + ("custom",):
      raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
    return self


def preset_config(name: str = "reference", **overrides: Any) -> DeepRFMConfig:
  """The options of preset ``name`` with ``overrides`` applied (``None`` values ignored)."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
  overrides = {k: v for k, v in overrides.items() if v is not None}
  feats = overrides.get("features", "relu")
  if name == "reference":
    base = dict(ridge=1e-3, kernel="laplace", bandwidth=2.0, weight_init="uniform",
                width=1024 if feats == "relu" else None)
  else:
    base = dict(ridge=0.0, weight_init="normal", width=1024 if feats == "relu" else 4096)
  base.update(overrides)
  return DeepRFMConfig(preset=name, **base).validate()


def layer_flops(n: int, n_test: int, d: int, num_classes: int, width: int) -> dict:
  r"""Floating-point operations of one :func:`rfm_layer`, by stage (SPEC §3).

  Counted as in the implementation (multiply-add = 2):

  * ``kernel``: :math:`2N^2d + 2N_tNd` (train and test distances);
  * ``solve``: :math:`N^3/3 + 2N^2K` (Cholesky and two triangular solves) plus
    :math:`2N^2K + 2N_tNK` (train and test predictions);
  * ``agop``: :math:`2N^2d + 2N^2K` (forward), :math:`2N^2Kd` (Jacobians),
    :math:`2NKd^2` (:math:`J^\top J`);
  * ``sqrt``: :math:`9d^3` (symmetric eigendecomposition) :math:`+ 2d^3`;
  * ``features``: :math:`2(N+N_t)d^2` (projection) :math:`+ 2(N+N_t)dD`.

  Returns:
    ``{stage: flops}`` with a ``"total"`` entry.
  """
  n, nt, d, k, w = int(n), int(n_test), int(d), int(num_classes), int(width)
  out = {
      "kernel": 2 * n * n * d + 2 * nt * n * d,
      "solve": n**3 / 3 + 2 * n * n * k + 2 * n * n * k + 2 * nt * n * k,
      "agop": 2 * n * n * d + 2 * n * n * k + 2 * n * n * k * d + 2 * n * k * d * d,
      "sqrt": 11 * d**3,
      "features": 2 * (n + nt) * d * d + 2 * (n + nt) * d * w,
  }
  out["total"] = sum(out.values())
  return out


class AgopError(DncError):
  """A layer's AGOP is zero or not finite, so ``M / max M`` is undefined."""


def agop_error(layer: int, config: DeepRFMConfig, dtype) -> AgopError:
  r"""The error for a layer whose normalised AGOP is not finite, with cause and fix.

  The AGOP scales as :math:`(\alpha / L)^2` with the KRR weights
  :math:`\alpha \propto 1/\mu` for a large ridge :math:`\mu`, and it vanishes
  when the kernel between distinct rows underflows (a tiny bandwidth ``L``):
  on digits it becomes exactly 0 in float32 for ``L ≤ 0.002``, ``L ≥ 1e24``
  or ``μ ≥ 1e21``, in float64 for ``L ≤ 3e-4``, ``L ≥ 1e159`` or ``μ ≥ 1e157``
  (docs/numerics.md).
  """
  name = np.dtype(dtype).name
  bw, ridge = float(config.bandwidth), float(config.ridge)
  if bw < 0.1:
    cause = (f"bandwidth {bw:g} is so small that the kernel between distinct rows (unit-norm) "
             f"underflows to 0 in {name}")
  elif ridge > 1e3:
    cause = f"ridge {ridge:g} shrinks the predictor, and so its gradients, below {name}'s range"
  elif bw > 1e3:
    cause = f"bandwidth {bw:g} makes the kernel's gradients (∝ 1/L) underflow in {name}"
  else:
    cause = f"the kernel or its gradients under- or overflowed in {name}"
  fix = "use a bandwidth near the rows' scale (unit norm; the presets' --bandwidth 2.0), a ridge ≤ 1"
  fix += " or --precision float64 (float32 underflows first)" if name == "float32" else ""
  return AgopError(f"layer {layer}: the AGOP M is zero or not finite, so M / max M is undefined: "
                   f"{cause}; {fix}")


def check_agop(m, layer: int, config: DeepRFMConfig) -> None:
  """Raises :func:`agop_error` when the normalised AGOP ``m`` ``[d, d]`` holds NaN or Inf.

  ``m = M / max M`` is finite exactly when the raw ``M`` is finite with ``max M > 0``.
  """
  if not bool(jnp.all(jnp.isfinite(m))):
    raise agop_error(layer, config, m.dtype)


class LayerOutput(NamedTuple):
  """What :func:`rfm_layer` returns besides the next data."""
  m: jax.Array            # [d, d] normalised AGOP
  metrics: dict           # {representation: {metric: scalar}}
  train_pred: jax.Array   # [N, K] predictions of f_l at the training rows
  test_pred: jax.Array    # [N_test, K]
  solve_ok: jax.Array     # [] bool
  root: jax.Array | None = None   # [d, d] M^{1/2} as the layer used it (None: not returned)


def normalise_rows(x: jax.Array) -> jax.Array:
  """Rows scaled to unit ℓ2 norm (zero rows stay zero)."""
  norm = jnp.linalg.norm(x, axis=1, keepdims=True)
  return x / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)


def _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel, matmul_precision="highest"):
  """One kernel matrix and one factorisation; distances in the centred frame."""
  kfn = kernels_lib.kernel_from_sq(kernel)
  sq = kernels_lib.frame_sq_distances(frame, x, frame.labels, matmul_precision=matmul_precision)
  # The Cholesky reads the lower triangle only, so no symmetrised copy is made.
  sq = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, sq)
  alpha, ok, train_pred = krr_lib.cholesky_fit(kfn(sq, bandwidth), y, ridge)
  sq_t = kernels_lib.frame_sq_distances(frame, xt, kernels_lib.nearest_centre(frame, xt),
                                        matmul_precision=matmul_precision)
  test_pred = jnp.matmul(kfn(sq_t, bandwidth), alpha, precision=HIGHEST)
  return alpha, ok, train_pred, test_pred


@functools.partial(jax.jit, static_argnames=(
    "kernel", "features", "width", "weight_init", "num_classes", "global_mean", "batch_size",
    "matmul_precision"))
def rfm_layer(x: jax.Array, x_test: jax.Array, y: jax.Array, labels: jax.Array, key: jax.Array,
              bandwidth, ridge, sigma, *, kernel: str, features: str, width: int,
              weight_init: str, num_classes: int, global_mean: str, batch_size: int,
              matmul_precision: str = "highest"):
  r"""One Deep RFM layer (steps 1–6), a pure function.

  Args:
    x: ``[N, d]`` training rows ``X_l`` (normalised here).
    x_test: ``[N_test, d]`` test rows pushed through the same maps.
    y: ``[N, K]`` ±1 targets.
    labels: ``[N]`` integer labels (for the metrics).
    key: PRNG key of this layer's feature map.
    bandwidth, ridge, sigma: kernel bandwidth, KRR ridge, cos-feature scale.
    kernel, features, width, weight_init: see :class:`DeepRFMConfig`.
    num_classes, global_mean: metric options.
    batch_size: rows per AGOP block.
    matmul_precision: precision of the large matmuls (:mod:`dnc_jax.rfm.precision`).

  Returns:
    ``(x_next [N, D], x_test_next [N_test, D], LayerOutput)``.
  """
  x = normalise_rows(x)
  xt = normalise_rows(x_test)
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  mp = matmul_precision
  alpha, ok, train_pred, test_pred = _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel, mp)
  f = kernel_predictor(x, alpha, kernel=kernel, bandwidth=bandwidth, exclude_self=True,
                       frame=frame, matmul_precision=mp)
  m = agop_sum(f, x, batch_size=batch_size, matmul_precision=mp) / x.shape[0]
  m = m / jnp.max(m)
  root = metrics_lib.psd_sqrt(m)
  xa = precision_lib.matmul(x, root, mp)
  xta = precision_lib.matmul(xt, root, mp)
  params = features_lib.init_features(key, features, x.shape[1], width, init=weight_init,
                                      sigma=sigma, dtype=x.dtype)
  xn = features_lib.apply_features(params, xa, features, matmul_precision=mp)
  xtn = features_lib.apply_features(params, xta, features, matmul_precision=mp)

  def collapse(z):
    st = metrics_lib.class_stats(z, labels, num_classes, global_mean)
    return metrics_lib.collapse_from_stats(z, labels, st)

  mets = {"input": collapse(x), "agop": collapse(xa), "features": collapse(xn)}
  return xn, xtn, LayerOutput(m, mets, train_pred, test_pred, ok, root)


@functools.partial(jax.jit, static_argnames=("kernel", "num_classes"))
def final_krr(x, x_test, y, labels, bandwidth, ridge, *, kernel: str, num_classes: int):
  """The final normalise + KRR on ``X_{L+1}``: ``(train_pred, test_pred, ok)``."""
  x = normalise_rows(x)
  xt = normalise_rows(x_test)
  frame = kernels_lib.centred_frame(x, labels, num_classes)
  _, ok, train_pred, test_pred = _fit_predict(x, y, xt, frame, bandwidth, ridge, kernel)
  return train_pred, test_pred, ok


class DeepRFMResult(NamedTuple):
  """Result of :func:`deep_rfm`.

  Attributes:
    layers: one dict per layer: ``layer``, ``nc1``/``nc2`` per representation,
      ``metrics`` (every collapse metric per representation), ``train_acc``,
      ``test_acc``, ``seconds``, ``dim_in``, ``dim_out``.
    final: ``train_acc``, ``test_acc`` and ``seconds`` of the final KRR.
    ms: the layers' ``M`` (``[d_l, d_l]`` NumPy arrays) when ``keep_m``, else ``None``.
    grams: ``{layer: (gram [m, m], labels [m])}`` Gram pictures of ``input``
      (layer ``L + 1`` is the final representation).
    grams_agop: the same for ``agop``, :math:`\tilde X_l = X_l M_l^{1/2}` (the
      representation of the paper's Gram figures), at the layers ``≤ L`` of
      ``config.gram_layers``.
  """
  layers: list
  final: dict
  ms: list | None
  grams: dict
  grams_agop: dict | None = None


class DeepRFMState(NamedTuple):
  """Where a run stands after ``layer`` layers: enough to continue it exactly.

  Attributes:
    layer: layers done.
    x: ``[N, D]`` training representation ``X_{layer+1}``.
    x_test: ``[N_test, D]`` test representation.
    layers: the records of the layers done.
    grams: Gram pictures recorded so far.
    ms: the layers' ``M`` so far (when ``keep_m``), else ``None``.
    grams_agop: Gram pictures of ``agop`` recorded so far (``None``: none).
  """
  layer: int
  x: np.ndarray
  x_test: np.ndarray
  layers: list
  grams: dict
  ms: list | None
  grams_agop: dict | None = None


def resume_point(resume: DeepRFMState | None, config: DeepRFMConfig, n: int):
  """``(first layer to run, layer records, grams, ms)`` for a fresh or resumed run."""
  if resume is None:
    return 1, [], {}, [] if config.keep_m else None
  if resume.layer > config.depth or resume.x.shape[0] != n:
    raise ConfigError(f"cannot resume: the saved state (layer {resume.layer}, "
                      f"{resume.x.shape[0]} rows) does not fit this run (depth "
                      f"{config.depth}, {n} rows)")
  ms = list(resume.ms or []) if config.keep_m else None
  return resume.layer + 1, list(resume.layers), dict(resume.grams), ms


def _accuracy(pred, labels) -> float | None:
  if labels is None or len(labels) == 0:
    return None
  return float(np.mean(np.argmax(np.asarray(pred), axis=1) == np.asarray(labels)))


def _floating(x, name: str):
  """``x`` as a floating array: integer or boolean data (e.g. raw pixels) become float32, or
  float64 with x64 enabled; anything else is refused with a one-line error."""
  dt = getattr(x, "dtype", None)
  if dt is None:
    x = np.asarray(x)
    dt = x.dtype
  if jnp.issubdtype(dt, jnp.floating):
    return x
  if jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.bool_):
    return np.asarray(x, dtype=jax.dtypes.canonicalize_dtype(jnp.float64))
  raise ConfigError(f"{name} must be numeric, got dtype {dt}; convert with {name}.astype(np.float32)")


def _check_data(x, labels, x_test, labels_test, num_classes):
  metrics_lib.check_labels(x, labels, num_classes)  # shapes, labels and NaN/Inf of x
  if x_test is not None:
    if x_test.ndim != 2 or x_test.shape[1] != x.shape[1]:
      raise ConfigError(f"x_test must have shape [n_test, {x.shape[1]}], got {x_test.shape}")
    validate.finite(x_test, "x_test")
    if labels_test is None or np.asarray(labels_test).shape != (x_test.shape[0],):
      raise ConfigError("labels_test must be given with x_test, shape [n_test]")


def deep_rfm(x, labels, config: DeepRFMConfig | None = None, *, key: jax.Array,
             x_test=None, labels_test=None, num_classes: int | None = None,
             callback: Callable[[dict], None] | None = None,
             resume: DeepRFMState | None = None,
             on_state: Callable[[DeepRFMState], None] | None = None) -> DeepRFMResult:
  r"""Runs Deep RFM (Algorithm 1) for ``config.depth`` layers plus the final KRR.

  Args:
    x: ``[N, d]`` training rows (float32, or float64 with x64 enabled).
    labels: ``[N]`` integer labels in ``0..K-1``.
    config: options (default: the ``reference`` preset).
    key: PRNG key; layer ``l``'s features use ``fold_in(key, l)``.
    x_test: optional ``[N_test, d]`` test rows, pushed through the same maps.
    labels_test: ``[N_test]`` labels of ``x_test``.
    num_classes: ``K`` (default: ``max(labels) + 1``).
    callback: called with each layer's record as soon as it is done.
    resume: a :class:`DeepRFMState` saved by ``on_state``; the run continues
      from it with the same ``key`` and gives the same numbers as an
      uninterrupted run (layer ``l`` always uses ``fold_in(key, l)``).
    on_state: called with the :class:`DeepRFMState` after each layer (e.g. to
      checkpoint it).

  Returns:
    :class:`DeepRFMResult`.

  Raises:
    ConfigError: invalid data or options (before any work).
    SolveError: a kernel system could not be factorised (names the layer).
  """
  config = (config or preset_config("reference")).validate()
  x = _floating(x, "x")
  x_test = None if x_test is None else _floating(x_test, "x_test")
  labels_np = np.asarray(labels)
  if num_classes is None:
    num_classes = int(labels_np.max()) + 1 if labels_np.size else 0
  _check_data(x, labels_np, x_test, labels_test, num_classes)
  x = jnp.asarray(x)
  dtype = x.dtype
  if x_test is None:
    x_test = jnp.zeros((0, x.shape[1]), dtype)
    labels_test = np.zeros((0,), np.int32)
  x_test = jnp.asarray(x_test, dtype)
  labels_test = np.asarray(labels_test)
  lab = jnp.asarray(labels_np, jnp.int32)
  y = 2.0 * jax.nn.one_hot(lab, num_classes, dtype=dtype) - 1.0
  n = x.shape[0]

  start, layers, grams, ms = resume_point(resume, config, n)
  grams_agop = dict(resume.grams_agop or {}) if resume is not None else {}
  if resume is not None:
    x, x_test = jnp.asarray(resume.x, dtype), jnp.asarray(resume.x_test, dtype)
  budget = memory_lib.budget_bytes(config.memory_gb)

  def plan(d_in):
    return memory_lib.plan_layer(n, x_test.shape[0], d_in, config.width or d_in, num_classes,
                                 itemsize=jnp.dtype(dtype).itemsize, budget=budget,
                                 batch_size=config.agop_batch_size)

  plan(x.shape[1])   # refuses a problem that does not fit before any work
  for layer in range(start, config.depth + 1):
    t0 = time.perf_counter()
    d_in = x.shape[1]
    width = config.width or d_in
    layer_plan = plan(d_in)
    bs = layer_plan.batch_size
    x_next, xt_next, out = rfm_layer(
        x, x_test, y, lab, jax.random.fold_in(key, layer), config.bandwidth, config.ridge,
        config.sigma, kernel=config.kernel, features=config.features, width=width,
        weight_init=config.weight_init, num_classes=num_classes,
        global_mean=config.global_mean, batch_size=bs, matmul_precision=config.matmul_precision)
    jax.block_until_ready(x_next)
    if not bool(out.solve_ok):
      raise krr_lib.solve_error(config.ridge, n, f"layer {layer}", dtype=dtype)
    check_agop(out.m, layer, config)
    mets = jax.tree.map(float, out.metrics)
    record = {
        "layer": layer,
        "nc1": {r: mets[r]["nc1"] for r in REPRESENTATIONS},
        "nc2": {r: mets[r]["nc2"] for r in REPRESENTATIONS},
        "train_acc": _accuracy(out.train_pred, labels_np),
        "test_acc": _accuracy(out.test_pred, labels_test),
        "seconds": time.perf_counter() - t0,
        "dim_in": d_in, "dim_out": int(x_next.shape[1]),
        "gflop": layer_flops(n, x_test.shape[0], d_in, num_classes, x_next.shape[1])["total"] / 1e9,
        "agop_batch_size": bs, "memory_estimate_bytes": layer_plan.estimate_bytes,
        "metrics": mets,
    }
    if layer in config.gram_layers:
      g, gl = metrics_lib.gram_picture(normalise_rows(x), labels_np, num_classes=num_classes,
                                       per_class=config.gram_per_class)
      grams[layer] = (np.asarray(g), gl)
      # The layer's own root: a second eigh here cost as much as the rest of the picture.
      root = metrics_lib.psd_sqrt(out.m) if out.root is None else out.root
      xa = jnp.matmul(normalise_rows(x), root, precision=HIGHEST)
      g, gl = metrics_lib.gram_picture(xa, labels_np, num_classes=num_classes,
                                       per_class=config.gram_per_class)
      grams_agop[layer] = (np.asarray(g), gl)
    if ms is not None:
      ms.append(np.asarray(out.m))
    layers.append(record)
    x, x_test = x_next, xt_next
    if on_state is not None:
      on_state(DeepRFMState(layer, np.asarray(x), np.asarray(x_test), list(layers), dict(grams),
                            None if ms is None else list(ms), dict(grams_agop)))
    if callback is not None:
      callback(record)

  t0 = time.perf_counter()
  train_pred, test_pred, ok = final_krr(x, x_test, y, lab, config.bandwidth, config.ridge,
                                        kernel=config.kernel, num_classes=num_classes)
  if not bool(ok):
    raise krr_lib.solve_error(config.ridge, n, "final KRR", dtype=dtype)
  final = {"train_acc": _accuracy(train_pred, labels_np),
           "test_acc": _accuracy(test_pred, labels_test),
           "seconds": time.perf_counter() - t0}
  g, gl = metrics_lib.gram_picture(normalise_rows(x), labels_np, num_classes=num_classes,
                                   per_class=config.gram_per_class)
  grams[config.depth + 1] = (np.asarray(g), gl)
  return DeepRFMResult(layers, final, ms, grams, grams_agop)
