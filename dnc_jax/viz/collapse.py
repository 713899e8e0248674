"""Figures of Deep RFM runs in the paper's style (matplotlib imported lazily).

* :func:`plot_collapse` — NC1 or NC2 against layer on a log scale, three curves
  (``input`` :math:`X_l`, ``agop`` :math:`X_l M_l^{1/2}`, ``features``
  :math:`\\Phi_l(X_l M_l^{1/2})`), as the paper's Figs. 3–4; optional ±1 sd bands
  over seeds.
* :func:`plot_grams` — Gram pictures at several layers, as Fig. 1.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from dnc_jax.io.atomic import atomic_write_bytes
from dnc_jax.viz import style

COLOURS = {"input": "#1f77b4", "agop": "#d62728", "features": "#2ca02c"}
LABELS = {
    "input": r"$X_l$ (input, row-normalised)",
    "agop": r"$X_l M_l^{1/2}$ (AGOP projection)",
    "features": r"$\Phi_l(X_l M_l^{1/2})$ (random features)",
}
TITLES = {
    "nc1": r"NC1 = tr$\Sigma_W$ / tr$\Sigma_B$ (paper convention)",
    "nc2": r"NC2 = $\|\bar M\bar M^\top - \Sigma_{ETF}\|_F$ (paper convention)",
}


def integer_ticks(nbins: int | str = 5):
  """A tick locator for layer or epoch axes: whole numbers only (no "2.5"), at most
  ``nbins`` intervals so that 4-digit epochs do not run into each other."""
  from matplotlib.ticker import MaxNLocator
  return MaxNLocator(nbins=nbins, integer=True)


def legend_outside(ax, **kwargs):
  """The legend to the right of ``ax``, so it covers no curve, band or bar.

  Figures are saved with a tight bounding box, which takes the legend in.
  """
  return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def save_figure(fig, path, formats: Sequence[str] = ("png",), *,
                dpi: float | None = None, into: dict | None = None) -> list[str]:
  """Saves ``fig`` atomically under ``path`` with each suffix in ``formats``.

  ``dpi``: the resolution of raster formats (``None``: :data:`dnc_jax.viz.style.RC`'s).
  ``into``: a dict that receives ``{path: encoded bytes}`` instead of the files
  being written (a caller that draws ahead writes them with :func:`write_figures`
  once it knows they are wanted).
  """
  import io
  written = []
  options = {} if dpi is None else {"dpi": dpi}
  for fmt in formats:
    p = pathlib.Path(path).with_suffix("." + fmt)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight", **options)
    if into is None:
      atomic_write_bytes(p, buf.getvalue())
    else:
      into[str(p)] = buf.getvalue()
    written.append(str(p))
  return written


def write_figures(files: dict) -> list[str]:
  """Writes the ``{path: bytes}`` that :func:`save_figure` put ``into`` a dict (atomically)."""
  for p, data in files.items():
    atomic_write_bytes(p, data)
  return list(files)


def plot_collapse(runs: Sequence[list], metric: str, path, *, title: str | None = None,
                  band_floor: float = 0.1, formats: Sequence[str] = ("png",),
                  into: dict | None = None) -> list[str]:
  """NC1/NC2 against layer, one curve per representation, mean ± 1 sd over runs.

  Args:
    runs: one list of layer records (``metrics.json["layers"]``) per seed.
    metric: ``"nc1"`` or ``"nc2"``.
    path: output path without suffix.
    title: figure title (default: the metric's convention).
    band_floor: the lower band edge is at least ``band_floor × mean`` (log axes).
    formats: file formats.
    into: as :func:`save_figure`.
  """
  plt = style.pyplot()
  fig, ax = plt.subplots(figsize=(4.8, 3.4))
  for rep in ("input", "agop", "features"):
    vals = np.array([[rec[metric][rep] for rec in layers] for layers in runs], dtype=float)
    layer_ids = [rec["layer"] for rec in runs[0]]
    mean = vals.mean(0)
    ax.plot(layer_ids, mean, "-o", ms=3, color=COLOURS[rep], label=LABELS[rep])
    if len(runs) > 1:
      sd = vals.std(0, ddof=1)
      ax.fill_between(layer_ids, np.maximum(mean - sd, band_floor * mean), mean + sd,
                      color=COLOURS[rep], alpha=0.2, lw=0)
  ax.set_yscale("log")
  ax.set_xlabel("layer $l$")
  ax.xaxis.set_major_locator(integer_ticks())
  ax.set_ylabel(metric.upper())
  note = f" — mean ± 1 sd over {len(runs)} seeds" if len(runs) > 1 else ""
  ax.set_title((title or TITLES[metric]) + note)
  ax.grid(True, which="both", alpha=0.3)
  legend_outside(ax)
  out = save_figure(fig, path, formats, into=into)
  plt.close(fig)
  return out


def plot_grams(grams: dict, path, *, num_classes: int, title: str = "",
               formats: Sequence[str] = ("png",), into: dict | None = None) -> list[str]:
  """Gram pictures (rows centred, unit-normalised, ordered by class) per layer.

  Args:
    grams: ``{layer: (gram [m, m], labels [m])}``.
    path: output path without suffix.
    num_classes: ``K`` (named in the title: collapsed classes give -1/(K-1) across).
    into: as :func:`save_figure`.
  """
  plt = style.pyplot()
  layers = sorted(grams)
  fig, axes = plt.subplots(1, len(layers), figsize=(2.3 * len(layers), 2.6), squeeze=False)
  im = None
  for ax, layer in zip(axes[0], layers):
    g, _ = grams[layer]
    im = ax.imshow(np.asarray(g), cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_title(f"layer {layer}")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(im, ax=list(axes[0]), fraction=0.02, pad=0.02)
  fig.suptitle(title or "Gram matrix of centred, normalised data (ordered by class); "
               f"collapse: +1 within, {-1 / (num_classes - 1):.2f} across", fontsize=9)
  out = save_figure(fig, path, formats, into=into)
  plt.close(fig)
  return out
