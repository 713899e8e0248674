r"""Training the paper's networks with SGD and probing them every few epochs.

Loss: mean squared error on ±1 targets, averaged over all ``N·K`` entries,

.. math:: \mathcal{L} = \frac{1}{NK}\sum_{i,c}(f_c(x_i) - y_{ic})^2,

optimised by optax SGD (learning rate, momentum, weight decay added to the
gradient as in PyTorch) in mini-batches of 128. Epoch ``e`` visits the training
points in the order ``permutation(fold_in(data_key, e), N)``, with
``init_key, data_key, probe_key = split(key(seed), 3)``: the order depends only
on the seed and the epoch, so a resumed run sees the same batches. Full batches
run in one jitted ``lax.scan``; a final partial batch (``N mod B`` points) is one
more call of the same step.

Every ``measure_every`` epochs (and at epoch 0) the head is probed
(:mod:`dnc_jax.nets.probes`) on the training set and an orbax checkpoint is written.
Each epoch appends one record to ``history.jsonl`` (rewritten atomically, before
the checkpoint of that epoch, so the history always covers the latest
checkpoint); the run directory also holds ``config.json``, ``metrics.json`` and
``metrics.csv``. A non-finite loss stops the run with :class:`DivergenceError`,
naming the epoch; the last good state is kept as a checkpoint. A SIGINT or
SIGTERM caught by :func:`dnc_jax.io.runs.deferred_interrupts` stops the run at the
end of the current epoch, after a checkpoint of that epoch.

The pieces, in the order :func:`train` uses them: :func:`set_up` (data, model,
keys, the jitted step, epoch scan, forward pass and embedding), the start of a
new run (epoch 0 measured and saved) or of a resumed one (the latest
checkpoint), then :func:`train_epoch` per epoch, followed by the evaluation, the
probes at a measurement epoch and the history and checkpoint writes; last
``metrics.json`` and ``metrics.csv``. :func:`train_in_dir` adds the rules of a
run directory (``bin/train_nn``); :func:`probe_saved` probes a saved run again.

References:
  Beaglehole et al., NeurIPS 2024, Section 6 and Appendix D.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnc_jax import metrics as metrics_lib
from dnc_jax.nets import models as nets
from dnc_jax.nets import probes as probes_lib
from dnc_jax.io import atomic, jsonio, runs
from dnc_jax.errors import ConfigError, DncError

CHECKPOINT_DIR = "checkpoints"
# Options that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "progress")


class DivergenceError(DncError):
  """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Options of a training run (defaults: the paper's MLP; see :func:`paper_defaults`).

  Attributes:
    model: ``"mlp"``, ``"vgg11"`` or ``"resnet18"``.
    dataset: a :func:`dnc_jax.data.load_dataset` name.
    data_dir: folder with raw data files (``None``: the loader's search path).
    n: first ``n`` training points (``None``: all).
    n_test: first ``n_test`` test points (``None``: all; 0: none).
    epochs: number of epochs.
    lr: SGD learning rate.
    momentum: SGD momentum (0: none).
    weight_decay: L2 coefficient added to the gradient.
    init: gain of the head's Xavier-uniform hidden weights.
    width: head width.
    depth: number of hidden head layers.
    batch_size: mini-batch size.
    measure_every: probe (and checkpoint) every this many epochs; 0: only at the end.
    seed: seed of the single ``jax.random.key``.
    x64: float64 parameters and data (needs ``jax_enable_x64``).
    probe_n: training points used by the probes (``None``: all; else a fixed
      random subset drawn from the seed).
    probe_batch_size: AGOP rows per block (``None``: from a 512 MiB budget).
    global_mean: ``"sample"`` or ``"class_means"`` (collapse-metric convention).
    progress: show a tqdm progress bar.
  """
  model: str = "mlp"
  dataset: str = "fashion_mnist"
  data_dir: str | None = None
  n: int | None = None
  n_test: int | None = None
  epochs: int = 500
  lr: float = 0.05
  momentum: float = 0.0
  weight_decay: float = 0.0
  init: float = 0.3
  width: int = 512
  depth: int = 5
  batch_size: int = 128
  measure_every: int = 10
  seed: int = 0
  x64: bool = False
  probe_n: int | None = None
  probe_batch_size: int | None = None
  global_mean: str = "sample"
  progress: bool = True


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def paper_defaults(model: str, dataset: str = "fashion_mnist") -> dict:
  """Appendix D's settings: ``{"lr", "momentum", "epochs", "init"}`` for ``model``.

  MLP: lr 0.05, no momentum, 500 epochs, init 0.3 (0.2 on MNIST); ResNet-18:
  lr 0.05, no momentum, 300 epochs, init 0.2; VGG-11: lr 0.01, momentum 0.9,
  600 epochs, init 0.3 (0.2 on MNIST).
  """
  if model not in nets.MODELS:
    raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(nets.MODELS)}")
  mnist = dataset in ("mnist", "mnist5k")
  return {
      "mlp": {"lr": 0.05, "momentum": 0.0, "epochs": 500, "init": 0.2 if mnist else 0.3},
      "resnet18": {"lr": 0.05, "momentum": 0.0, "epochs": 300, "init": 0.2},
      "vgg11": {"lr": 0.01, "momentum": 0.9, "epochs": 600, "init": 0.2 if mnist else 0.3},
  }[model]


def check_config(cfg: TrainConfig) -> None:
  """Raises :class:`ConfigError` for invalid options (before any work)."""
  if cfg.model not in nets.MODELS:
    raise ConfigError(f"unknown model {cfg.model!r}; choose one of {', '.join(nets.MODELS)}")
  positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "width": cfg.width,
              "depth": cfg.depth}
  for name, v in positive.items():
    if not isinstance(v, int) or v < 1:
      raise ConfigError(f"{name} must be a positive integer, got {v!r}")
  if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
    raise ConfigError(f"lr must be a positive finite number, got {cfg.lr!r}")
  if not 0 <= cfg.momentum < 1:
    raise ConfigError(f"momentum must lie in [0, 1), got {cfg.momentum!r}")
  if cfg.weight_decay < 0:
    raise ConfigError(f"weight_decay must be ≥ 0, got {cfg.weight_decay!r}")
  if not cfg.init > 0:
    raise ConfigError(f"init gain must be > 0, got {cfg.init!r}")
  if cfg.measure_every < 0:
    raise ConfigError(f"measure_every must be ≥ 0 (0: only at the end), got {cfg.measure_every}")
  if cfg.probe_n is not None and cfg.probe_n < 2:
    raise ConfigError(f"probe_n must be ≥ 2 (or None for all points), got {cfg.probe_n}")
  if cfg.global_mean not in metrics_lib.GLOBAL_MEANS:
    raise ConfigError(f"unknown global mean {cfg.global_mean!r}; choose one of "
                      f"{', '.join(metrics_lib.GLOBAL_MEANS)}")
  if cfg.x64 and not jax.config.jax_enable_x64:
    raise ConfigError("x64=True needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
                      "before any JAX work (bin/train_nn --x64 does this)")


class TrainState(NamedTuple):
  """Everything that evolves during training (a pytree)."""
  step: jax.Array          # [] int32, optimizer steps taken
  epoch: jax.Array         # [] int32, epochs completed
  params: Any
  batch_stats: Any         # {} for models without BatchNorm
  opt_state: optax.OptState


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """SGD with PyTorch-style weight decay (added to the gradient before momentum)."""
  sgd = optax.sgd(cfg.lr, momentum=cfg.momentum if cfg.momentum > 0 else None)
  if cfg.weight_decay > 0:
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), sgd)
  return sgd


def mse_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean of ``(f - y)²`` over all ``N·K`` entries; ``[n, K], [n, K] → []``."""
  return jnp.mean(jnp.square(outputs - targets))


def _variables(state_params, batch_stats):
  v = {"params": state_params}
  if batch_stats:
    v["batch_stats"] = batch_stats
  return v


def make_train_step(model: nets.Network, optimizer: optax.GradientTransformation) -> Callable:
  """The pure SGD step ``(state, x [b, ...], y [b, K]) → (state, loss [])``; jit it."""

  def step(state: TrainState, x: jax.Array, y: jax.Array):
    def loss_fn(params):
      if state.batch_stats:
        out, upd = model.apply(_variables(params, state.batch_stats), x, train=True,
                               mutable=["batch_stats"])
        return mse_loss(out, y), upd["batch_stats"]
      return mse_loss(model.apply({"params": params}, x, train=True), y), state.batch_stats

    (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, state.epoch, params, bs, opt_state), loss

  return step


def make_epoch(step: Callable) -> Callable:
  """``(state, x [N, ...], y [N, K], idx [nb, B]) → (state, losses [nb])``: a scan of ``step``."""

  def epoch(state, x, y, idx):
    def body(s, ib):
      return step(s, x[ib], y[ib])
    return jax.lax.scan(body, state, idx)

  return epoch


def init_state(model: nets.Network, optimizer, key: jax.Array, example: jax.Array,
               dtype) -> TrainState:
  """Initial :class:`TrainState` (parameters cast to ``dtype``)."""
  variables = nets.init_variables(model, key, example)
  variables = jax.tree.map(lambda a: a.astype(dtype), variables)
  params = variables["params"]
  bs = variables.get("batch_stats", {})
  return TrainState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), params, bs,
                    optimizer.init(params))


