r"""Figures of the network probes, like the paper's Figs. 2, 7–9 and 10–12.

* :func:`plot_nc1_decomposition` — one panel per head layer: NC1
  (:math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`) against epoch for the layer
  input :math:`\phi(X)` (blue), :math:`\phi(X)VS^\top` (green), the full layer
  :math:`\mathrm{ReLU}(\phi(X)W^\top)` (red) and the AGOP projection
  :math:`\phi(X)V_aS_a` (orange, dashed).
* :func:`plot_training` — :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_T` and
  :math:`\mathrm{tr}\Sigma_B/\mathrm{tr}\Sigma_T` per layer, the NFA correlation
  per layer, and the training loss, against epoch.
* :func:`plot_run` — both, as ``bin/train_nn`` and ``bin/figures`` write them.

Each ``plot_*`` draws with the matching ``draw_*``, which returns the figure.

Several histories (seeds) give the mean with a ±1 sd band whose lower edge is
truncated at 0.01 × the mean (as in the paper's Appendix D). matplotlib is
imported inside the functions (:func:`dnc_jax.viz.style.pyplot`); files are
written atomically (:func:`dnc_jax.viz.collapse.save_figure`).

References:
  Beaglehole et al., NeurIPS 2024, Figs. 2, 7–12.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from dnc_jax.viz import collapse, style
from dnc_jax.viz.collapse import integer_ticks, legend_outside

NC1_STYLE = (("input", "φ(X)", "tab:blue", "-"),
             ("right_singular", "φ(X) V Sᵀ", "tab:green", "-"),
             ("full_layer", "ReLU(φ(X) Wᵀ)", "tab:red", "-"),
             ("agop_projection", "φ(X) AGOP^½", "tab:orange", "--"))
PNG_DPI = 120   # the PNGs of a single run (bin/train_nn)


def _save(fig, path, *, formats: Sequence[str] = ("png",),
          dpi: float | None = PNG_DPI) -> list[str]:
  """``fig`` under ``path`` (any suffix replaced) in each format; closes it."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  try:
    return collapse.save_figure(fig, path.with_suffix(".png"), formats, dpi=dpi)
  finally:
    style.pyplot().close(fig)


def _series(histories, get):
  """Epochs common to all histories and the values ``[seeds, epochs]`` of ``get(record)``."""
  recs = [{r["epoch"]: r for r in h if "layers" in r} for h in histories]
  epochs = sorted(set.intersection(*[set(r) for r in recs])) if recs else []
  vals = np.array([[get(r[e]) for e in epochs] for r in recs], dtype=float)
  return np.array(epochs), vals


def _layer_ids(histories) -> list[int]:
  """The head layers probed in the first history."""
  return [r["layer"] for r in next(r for r in histories[0] if "layers" in r)["layers"]]


def _layer(rec: dict, layer: int) -> dict:
  return next(p for p in rec["layers"] if p["layer"] == layer)


def _band(ax, x, vals, color, label, linestyle="-", log=True):
  mean = np.nanmean(vals, axis=0)
  ax.plot(x, mean, linestyle, color=color, label=label)
  if vals.shape[0] > 1:
    sd = np.nanstd(vals, axis=0)
    lo = np.maximum(mean - sd, 0.01 * mean) if log else mean - sd
    ax.fill_between(x, lo, mean + sd, color=color, alpha=0.2, linewidth=0)


def _finish(fig, title: str):
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def draw_nc1_decomposition(histories: list, *, title: str = ""):
  """The figure of :func:`plot_nc1_decomposition` (a matplotlib ``Figure``)."""
  plt = style.pyplot()
  layers = _layer_ids(histories)
  fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.0), squeeze=False)
  for ax, l in zip(axes[0], layers):
    for key, label, color, linestyle in NC1_STYLE:
      x, v = _series(histories, lambda r: _layer(r, l)["nc1"][key])
      _band(ax, x, v, color, label, linestyle)
    ax.set_yscale("log")
    ax.set_title(f"layer {l}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(integer_ticks())
  axes[0][0].set_ylabel("NC1 = tr Σ_W / tr Σ_B")
  legend_outside(axes[0][-1], fontsize=7)
  return _finish(fig, title)


def draw_training(histories: list, *, title: str = ""):
  """The figure of :func:`plot_training` (a matplotlib ``Figure``)."""
  plt = style.pyplot()
  layers = _layer_ids(histories)
  colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(layers)))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
  for l, c in zip(layers, colors):
    x, w = _series(histories, lambda r, l=l: _layer(r, l)["tr_w_over_t"])
    _, b = _series(histories, lambda r, l=l: _layer(r, l)["tr_b_over_t"])
    _band(axes[0], x, w, c, f"layer {l} tr Σ_W/tr Σ_T")
    _band(axes[0], x, b, c, f"layer {l} tr Σ_B/tr Σ_T", linestyle="--")
    _, nfa = _series(histories, lambda r, l=l: _layer(r, l)["nfa"]["sqrt_agop"])
    _band(axes[1], x, nfa, c, f"layer {l}", log=False)
  axes[0].set_yscale("log")
  axes[0].set_title("tr Σ_W/tr Σ_T (solid), tr Σ_B/tr Σ_T (dashed)")
  axes[1].set_title("NFA: corr(WᵀW, AGOP^½)")
  axes[1].set_ylim(-0.05, 1.0)
  axes[1].legend(fontsize=7, loc="lower right")   # NFA rises towards 1: the bottom stays free
  ep = sorted(set.intersection(*[{r["epoch"] for r in h} for h in histories]))
  loss = np.array([[{r["epoch"]: r for r in h}[e]["train_loss"] for e in ep] for h in histories],
                  dtype=float)
  _band(axes[2], np.array(ep), loss, "black", "train loss")
  axes[2].set_yscale("log")
  axes[2].set_title("train loss (MSE)")
  for ax in axes:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(integer_ticks())
  return _finish(fig, title)


def plot_nc1_decomposition(histories: list, path, *, title: str = "") -> str:
  """NC1 of the four decomposition stages per layer against epoch (Figs. 2, 7–9).

  Args:
    histories: one list of ``history.jsonl`` records per seed.
    path: output file (``.png`` added).
    title: figure title.

  Returns:
    the written path.
  """
  return _save(draw_nc1_decomposition(histories, title=title), path)[0]


def plot_training(histories: list, path, *, title: str = "") -> str:
  """Variance ratios and NFA per layer, and the training loss, against epoch (Figs. 10–12)."""
  return _save(draw_training(histories, title=title), path)[0]


FIGURES = (("nc1_decomposition", draw_nc1_decomposition), ("training", draw_training))


def plot_run(histories: list, out, *, prefix: str = "", title: str = "",
             formats: Sequence[str] = ("png",), dpi: float | None = PNG_DPI) -> list[str]:
  """Both figures of a run or a group of seeds: ``out/<prefix><stem>.<format>``.

  Args:
    histories: one list of ``history.jsonl`` records per seed.
    out: output folder.
    prefix: file-name prefix (``""``: ``nc1_decomposition``, ``training``).
    title: figure title.
    formats: file formats.
    dpi: resolution (``None``: the house style's, :data:`dnc_jax.viz.style.RC`).

  Returns:
    the written paths, in the order of :data:`FIGURES` and ``formats``.
  """
  written = []
  for stem, draw in FIGURES:
    fig = draw(histories, title=title)
    written += _save(fig, pathlib.Path(out) / f"{prefix}{stem}.png", formats=formats, dpi=dpi)
  return written
