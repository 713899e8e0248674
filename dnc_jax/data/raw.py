"""Dataset names, their classes and image shapes, and the raw form of a dataset.

:class:`RawData` is a split as read from its source (uint8 images ``[N, H, W,
C]``, integer labels); :func:`check_raw` is the check every source's arrays
pass before the pipeline sees them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dnc_jax.errors import DataError

# Every name load_dataset accepts.
DATASETS = ("digits", "mnist5k", "fashion_mnist", "mnist", "cifar10", "svhn_cropped",
            "synthetic")

IMAGE_SHAPES = {
    "digits": (8, 8, 1),
    "mnist5k": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}

CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "mnist5k": tuple(str(i) for i in range(10)),
    "svhn_cropped": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                "horse", "ship", "truck"),
}


@dataclasses.dataclass
class RawData:
  """A decoded, unprocessed dataset, as read from its source.

  Attributes:
    x_train: ``[N, H, W, C]`` uint8 images in the source's order.
    y_train: ``[N]`` int64 labels in ``0..9``.
    x_test: ``[N_test, H, W, C]`` uint8.
    y_test: ``[N_test]`` int64.
    source: where the arrays came from (``data_dir:idx``, ``debian:idx``,
      ``data_dir:cifar-python``, ``data_dir:cifar-binary``,
      ``data_dir:svhn-mat``, ``tfds``, ``sklearn.datasets.load_digits``).
    files: the files (or tfds folder) read.
    max_value: the pixel value that maps to 1.0 (255; 16 for digits).
    extra: source-specific provenance (JSON-serialisable).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  source: str
  files: list
  max_value: float = 255.0  # pixel value that maps to 1.0
  extra: dict = dataclasses.field(default_factory=dict)


def check_raw(raw: RawData, name: str, num_classes: int) -> None:
  """Checks shapes and label ranges of freshly read raw arrays."""
  shape = IMAGE_SHAPES[name]
  where = ", ".join(str(f) for f in raw.files) or raw.source
  for split, x, y in (("train", raw.x_train, raw.y_train),
                      ("test", raw.x_test, raw.y_test)):
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
      raise DataError(
          f"{name}: {split} images have shape {tuple(x.shape)}, expected "
          f"[N, {shape[0]}, {shape[1]}, {shape[2]}] (read from {where})")
    if x.dtype != np.uint8:
      raise DataError(f"{name}: {split} images have dtype {x.dtype}, expected uint8 "
                      f"(read from {where})")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
      raise DataError(
          f"{name}: {x.shape[0]} {split} images but {y.shape[0] if y.ndim else 0} "
          f"labels (read from {where})")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      bad = y[(y < 0) | (y >= num_classes)]
      raise DataError(
          f"{name}: {split} labels out of range: found {int(bad[0])} "
          f"({bad.size} bad labels), expected 0..{num_classes - 1} (read from {where})")