def epoch_permutation(data_key: jax.Array, epoch: int, n: int) -> np.ndarray:
  """Order of the training points in epoch ``epoch`` (1-based): ``[n]``."""
  return np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))


def batched_apply(fn: Callable, x: jax.Array, batch_size: int) -> jax.Array:
  """``fn`` over rows of ``x`` in blocks of ``batch_size`` (last block padded): one shape."""
  n = x.shape[0]
  b = max(1, min(batch_size, n))
  outs = []
  for s in range(0, n, b):
    xb = x[s:s + b]
    m = xb.shape[0]
    if m < b:
      xb = jnp.concatenate([xb, jnp.repeat(xb[-1:], b - m, axis=0)])
    outs.append(fn(xb)[:m])
  return jnp.concatenate(outs)


# ------------------------------------------------------------------ files


def write_history(path, history: list[dict]) -> None:
  jsonio.write_jsonl(path, history, inf_as_string=True)


def read_history(path) -> list[dict]:
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def config_record(cfg: TrainConfig, dataset_info: dict | None = None) -> dict:
  """What ``config.json`` holds: the options, the data and the metric conventions."""
  return {
      "config": dataclasses.asdict(cfg),
      "dataset": dataset_info or {},
      "loss": "MSE on +-1 targets, mean over all N*K entries",
      "conventions": {**probes_lib.CONVENTIONS, "global_mean": cfg.global_mean,
                      "name": "paper (Beaglehole et al. 2024); nc1 = tr(Sigma_W)/tr(Sigma_B)"},
      "epoch_order": "permutation(fold_in(split(key(seed), 3)[1], epoch), N)",
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
  }


