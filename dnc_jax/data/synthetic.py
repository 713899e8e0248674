r"""The ``synthetic`` dataset: a Gaussian mixture generated from a seed.

Class means :math:`\mu_c = s\, z_c` with :math:`z_c \sim N(0, I_d)` (:math:`s`
= ``separation``); points :math:`x = \mu_c + \sigma \varepsilon` with
:math:`\varepsilon \sim N(0, I_d)` (:math:`\sigma` = ``noise``); class sizes
geometric from the largest to the smallest with ratio ``imbalance``, summing to
``n`` exactly. The classes are interleaved at random, so that "the first n
points" means what it means for images.
"""

from __future__ import annotations

import numpy as np

from dnc_jax.errors import ConfigError

_DEFAULTS = {
    "num_classes": 10,
    "dim": 64,
    "n": 1000,
    "n_test": 500,
    "imbalance": 1.0,
    "noise": 1.0,
    "separation": 3.0,
}

# Provenance recorded in Dataset.info.
SOURCE = "synthetic Gaussian mixture (numpy default_rng)"
GENERATOR = ("mean_c ~ separation * N(0, I_d); x = mean_c + noise * N(0, I_d); class "
             "sizes geometric with largest/smallest = imbalance")


def parameters(*, n, n_test, balanced: bool, seed, **options) -> dict:
  """The generator's parameters: the defaults, updated by ``options``, ``n``, ``n_test``.

  Args:
    n, n_test: split sizes (None: the defaults, 1000 and 500).
    balanced: the pipeline's ``balanced``; it contradicts ``imbalance != 1``.
    seed: the generator's seed (checked to be an integer).
    **options: ``num_classes``, ``dim``, ``imbalance``, ``noise``, ``separation``.

  Returns:
    A dict with every key of the defaults, checked, floats where they are floats.

  Raises:
    ConfigError: an unknown option or an invalid value.
  """
  unknown = set(options) - set(_DEFAULTS)
  if unknown:
    raise ConfigError(f"unknown synthetic options {sorted(unknown)}; valid: "
                      f"{', '.join(k for k in _DEFAULTS if k not in ('n', 'n_test'))}")
  p = dict(_DEFAULTS)
  p.update(options)
  if n is not None:
    p["n"] = n
  if n_test is not None:
    p["n_test"] = n_test
  for key in ("num_classes", "dim"):
    v = p[key]
    low = 2 if key == "num_classes" else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
      raise ConfigError(f"synthetic {key} must be an integer >= {low}, got {v!r}")
  for key in ("imbalance", "noise", "separation"):
    try:
      p[key] = float(p[key])
    except (TypeError, ValueError):
      raise ConfigError(f"synthetic {key} must be a number, got {p[key]!r}") from None
  if not p["imbalance"] >= 1.0:
    raise ConfigError(f"synthetic imbalance must be >= 1 (largest/smallest class), "
                      f"got {p['imbalance']}")
  if not (p["noise"] >= 0.0 and p["separation"] >= 0.0):
    # NaN/Inf fail here or as NaN data in the pipeline.
    raise ConfigError("synthetic noise and separation must be >= 0")
  if balanced and p["imbalance"] != 1.0:
    raise ConfigError("balanced=True contradicts imbalance != 1 for the synthetic dataset")
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
    raise ConfigError(f"seed must be an integer, got {seed!r}")
  return p


def _class_counts(n: int, k: int, imbalance: float) -> np.ndarray:
  """Counts per class summing to n, geometric with largest/smallest = imbalance."""
  weights = imbalance ** (-np.arange(k) / max(k - 1, 1))
  exact = n * weights / weights.sum()
  counts = np.floor(exact).astype(np.int64)
  # Largest remainders get the points lost to rounding, so the sum is exactly n.
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:n - counts.sum()]] += 1
  return counts


def generate(*, seed: int, num_classes: int, dim: int, n: int, n_test: int,
             imbalance: float, noise: float, separation: float):
  """Gaussian mixture: means ``separation * N(0, I_d)``, points ``mean + noise * N(0, I_d)``.

  Returns float64 ``x_train [n, d]``, ``y_train [n]``, ``x_test``, ``y_test``.
  """
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((num_classes, dim)) * separation
  out = []
  for count in (n, n_test):
    labels = np.repeat(np.arange(num_classes), _class_counts(count, num_classes, imbalance))
    rng.shuffle(labels)  # interleave the classes so "first n" means something
    x = means[labels] + noise * rng.standard_normal((count, dim))
    out += [x, labels]
  return out
