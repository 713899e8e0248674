"""The Deep RFM checkpoint: the driver's :class:`~dnc_jax.rfm.driver.DeepRFMState` on disk.

A run folder's ``checkpoint/`` holds ``options.json`` (the command's options),
``state_NNNN.npz`` (the rows after layer ``NNNN``, Gram pictures, ``M``s) and
``state.json`` (the layer records, pointing at that file). The arrays are
written first and ``state.json`` last, each atomically, so a killed write
leaves the previous state in place; :class:`CheckpointWriter` writes in a
background thread while the next layer computes.
"""
from __future__ import annotations

import json
import pathlib
import threading

import numpy as np

from dnc_jax.errors import DncError
from dnc_jax.io import atomic, jsonio
from dnc_jax.rfm.driver import DeepRFMState

CHECKPOINT = "checkpoint"


def save_checkpoint(ckpt: pathlib.Path, state) -> None:
  """Writes the state after a layer: arrays first, then the JSON that points at them."""
  arrays = {"x": state.x, "x_test": state.x_test}
  for layer, (g, lab) in state.grams.items():
    arrays[f"gram_{layer}"], arrays[f"gram_labels_{layer}"] = g, lab
  for layer, (g, lab) in (state.grams_agop or {}).items():
    arrays[f"agop_gram_{layer}"], arrays[f"agop_gram_labels_{layer}"] = g, lab
  for i, m in enumerate(state.ms or []):
    arrays[f"m_{i + 1}"] = m
  name = f"state_{state.layer:04d}.npz"
  # Uncompressed: zlib took seconds per layer for a few percent of space on float data.
  atomic.write_npz_uncompressed(ckpt / name, **arrays)
  jsonio.write_json(ckpt / "state.json", {"layer": state.layer, "arrays": name,
                                        "layers": state.layers, "grams": sorted(state.grams),
                                        "grams_agop": sorted(state.grams_agop or {}),
                                        "num_ms": len(state.ms or []), "keep_m": state.ms is not None})
  for old in ckpt.glob("state_*.npz"):  # only after state.json points at the new file
    if old.name != name:
      old.unlink()
  for tmp in ckpt.glob(".state*.tmp"):   # left by a process killed while writing
    tmp.unlink(missing_ok=True)


def load_checkpoint(ckpt: pathlib.Path) -> DeepRFMState | None:
  """The :class:`DeepRFMState` saved in ``ckpt`` (None when there is none)."""
  meta_path = ckpt / "state.json"
  if not meta_path.exists():
    return None
  meta = json.loads(meta_path.read_text())
  with np.load(ckpt / meta["arrays"]) as z:
    grams = {int(l): (z[f"gram_{l}"], z[f"gram_labels_{l}"]) for l in meta["grams"]}
    ms = [z[f"m_{i + 1}"] for i in range(meta["num_ms"])] if meta["keep_m"] else None
    grams_agop = {int(l): (z[f"agop_gram_{l}"], z[f"agop_gram_labels_{l}"])
                  for l in meta.get("grams_agop", [])}
    return DeepRFMState(meta["layer"], z["x"], z["x_test"], meta["layers"], grams, ms,
                             grams_agop)



class CheckpointWriter:
  """Writes checkpoints in a background thread, one at a time and in order.

  :meth:`submit` returns once the previous write has finished and the next one
  has started, so a layer computes while the last layer's state is written.
  :meth:`wait` must be called before the process ends (also on an interrupt):
  a killed write leaves the previous checkpoint in place (atomic files).
  """

  def __init__(self, ckpt: pathlib.Path):
    self.ckpt = ckpt
    self._thread = None
    self._error = None

  def submit(self, state) -> None:
    self.wait()
    self._thread = threading.Thread(target=self._write, args=(state,), name="checkpoint",
                                    daemon=True)
    self._thread.start()

  def _write(self, state) -> None:
    try:
      save_checkpoint(self.ckpt, state)
    except BaseException as e:   # reported in the main thread by wait()
      self._error = e

  def wait(self) -> None:
    """Blocks until the last submitted checkpoint is written; raises DncError if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._error is not None:
      err, self._error = self._error, None
      raise DncError(f"could not write the checkpoint in {self.ckpt}: {err}") from err