def check_resume(stored: dict, cfg: TrainConfig) -> None:
  """Raises :class:`ConfigError` when ``cfg`` differs from a run's stored config."""
  old = stored.get("config", {})
  new = dataclasses.asdict(cfg)
  diff = [(k, old.get(k), v) for k, v in new.items()
          if k not in RESUMABLE_CHANGES and old.get(k) != v]
  if diff:
    desc = "; ".join(f"{k}: stored {a!r}, asked {b!r}" for k, a, b in diff)
    raise ConfigError(f"cannot resume: the run was made with a different configuration ({desc}). "
                      "Resume with the stored options (only --epochs may change) or start a new "
                      "run in another --out directory")


# ------------------------------------------------------------------ checkpoints


def _manager(out_dir):
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(
      pathlib.Path(out_dir).absolute() / CHECKPOINT_DIR,
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                           enable_async_checkpointing=False))


def _leaves_dict(state: TrainState) -> dict:
  return {f"leaf_{i:05d}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(state))}


def save_checkpoint(manager, state: TrainState) -> None:
  """Saves ``state`` under its epoch number (orbax writes to a temporary dir, then renames)."""
  import orbax.checkpoint as ocp
  manager.save(int(state.epoch), args=ocp.args.StandardSave(_leaves_dict(state)), force=True)
  manager.wait_until_finished()


def restore_checkpoint(manager, template: TrainState, epoch: int | None = None) -> TrainState:
  """Restores the checkpoint of ``epoch`` (default: latest) into the structure of ``template``."""
  import orbax.checkpoint as ocp
  epoch = manager.latest_step() if epoch is None else epoch
  if epoch is None:
    raise ConfigError(f"no checkpoint found in {manager.directory}; start a new run instead "
                      "of resuming")
  target = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), _leaves_dict(template))
  leaves = manager.restore(epoch, args=ocp.args.StandardRestore(target))
  treedef = jax.tree.structure(template)
  return jax.tree.unflatten(treedef, [jnp.asarray(leaves[k]) for k in sorted(leaves)])


# ------------------------------------------------------------------ summaries


def _mean_nfa(layers):
  vals = [r["nfa"]["sqrt_agop"] for r in layers]
  return float(np.mean(vals)) if vals else float("nan")


def summarise(history: list[dict]) -> dict:
  """Final losses and the last probe of every layer, with its NC1 shares (``metrics.json``)."""
  if not history:
    return {}
  last = history[-1]
  probed = [r for r in history if "layers" in r]
  summary = {k: last.get(k) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}
  if probed:
    layers = []
    for rec in probed[-1]["layers"]:
      layers.append({**rec, "nc1_shares": probes_lib.nc1_shares(rec)})
    summary["probe_epoch"] = probed[-1]["epoch"]
    summary["layers"] = layers
    summary["nfa_sqrt_agop_mean"] = _mean_nfa(probed[-1]["layers"])
  return summary


