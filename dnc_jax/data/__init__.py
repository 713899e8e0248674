"""Datasets for Deep RFM and the network experiments (SPEC §6): :func:`load_dataset`.

Modules, each importing only those before it: ``raw`` (names, classes, image
shapes, :class:`RawData`), ``formats`` (IDX, CIFAR-10, SVHN files), ``cache``
(decoded arrays on disk), ``local`` (raw files in a folder or the Debian one),
``tfds`` (tensorflow-datasets, network probe), ``sources`` (bundled datasets,
search order, :func:`load_raw`), ``synthetic`` (Gaussian mixture), ``pipeline``
(:class:`Dataset`, subsets, standardisation, :func:`load_dataset`).

Importing this package does not import tensorflow-datasets; it is imported only
when a dataset has to come from it.
"""

from dnc_jax.data.cache import cache_dir
from dnc_jax.data.formats import read_idx, read_svhn_mat, write_idx
from dnc_jax.data.local import DEBIAN_FASHION_MNIST_DIR
from dnc_jax.data.pipeline import (SVHN_TRAIN_COUNTS, Dataset, class_counts_for, load_dataset,
                                   one_hot_pm1)
from dnc_jax.data.raw import CLASS_NAMES, DATASETS, RawData
from dnc_jax.data.sources import DIGITS_TRAIN_SIZE, MNIST5K_TRAIN_PER_CLASS, load_raw
from dnc_jax.data.tfds import prepare_tfds_from_raw

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_TRAIN_SIZE",
    "MNIST5K_TRAIN_PER_CLASS",
    "SVHN_TRAIN_COUNTS",
    "class_counts_for",
    "Dataset",
    "cache_dir",
    "load_dataset",
    "RawData",
    "load_raw",
    "one_hot_pm1",
    "prepare_tfds_from_raw",
    "read_svhn_mat",
    "read_idx",
    "write_idx",
]