def metrics_csv(history: list[dict]) -> str:
  """One row per (measurement epoch, layer)."""
  buf = io.StringIO()
  cols = (["epoch", "layer", "train_loss", "test_loss", "train_acc", "test_acc"]
          + [f"nfa_{k}" for k in probes_lib.NFA_KINDS]
          + [f"nc1_{k}" for k in probes_lib.NC1_PARTS] + ["tr_w_over_t", "tr_b_over_t", "nc2"])
  w = csv.writer(buf)
  w.writerow(cols)
  for rec in history:
    for lay in rec.get("layers", []):
      w.writerow([rec["epoch"], lay["layer"], rec.get("train_loss"), rec.get("test_loss"),
                  rec.get("train_acc"), rec.get("test_acc")]
                 + [lay["nfa"][k] for k in probes_lib.NFA_KINDS]
                 + [lay["nc1"][k] for k in probes_lib.NC1_PARTS]
                 + [lay["tr_w_over_t"], lay["tr_b_over_t"], lay["nc2"]])
  return buf.getvalue()


# ------------------------------------------------------------------ set-up

EVAL_BATCH = 1024   # rows per forward pass of the evaluation and the probes


class TrainResult(NamedTuple):
  """What :func:`train` returns."""
  state: TrainState
  history: list          # one dict per epoch (as in history.jsonl)
  model: nets.Network
  out_dir: str | None


class RunSetup(NamedTuple):
  """What the epochs of a run use: its data, model, keys and jitted functions.

  ``train`` and ``test`` are ``(images [n, H, W, C], ±1 targets [n, K], labels [n])``;
  the probes use the rows ``x_probe [m, H, W, C]``, ``y_probe [m]`` of the training set.
  """
  cfg: TrainConfig
  model: nets.Network
  num_classes: int
  train: tuple
  test: tuple
  data_key: jax.Array
  x_probe: jax.Array
  y_probe: np.ndarray
  step: Callable         # jitted (state, x [b, ...], y [b, K]) -> (state, loss [])
  epoch: Callable        # jitted (state, x, y, idx [nb, B]) -> (state, losses [nb])
  forward: Callable      # jitted (variables, x [b, ...]) -> outputs [b, K]
  embed: Callable        # jitted (variables, x [b, ...]) -> head input [b, d]


def _load_data(cfg: TrainConfig):
  from dnc_jax import data as data_lib
  return data_lib.load_dataset(cfg.dataset, n=cfg.n, n_test=cfg.n_test, data_dir=cfg.data_dir,
                               flatten=False, seed=cfg.seed)


def _split(x, y, shape: tuple, k: int, dtype) -> tuple:
  """One split as ``(images [n, *shape], ±1 targets [n, K], int labels [n])``."""
  labels = np.asarray(y).astype(np.int32)
  return (jnp.asarray(np.asarray(x).reshape((-1,) + shape), dtype),
          jnp.asarray(2.0 * np.eye(k)[labels] - 1.0, dtype), labels)


def probe_rows(probe_key: jax.Array, n: int, probe_n: int | None) -> np.ndarray:
  """The training rows the probes use: all ``n``, or ``probe_n`` drawn with ``probe_key``."""
  if probe_n is not None and probe_n < n:
    return np.sort(np.asarray(jax.random.permutation(probe_key, n))[:probe_n])
  return np.arange(n)


def set_up(cfg: TrainConfig, ds) -> tuple[RunSetup, TrainState]:
  """Checks and converts the data ``ds`` (a :class:`dnc_jax.data.Dataset`), builds
  the model, the jitted functions and the initial state.

  ``init_key, data_key, probe_key = split(key(seed), 3)``: the initial
  parameters, the epoch orders and the probe rows each have their own key.
  """
  nets.check_input_shape(cfg.model, ds.image_shape)
  dtype = jnp.float64 if cfg.x64 else jnp.float32
  k = int(ds.num_classes)
  shape = tuple(int(s) for s in ds.image_shape)
  train = _split(ds.x_train, ds.y_train, shape, k, dtype)
  test = _split(ds.x_test, ds.y_test, shape, k, dtype)
  n = train[0].shape[0]
  if n < cfg.batch_size:
    raise ConfigError(f"only {n} training points for batch size {cfg.batch_size}; "
                      "lower --batch-size or raise --n")
  metrics_lib.check_labels(np.zeros((n, 1)), train[2], k)

  model = nets.make_model(cfg.model, num_classes=k, depth=cfg.depth, width=cfg.width,
                          init_gain=cfg.init, param_dtype=dtype)
  optimizer = make_optimizer(cfg)
  init_key, data_key, probe_key = jax.random.split(jax.random.key(cfg.seed), 3)
  state = init_state(model, optimizer, init_key, train[0][:2], dtype)
  step_fn = make_train_step(model, optimizer)
  rows = probe_rows(probe_key, n, cfg.probe_n)
  setup = RunSetup(cfg=cfg, model=model, num_classes=k, train=train, test=test,
                 data_key=data_key, x_probe=train[0][rows], y_probe=train[2][rows],
                 step=jax.jit(step_fn), epoch=jax.jit(make_epoch(step_fn)),
                 forward=jax.jit(lambda v, xb: model.apply(v, xb, train=False)),
                 embed=jax.jit(lambda v, xb: nets.embed(model, v, xb)))
  return setup, state


# ------------------------------------------------------------------ one epoch


def train_epoch(setup: RunSetup, state: TrainState, epoch: int) -> tuple[TrainState, float]:
  """Epoch ``epoch`` (1-based): every training point once, in mini-batches.

  The order is :func:`epoch_permutation` of ``data_key`` and ``epoch``; the full
  batches run in one scan, the last ``N mod B`` points in one more step.

  Returns:
    the new state (``epoch`` advanced) and the running loss, the mean over the
    epoch's batches weighted by their sizes.
  """
  x, y, _ = setup.train
  n, b = x.shape[0], setup.cfg.batch_size
  nb, rem = divmod(n, b)
  perm = epoch_permutation(setup.data_key, epoch, n)
  state, losses = setup.epoch(state, x, y, jnp.asarray(perm[:nb * b].reshape(nb, b)))
  total = float(jnp.sum(losses)) * b
  if rem:
    state, l_rem = setup.step(state, x[perm[nb * b:]], y[perm[nb * b:]])
    total += float(l_rem) * rem
  return state._replace(epoch=state.epoch + 1), total / n


def _evaluate(setup: RunSetup, state: TrainState) -> dict:
  """MSE and accuracy of ``state`` on the training and test sets (a set with no points: none)."""
  v = _variables(state.params, state.batch_stats)
  res = {}
  for name, (xs, ys, lab) in (("train", setup.train), ("test", setup.test)):
    if xs.shape[0] == 0:
      continue
    o = batched_apply(lambda xb: setup.forward(v, xb), xs, EVAL_BATCH)
    res[f"{name}_loss"] = float(mse_loss(o, ys))
    res[f"{name}_acc"] = float(np.mean(np.argmax(np.asarray(o), axis=1) == lab))
  return res


def _head_input(setup: RunSetup, state: TrainState) -> tuple[dict, jax.Array]:
  """The head's parameters and its input on the probe rows, ``[m, d]``."""
  v = _variables(state.params, state.batch_stats)
  h1 = batched_apply(lambda xb: setup.embed(v, xb), setup.x_probe, EVAL_BATCH)
  return nets.head_params(v), h1


def _probe(setup: RunSetup, hp: dict, h1: jax.Array) -> list[dict]:
  """The probes of every head layer (:func:`dnc_jax.nets.probes.probe_head`)."""
  cfg = setup.cfg
  return probes_lib.probe_head(hp, h1, setup.y_probe, num_classes=setup.num_classes,
                               batch_size=cfg.probe_batch_size, global_mean=cfg.global_mean)


def _measure(setup: RunSetup, state: TrainState) -> list[dict]:
  return _probe(setup, *_head_input(setup, state))


def _is_measure(cfg: TrainConfig, e: int) -> bool:
  return e == 0 or e == cfg.epochs or (cfg.measure_every > 0 and e % cfg.measure_every == 0)


def _epoch_record(setup: RunSetup, state: TrainState, e: int, running: float, ev: dict,
                  t0: float) -> dict:
  """The ``history.jsonl`` record of epoch ``e`` (probed at a measurement epoch)."""
  rec = {"epoch": e, "step": int(state.step), "train_loss_running": running, **ev,
         "seconds": time.perf_counter() - t0}
  if _is_measure(setup.cfg, e):
    t1 = time.perf_counter()
    rec["layers"] = _measure(setup, state)
    rec["probe_seconds"] = time.perf_counter() - t1
    rec["conventions"] = "paper; see config.json"
  return rec


def _divergence(cfg: TrainConfig, prev: TrainState, e: int, running: float, *, out, manager,
                last_saved) -> DivergenceError:
  """The error of a non-finite loss at epoch ``e``, after saving the last good state ``prev``."""
  kept = ""
  if manager is not None:
    if last_saved != e - 1:
      save_checkpoint(manager, prev)
    kept = f"; the last good state (epoch {e - 1}) is kept in {out / CHECKPOINT_DIR}"
  return DivergenceError(
      f"training loss became {running} at epoch {e} (lr={cfg.lr}){kept}. Use a smaller "
      f"learning rate, e.g. --lr {cfg.lr / 2:g}, and start a new run")


# ------------------------------------------------------------------ the run


def _check_resume_dir(out, cfg: TrainConfig, *, resume: bool) -> None:
  """A resumed run needs its directory and config; a new one an unused directory."""
  if resume:
    if out is None:
      raise ConfigError("resume needs the run directory (out_dir / --resume DIR)")
    if not (out / "config.json").exists():
      raise ConfigError(f"cannot resume: {out} has no config.json (not a training run "
                        "directory); pass the --out directory of an earlier run")
    check_resume(json.loads((out / "config.json").read_text()), cfg)
  elif out is not None and (out / "history.jsonl").exists():
    raise ConfigError(f"{out} already holds a run; pass --resume {out} to continue it or "
                      "choose another --out")


def _start(setup: RunSetup, state: TrainState, *, out, manager, info: dict) -> list[dict]:
  """A new run: ``config.json``, the epoch-0 record and checkpoint; returns the history."""
  if out is not None:
    out.mkdir(parents=True, exist_ok=True)
    jsonio.write_json(out / "config.json", config_record(setup.cfg, info), inf_as_string=True)
  history = [{"epoch": 0, "step": 0, **_evaluate(setup, state), "seconds": 0.0,
              "layers": _measure(setup, state), "conventions": "paper; see config.json"}]
  if out is not None:
    write_history(out / "history.jsonl", history)
    # The epoch-0 checkpoint: a run stopped before its first measurement resumes.
    save_checkpoint(manager, state)
  return history


def _restart(cfg: TrainConfig, state: TrainState, *, out, manager) -> tuple[TrainState, list]:
  """A resumed run: the latest checkpoint and the history up to its epoch."""
  state = restore_checkpoint(manager, state)
  done = int(state.epoch)
  history = [r for r in read_history(out / "history.jsonl") if r["epoch"] <= done]
  # The stored config records the latest epoch target.
  rec = json.loads((out / "config.json").read_text())
  rec["config"]["epochs"] = cfg.epochs
  atomic.atomic_write_text(out / "config.json", json.dumps(rec, indent=2) + "\n")
  return state, history


def _progress_bar(cfg: TrainConfig, start: int):
  if not cfg.progress:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=cfg.epochs, initial=start - 1, desc=f"{cfg.model}/{cfg.dataset}",
              unit="epoch", dynamic_ncols=True)


def _run_epochs(setup: RunSetup, state: TrainState, history: list, *, out,
                manager) -> TrainState:
  """Epochs ``state.epoch + 1 … cfg.epochs``; each appends its record to ``history``.

  The history is rewritten after every epoch, then (at a measurement epoch or
  on a stop request) the checkpoint: a kill between the two loses nothing.
  """
  cfg = setup.cfg
  start = int(state.epoch) + 1
  last_saved = int(state.epoch) if out is not None else None
  bar = _progress_bar(cfg, start)
  last_nfa = next((_mean_nfa(r["layers"]) for r in reversed(history) if "layers" in r),
                  float("nan"))
  try:
    runs.check_interrupt()   # a signal during the set-up stops here (epoch 0 is saved)
    for e in range(start, cfg.epochs + 1):
      t0 = time.perf_counter()
      prev = state
      state, running = train_epoch(setup, state, e)
      ev = _evaluate(setup, state)
      if not (math.isfinite(running) and math.isfinite(ev["train_loss"])):
        raise _divergence(cfg, prev, e, running, out=out, manager=manager,
                          last_saved=last_saved)
      rec = _epoch_record(setup, state, e, running, ev, t0)
      if "layers" in rec:
        last_nfa = _mean_nfa(rec["layers"])
      history.append(rec)
      if out is not None:
        write_history(out / "history.jsonl", history)
        if _is_measure(cfg, e) or runs.interrupt_requested():
          save_checkpoint(manager, state)
          last_saved = e
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{ev['train_loss']:.4g}",
                        acc=f"{ev.get('test_acc', float('nan')):.3f}", nfa=f"{last_nfa:.3f}")
      runs.check_interrupt()   # the epoch is saved: a safe point
  finally:
    if bar is not None:
      bar.close()
    if manager is not None:
      manager.close()
  return state


def _write_metrics(out: pathlib.Path, history: list[dict], cfg: TrainConfig) -> None:
  """``metrics.json`` (:func:`summarise`) and ``metrics.csv`` (:func:`metrics_csv`)."""
  summary = {"summary": summarise(history), "conventions": probes_lib.CONVENTIONS,
             "global_mean": cfg.global_mean}
  jsonio.write_json(out / "metrics.json", summary, inf_as_string=True)
  atomic.atomic_write_text(out / "metrics.csv", metrics_csv(history))


def train(cfg: TrainConfig, *, out_dir=None, resume: bool = False, dataset=None) -> TrainResult:
  """Trains ``cfg.model`` on ``cfg.dataset`` with probes every ``cfg.measure_every`` epochs.

  Args:
    cfg: the options.
    out_dir: run directory (``config.json``, ``history.jsonl``, ``metrics.json``,
      ``metrics.csv``, ``checkpoints/``); ``None`` writes nothing (no checkpoints).
    resume: continue the run in ``out_dir`` from its latest checkpoint; the
      stored configuration must equal ``cfg`` except for ``epochs``.
    dataset: an already loaded :class:`dnc_jax.data.Dataset` (images
      ``[n, H, W, C]``) instead of loading ``cfg.dataset``.

  Returns:
    :class:`TrainResult`.

  Raises:
    ConfigError: invalid options, unsuitable data shape, mismatched resume.
    DivergenceError: the loss became non-finite (the last good state is saved).
  """
  check_config(cfg)
  out = None if out_dir is None else pathlib.Path(out_dir)
  _check_resume_dir(out, cfg, resume=resume)
  ds = _load_data(cfg) if dataset is None else dataset
  setup, state = set_up(cfg, ds)
  manager = None if out is None else _manager(out)
  if resume:
    state, history = _restart(cfg, state, out=out, manager=manager)
  else:
    history = _start(setup, state, out=out, manager=manager,
                     info=dict(getattr(ds, "info", {}) or {}))
  state = _run_epochs(setup, state, history, out=out, manager=manager)
  if out is not None:
    _write_metrics(out, history, cfg)
  return TrainResult(state, history, setup.model, None if out is None else str(out))


# ------------------------------------------------------------------ run directories

# A directory holds a run once it has a checkpoint or metrics.json (without either there
# is nothing to continue, so a new run may replace what a killed start left there).
RUN_FILES = ("metrics.json",)
OUTPUT_FILES = ("config.json", "history.jsonl", "metrics.json", "metrics.csv",
                "nc1_decomposition.png", "training.png")
# Relative fall of the training loss below which a run is still on its initial plateau.
PLATEAU_FALL = 0.05


def make_config(options: dict, *, resume_dir=None) -> TrainConfig:
  """The :class:`TrainConfig` of a run from the options given (``{field: value}``).

  A new run takes Appendix D's defaults for its model and dataset
  (:func:`paper_defaults`) under ``options``; a resumed one (``resume_dir``)
  takes the configuration stored in ``resume_dir/config.json`` under ``options``.
  """
  if resume_dir is None:
    model = options.get("model", "mlp")
    dataset = options.get("dataset", "fashion_mnist")
    return TrainConfig(**{**paper_defaults(model, dataset), **options})
  cfg_path = pathlib.Path(resume_dir) / "config.json"
  if not cfg_path.exists():
    raise ConfigError(f"cannot resume: {cfg_path} not found; pass the --out directory of an "
                      "earlier train_nn run")
  stored = json.loads(cfg_path.read_text())["config"]
  merged = {**stored, **options}
  return TrainConfig(**{k: merged[k] for k in stored if k in _FIELDS})


def latest_checkpoint(out) -> int | None:
  """The epoch of the newest checkpoint in ``out`` (None when there is none)."""
  folder = pathlib.Path(out) / CHECKPOINT_DIR
  steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit() and p.is_dir()] \
      if folder.is_dir() else []
  return max(steps, default=None)


def check_out(out, *, resume: bool, overwrite: bool) -> None:
  """The ``--out`` rules (:func:`dnc_jax.io.runs.check_out`); a run to resume needs a checkpoint."""
  runs.check_out(out, overwrite=overwrite, resume=resume, markers=RUN_FILES,
                 resume_hint=f"--resume {out}")
  if not (resume or overwrite) and latest_checkpoint(out) is not None:
    raise ConfigError(f"{out} holds an interrupted run; continue it with --resume {out}, or "
                      "pass --overwrite to start afresh")
  if resume and latest_checkpoint(out) is None:
    raise ConfigError(f"nothing to resume in {out}: no checkpoint was written (the run stopped "
                      "before epoch 0 was measured); start it afresh with --overwrite")


def clear_run(out) -> None:
  """Removes the files of an earlier run in ``out`` (only those) before a new run."""
  import shutil
  runs.clear_run_files(pathlib.Path(out), OUTPUT_FILES)
  shutil.rmtree(pathlib.Path(out) / CHECKPOINT_DIR, ignore_errors=True)


def train_in_dir(cfg: TrainConfig, out, *, resume: bool = False) -> TrainResult:
  """:func:`train` into the run directory ``out`` (checked by :func:`check_out`).

  A new run first removes what an earlier start left in ``out``; one that
  fails before its first checkpoint leaves nothing behind (a diverged run
  keeps its last good state), and a directory made for it and left empty is
  removed.
  """
  with runs.removed_if_left_empty(out):
    if not resume:   # what a replaced or killed earlier start left there
      clear_run(out)
    try:
      return train(cfg, out_dir=out, resume=resume)
    except DncError as e:
      if not resume and not isinstance(e, DivergenceError) and latest_checkpoint(out) is None:
        clear_run(out)
      raise


def plateau_note(history: list, num_classes: int | None = None) -> str | None:
  """A note when training has not left its early plateaus (else None).

  With a small initialisation (the paper's gains 0.2-0.3) the outputs start near
  0 and the MSE near 1, where it stays for many epochs; it then drops to the
  class-prior level (``4(K-1)/K²``, 0.36 for 10 balanced classes) with
  accuracy still at chance. A short run ends on one of these plateaus.
  """
  losses = [r.get("train_loss") for r in history if r.get("train_loss") is not None]
  if len(losses) < 2 or not losses[0] > 0:
    return None
  last = history[-1]
  acc = last.get("train_acc")
  if losses[-1] < (1 - PLATEAU_FALL) * losses[0]:
    if not (num_classes and acc is not None and acc <= 2.0 / num_classes):
      return None
    where = (f"training accuracy {acc:.3f} is still near chance (1/{num_classes}) at epoch "
             f"{last['epoch']}, train loss {losses[-1]:.4f}")
  else:
    where = (f"the training loss has not left its initial plateau ({losses[0]:.4f} at epoch "
             f"{history[0]['epoch']}, {losses[-1]:.4f} at epoch {last['epoch']})")
  return (f"note: {where}: with the paper's small init the loss stays near its starting value, "
          "then near the class-prior level, for many epochs (the paper trains 500); continue "
          "with --resume DIR --epochs N, or try a larger --init (docs/networks.md)")


# ------------------------------------------------------------------ saved runs


def stored_config(run_dir) -> TrainConfig:
  """The :class:`TrainConfig` of the run in ``run_dir`` (its ``config.json``)."""
  cfg_path = pathlib.Path(run_dir) / "config.json"
  if not cfg_path.exists():
    raise ConfigError(f"{pathlib.Path(run_dir)} has no config.json; pass the --out directory "
                      "of a train_nn run")
  stored = json.loads(cfg_path.read_text())["config"]
  return TrainConfig(**{k: v for k, v in stored.items() if k in _FIELDS})


def probe_saved(run_dir, *, epoch: int | None = None, baseline_draws: int = 20,
                baseline_seed: int = 0) -> dict:
  """Probes a saved run at ``epoch`` again, adding the NFA baseline of random eigenvectors.

  Epoch 0 is rebuilt from the seed (initialisation is deterministic); other
  epochs are read from the run's checkpoints (the latest when ``epoch`` is
  None). Each layer record gets ``nfa_baseline``: mean and sd over
  ``baseline_draws`` draws of :func:`dnc_jax.nets.probes.nfa_baseline` applied to
  ``WᵀW`` and ``G^{1/2}``.

  Returns:
    ``{"epoch": e, "layers": [...], "baseline": {...}}`` in the ``history.jsonl``
    record format.
  """
  out = pathlib.Path(run_dir)
  cfg = stored_config(out)
  setup, state = set_up(cfg, _load_data(cfg))
  if epoch != 0:
    manager = _manager(out)
    try:
      state = restore_checkpoint(manager, state, epoch)
    finally:
      manager.close()
  hp, h1 = _head_input(setup, state)
  layers = _probe(setup, hp, h1)
  bkey = jax.random.key(baseline_seed)
  for rec, (d, spec_w, spec_g) in zip(layers, probes_lib.layer_spectra(hp, h1)):
    draws = np.asarray(probes_lib.nfa_baseline(spec_w, spec_g, dim=d, draws=baseline_draws,
                                               key=jax.random.fold_in(bkey, rec["layer"])),
                       np.float64)
    rec["nfa_baseline"] = {"mean": float(draws.mean()), "sd": float(draws.std(ddof=1)),
                           "draws": int(baseline_draws)}
  return {"epoch": int(state.epoch), "layers": layers,
          "baseline": "corr(Q1 L_a Q1^T, Q2 L_b Q2^T): spectra of W^T W and AGOP^1/2 kept, "
                      "eigenvectors Haar-random; mean and sd (ddof 1) over draws"}
