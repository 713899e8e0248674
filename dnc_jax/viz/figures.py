r"""The paper's figures, with mean ± 1 sd over seeds, from run directories.

A *run directory* is what ``bin/deep_rfm`` writes (``config.json``, ``metrics.json``,
``grams.npz``) or what ``bin/train_nn`` writes (``config.json``, ``history.jsonl``).
Runs that differ only in their seed (and output folder) form a *group*; each group
gives one set of figures, averaged over its seeds:

================================  ====================================  =======================
paper                             file (``<group>_...``)                drawn by
================================  ====================================  =======================
Figs. 1, 5, 6 (Gram pictures)     ``gram`` (first seed)                 :func:`dnc_jax.viz.collapse.plot_grams`
Figs. 3, 4 (NC1 / NC2 vs layer)   ``nc1``, ``nc2``                      :func:`dnc_jax.viz.collapse.plot_collapse`
Figs. 2, 7–9 (NC1 decomposition)  ``nc1_decomposition``                 :func:`dnc_jax.viz.training.plot_nc1_decomposition`
Figs. 10–12 (ratios, NFA, loss)   ``training``                          :func:`dnc_jax.viz.training.plot_training`
(none: preset comparison)         ``compare_nc1`` (all Deep RFM groups) :func:`plot_compare`
================================  ====================================  =======================

Bands are mean ± 1 sd (``ddof = 1`` for Deep RFM, as :func:`plot_collapse` draws them);
on log axes the lower edge is truncated at ``band_floor × mean`` (default 0.01, the
paper's Appendix D). :func:`rfm_summary` and :func:`nn_summary` give the numbers behind
the figures (per-layer means and sds, per-layer NC1 decay factors, the effect of the
random feature map, NFA correlations); :func:`summary_markdown` prints them as tables.
All metrics keep the conventions of the run (paper: NC1 = tr Σ_W / tr Σ_B,
NC2 = ‖M̄M̄ᵀ − Σ_ETF‖_F). matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.io.atomic import atomic_write_bytes
from dnc_jax.rfm.config import GRAM_LAYERS, REPRESENTATIONS


class RunFileError(ConfigError):
  """A file of a run directory exists but cannot be read (damaged or truncated)."""

REPS = REPRESENTATIONS
BAND_FLOOR = 0.01
# Options that may differ between the seeds of one group.
_PER_SEED = {"seed", "out", "overwrite", "progress", "resume", "no_progress", "epochs",
             "options", "environment"}


@dataclasses.dataclass
class Run:
  """One run directory.

  Attributes:
    path: the directory.
    kind: ``"deep_rfm"`` or ``"nn"``.
    config: ``config.json``.
    metrics: ``metrics.json`` (Deep RFM) or ``None``.
    history: the records of ``history.jsonl`` (networks) or ``None``.
  """
  path: pathlib.Path
  kind: str
  config: dict
  metrics: dict | None = None
  history: list | None = None

  @property
  def seed(self):
    c = self.config
    return c.get("run", {}).get("seed", c.get("config", {}).get("seed"))

  def grams(self, rep: str = "input") -> dict:
    """``{layer: (gram, labels)}`` from ``grams.npz`` (empty if absent).

    ``rep``: ``"input"`` (:math:`X_l`) or ``"agop"`` (:math:`X_l M_l^{1/2}`).
    """
    p = self.path / "grams.npz"
    if not p.exists():
      return {}
    pre = "" if rep == "input" else rep + "_"
    with np.load(p) as z:
      return {int(k.rsplit("_", 1)[1]): (z[k], z[f"{pre}labels_" + k.rsplit("_", 1)[1]])
              for k in z.files if k.startswith(f"{pre}layer_")}


def _read_json(p: pathlib.Path) -> dict:
  try:
    return json.loads(p.read_text())
  except (OSError, ValueError) as e:
    raise RunFileError(f"cannot read {p}: {e}; the file is damaged (truncated?): rerun that "
                       "run, or leave its directory out") from e


def load_run(path) -> Run:
  """Reads one run directory (Deep RFM or network)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise ConfigError(f"{path}: not a directory")
  config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
  if (path / "metrics.json").exists() and "deep_rfm" in config:
    metrics = _read_json(path / "metrics.json")
    if not metrics.get("layers"):
      raise ConfigError(f"{path}/metrics.json has no layers")
    return Run(path, "deep_rfm", config, metrics=metrics)
  if (path / "history.jsonl").exists():
    history = []
    lines = (path / "history.jsonl").read_text().splitlines()
    for i, line in enumerate(lines):
      if not line.strip():
        continue
      try:
        history.append(json.loads(line))
      except ValueError:
        if i < len(lines) - 1:   # the last line of a run still writing may be incomplete
          raise RunFileError(f"{path}/history.jsonl: line {i + 1} is not JSON; the file is "
                             "damaged: rerun that run, or leave its directory out") from None
    if not any("layers" in r for r in history):
      raise ConfigError(f"{path}/history.jsonl has no measurement epoch yet")
    return Run(path, "nn", config, history=history)
  raise ConfigError(f"{path}: neither a Deep RFM run (config.json + metrics.json) nor a "
                    "network run (history.jsonl)")


def find_runs(paths: Iterable) -> list[Run]:
  """Run directories among ``paths``; a folder that is not a run is searched one level down."""
  runs = []
  for p in paths:
    p = pathlib.Path(p)
    try:
      runs.append(load_run(p))
      continue
    except RunFileError:
      raise   # a run with a damaged file: say which file, do not search below it
    except ConfigError:
      if not p.is_dir():
        raise
    found = []
    for sub in sorted(q for q in p.iterdir() if q.is_dir()):
      try:
        found.append(load_run(sub))
      except RunFileError:
        raise
      except ConfigError:
        pass
    if not found:
      raise ConfigError(f"{p}: no run directory in it (a Deep RFM run has config.json and "
                        "metrics.json; a network run has history.jsonl)")
    runs += found
  return runs


def _group_key(run: Run) -> str:
  c = run.config
  if run.kind == "deep_rfm":
    core = {"deep_rfm": c.get("deep_rfm"), "dataset": c.get("run", {}).get("dataset"),
            "n": c.get("n"), "n_test": c.get("n_test"), "x64": c.get("run", {}).get("x64"),
            "classes": c.get("run", {}).get("classes")}
  else:
    core = {k: v for k, v in c.get("config", c).items() if k not in _PER_SEED}
  return run.kind + json.dumps(core, sort_keys=True, default=str)


def _group_name(runs: Sequence[Run]) -> str:
  """Common prefix of the folder names without their seed suffix (``fm_s0``, ``fm_s1`` → ``fm``)."""
  names = [re.sub(r"[_-]?(seed|s)\d+$", "", r.path.name) for r in runs]
  prefix = os.path.commonprefix(names).rstrip("_-. ")
  if not prefix:
    prefix = runs[0].path.parent.name or "runs"
  return prefix.replace(".", "p").replace(" ", "_")


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
  """Groups runs that differ only in seed; ``{name: [runs sorted by seed]}``."""
  groups: dict[str, list[Run]] = {}
  for r in runs:
    groups.setdefault(_group_key(r), []).append(r)
  named: dict[str, list[Run]] = {}
  for members in groups.values():
    members = sorted(members, key=lambda r: (r.seed is None, r.seed, str(r.path)))
    seeds = [r.seed for r in members]
    if len(set(seeds)) != len(seeds):
      raise ConfigError("runs with the same configuration and the same seed: "
                        + ", ".join(str(r.path) for r in members))
    name, i = _group_name(members), 2
    base = name
    while name in named:
      name, i = f"{base}_{i}", i + 1
    named[name] = members
  return named


def describe(runs: Sequence[Run]) -> str:
  """A one-line label: dataset, n, preset, features / model."""
  c = runs[0].config
  if runs[0].kind == "deep_rfm":
    d = c["deep_rfm"]
    width = d["width"] if d.get("width") else f"input dim {c.get('dim', '?')}"
    return (f"Deep RFM, {c['run']['dataset']} n={c['n']}, {d.get('preset', '?')} preset, "
            f"{d['features']} D={width}, ridge {d['ridge']:g}")
  cc = c.get("config", {})
  n = c.get("dataset", {}).get("n", cc.get("n"))   # the loaded size (config n None: all)
  return f"{cc.get('model', '?').upper()}, {cc.get('dataset', '?')} n={n}"


# ----------------------------------------------------------------------------- numbers


def _stats(vals: np.ndarray) -> tuple[list, list]:
  """Per-column mean and sample sd (``ddof = 1``; 0 for one row) of ``vals`` ``[seeds, ...]``."""
  mean = vals.mean(0)
  sd = vals.std(0, ddof=1) if vals.shape[0] > 1 else np.zeros_like(mean)
  return mean.tolist(), sd.tolist()


def _mean_sd(vals) -> dict:
  """``{"mean", "sd"}`` of all of ``vals`` (sample sd, 0 for a single value)."""
  v = np.ravel(np.asarray(vals, dtype=float))
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _log_fit(layers: np.ndarray, v: np.ndarray) -> dict:
  """Least-squares fit of log NC1 against layer: factor per layer and R²."""
  y = np.log(v)
  a, b = np.polyfit(layers, y, 1)
  res = y - (a * layers + b)
  r2 = 1.0 - float(res @ res) / float(((y - y.mean()) ** 2).sum()) if len(y) > 2 else 1.0
  return {"factor_per_layer": float(math.exp(-a)), "r2": r2}


def rfm_summary(runs: Sequence[Run]) -> dict:
  """Per-layer mean/sd over seeds and the derived quantities of the report.

  Returns a dict with ``layers``; ``nc1``/``nc2`` → rep → ``{"mean", "sd"}``;
  ``test_acc``; ``decay`` (NC1 of ``agop`` and ``features``: the factor by which it
  falls per layer, as the geometric mean over layer blocks, and a log-linear fit with
  its R²; per seed, then mean); ``phi_ratio`` (NC1 features / NC1 agop per layer:
  > 1 means the random feature map worsens NC1); ``final_test_acc``; ``seconds``.
  """
  layer_ids = np.array([rec["layer"] for rec in runs[0].metrics["layers"]])
  depth = min(len(r.metrics["layers"]) for r in runs)
  layer_ids = layer_ids[:depth]
  out = {"group": describe(runs), "seeds": [r.seed for r in runs],
         "paths": [str(r.path) for r in runs], "layers": layer_ids.tolist()}
  arr = {}
  for metric in ("nc1", "nc2"):
    out[metric] = {}
    for rep in REPS:
      v = np.array([[rec[metric][rep] for rec in r.metrics["layers"][:depth]] for r in runs],
                   dtype=float)
      arr[metric, rep] = v
      m, s = _stats(v)
      out[metric][rep] = {"mean": m, "sd": s}
  acc = np.array([[rec.get("test_acc", np.nan) for rec in r.metrics["layers"][:depth]]
                  for r in runs], dtype=float)
  out["test_acc"] = dict(zip(("mean", "sd"), _stats(acc)))
  fin = np.array([r.metrics.get("final", {}).get("test_acc", np.nan) for r in runs])
  out["final_test_acc"] = _mean_sd(fin)
  out["seconds"] = [r.metrics.get("seconds_total") for r in runs]
  # per-layer decay of NC1
  bounds = [b for b in (1, 5, 10, 15, int(layer_ids[-1])) if b <= layer_ids[-1]]
  bounds = sorted(set(bounds))
  decay = {}
  for rep in ("input", "agop", "features"):
    v = arr["nc1", rep]
    blocks = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
      i, j = int(np.where(layer_ids == lo)[0][0]), int(np.where(layer_ids == hi)[0][0])
      f = (v[:, i] / v[:, j]) ** (1.0 / (hi - lo))
      blocks[f"{lo}-{hi}"] = _mean_sd(f)
    fits = [_log_fit(layer_ids.astype(float), row) for row in v]
    steps = v[:, :-1] / v[:, 1:]
    decay[rep] = {
        "total": float(np.mean(v[:, 0] / v[:, -1])),
        "blocks": blocks,
        "fit_factor_per_layer": float(np.mean([f["factor_per_layer"] for f in fits])),
        "fit_r2": float(np.mean([f["r2"] for f in fits])),
        "step_factors": steps.mean(0).tolist(),
    }
  out["decay"] = decay
  ratio = arr["nc1", "features"] / arr["nc1", "agop"]
  out["phi_ratio"] = {"mean": ratio.mean(0).tolist(),
                      "layers_worse": int((ratio.mean(0) > 1).sum()),
                      "all_seeds_all_layers_worse": bool((ratio > 1).all()),
                      "min": float(ratio.min()), "max": float(ratio.max())}
  agop_vs_input = arr["nc1", "agop"] / arr["nc1", "input"]
  out["agop_over_input"] = {"mean": agop_vs_input.mean(0).tolist(),
                            "all_below_one": bool((agop_vs_input < 1).all())}
  return out


def nn_summary(runs: Sequence[Run]) -> dict:
  """Last common measurement epoch of a network group: NFA, NC1 stages, loss."""
  recs = [{r["epoch"]: r for r in run.history if "layers" in r} for run in runs]
  common = sorted(set.intersection(*[set(r) for r in recs]))
  e = common[-1]
  layers = [p["layer"] for p in recs[0][e]["layers"]]
  out = {"group": describe(runs), "seeds": [r.seed for r in runs],
         "paths": [str(r.path) for r in runs], "epoch": e, "layers": layers}

  def per_layer(get):
    v = np.array([[get(next(p for p in rr[e]["layers"] if p["layer"] == l)) for l in layers]
                  for rr in recs], dtype=float)
    return v

  nfa = per_layer(lambda p: p["nfa"]["sqrt_agop"])
  out["nfa_sqrt_agop"] = dict(zip(("mean", "sd"), _stats(nfa)))
  out["nfa_all_layers"] = _mean_sd(nfa)
  nc1 = {k: per_layer(lambda p, k=k: p["nc1"][k])
         for k in ("input", "right_singular", "full_layer", "agop_projection")}
  out["nc1"] = {k: dict(zip(("mean", "sd"), _stats(v))) for k, v in nc1.items()}
  # share of the layer's NC1 change (in log) due to S Vᵀ; the rest is U and the ReLU
  total = np.log(nc1["input"] / nc1["full_layer"])
  svt = np.log(nc1["input"] / nc1["right_singular"])
  out["log_change"] = {"svt": dict(zip(("mean", "sd"), _stats(svt))),
                       "relu": dict(zip(("mean", "sd"), _stats(total - svt)))}
  loss = np.array([rr[e].get("train_loss", np.nan) for rr in recs], dtype=float)
  out["train_loss"] = _mean_sd(loss)
  acc = np.array([rr[e].get("test_acc", np.nan) for rr in recs], dtype=float)
  out["test_acc"] = {"mean": float(np.nanmean(acc))}
  return out


def _g(x: float) -> str:
  return f"{x:.4g}"


def summary_markdown(name: str, s: dict) -> str:
  """Markdown tables of a group's summary (Deep RFM or network)."""
  lines = [f"### {name}: {s['group']}", "",
           f"seeds {s['seeds']}; runs: " + ", ".join(f"`{p}`" for p in s["paths"]), ""]
  if "decay" in s:
    lines += ["Mean ± sd over seeds. NC1 = tr Σ_W / tr Σ_B, NC2 = ‖M̄M̄ᵀ − Σ_ETF‖_F "
              "(paper conventions; the authors' code plots NC1/K and NC2²/K²).", "",
              "| layer | NC1 input | NC1 agop | NC1 features | NC2 input | NC2 agop | NC2 features"
              " | Φ ratio | test acc |", "|" + "---|" * 9]
    for i, l in enumerate(s["layers"]):
      cells = [f"{_g(s[m][rep]['mean'][i])} ± {_g(s[m][rep]['sd'][i])}"
               for m in ("nc1",) for rep in REPS]
      cells += [f"{s['nc2'][rep]['mean'][i]:.3g} ± {s['nc2'][rep]['sd'][i]:.2g}" for rep in REPS]
      cells += [f"{s['phi_ratio']['mean'][i]:.3f}", f"{s['test_acc']['mean'][i]:.3f}"]
      lines.append(f"| {l} | " + " | ".join(cells) + " |")
    lines += ["", "Φ ratio = NC1 features / NC1 agop (> 1: the random feature map worsens NC1). "
              f"Final KRR test accuracy {s['final_test_acc']['mean']:.4f} ± "
              f"{s['final_test_acc']['sd']:.4f}.", "",
              "Factor by which NC1 falls per layer (geometric mean over the block, mean ± sd over "
              "seeds; log-linear fit over all layers):", "",
              "| representation | total fall | " + " | ".join(
                  f"layers {b}" for b in s["decay"]["agop"]["blocks"]) + " | fit | fit R² |",
              "|" + "---|" * (len(s["decay"]["agop"]["blocks"]) + 4)]
    for rep in REPS:
      d = s["decay"][rep]
      lines.append(f"| {rep} | {d['total']:.4g}× | " + " | ".join(
          f"{b['mean']:.3f} ± {b['sd']:.3f}" for b in d["blocks"].values())
          + f" | {d['fit_factor_per_layer']:.3f} | {d['fit_r2']:.3f} |")
  else:
    lines += [f"Epoch {s['epoch']} (last measurement common to all seeds); train loss "
              f"{s['train_loss']['mean']:.4g} ± {s['train_loss']['sd']:.2g}; test accuracy "
              f"{s['test_acc']['mean']:.4f}. NFA = Pearson corr(WᵀW, AGOP^½), all layers: "
              f"{s['nfa_all_layers']['mean']:.3f} ± {s['nfa_all_layers']['sd']:.3f}.", "",
              "| layer | NFA | NC1 φ(X) | NC1 φ(X)VSᵀ | NC1 full layer | NC1 AGOP^½ proj. "
              "| log change by SVᵀ | log change by U + ReLU |", "|" + "---|" * 8]
    for i, l in enumerate(s["layers"]):
      n = s["nc1"]
      lines.append(
          f"| {l} | {s['nfa_sqrt_agop']['mean'][i]:.3f} ± {s['nfa_sqrt_agop']['sd'][i]:.3f} | "
          + " | ".join(_g(n[k]["mean"][i]) for k in ("input", "right_singular", "full_layer",
                                                     "agop_projection"))
          + f" | {s['log_change']['svt']['mean'][i]:+.3f} | {s['log_change']['relu']['mean'][i]:+.3f} |")
    lines += ["", "log change = log(NC1 before / NC1 after) (positive: NC1 falls)."]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures


def _pick_gram_layers(available: Iterable[int], wanted: Sequence[int]) -> list[int]:
  available = sorted(available)
  chosen = [l for l in wanted if l in available]
  return chosen or available


def rfm_figures(name: str, runs: Sequence[Run], out, *, formats=("png", "pdf"),
                band_floor: float = BAND_FLOOR, gram_layers=GRAM_LAYERS) -> list[str]:
  """NC1 and NC2 against layer (Figs. 3/4) and the Gram pictures (Figs. 1/5/6) of a group."""
  from dnc_jax.viz import collapse as plots
  out = pathlib.Path(out)
  label = describe(runs)
  depth = min(len(r.metrics["layers"]) for r in runs)
  layers = [r.metrics["layers"][:depth] for r in runs]
  files = []
  for metric in ("nc1", "nc2"):
    files += plots.plot_collapse(layers, metric, out / f"{name}_{metric}.png",
                                 title=f"{metric.upper()} (paper convention)\n{label}",
                                 band_floor=band_floor, formats=formats)
  for rep, stem, sym in (("input", "gram", "$X_l$"), ("agop", "gram_agop", "$X_l M_l^{1/2}$")):
    grams = runs[0].grams(rep)
    if not grams:
      continue
    chosen = _pick_gram_layers(grams, gram_layers)
    k = int(runs[0].config.get("num_classes", 10))
    files += plots.plot_grams({l: grams[l] for l in chosen}, out / f"{name}_{stem}.png",
                              num_classes=k, formats=formats,
                              title=f"Gram matrices of centred, normalised {sym} (seed "
                                    f"{runs[0].seed}); collapse: +1 within, "
                                    f"{-1 / (k - 1):.2f} across\n{label}")
  return files


def nn_figures(name: str, runs: Sequence[Run], out, *, formats=("png", "pdf")) -> list[str]:
  """NC1 decomposition (Figs. 2/7–9) and ratios / NFA / loss (Figs. 10–12) of a group."""
  from dnc_jax.viz import training as train_plots
  label = describe(runs) + (f", mean ± 1 sd over {len(runs)} seeds" if len(runs) > 1 else "")
  return train_plots.plot_run([r.history for r in runs], out, prefix=f"{name}_", title=label,
                              formats=formats, dpi=None)


def plot_compare(groups: dict[str, Sequence[Run]], path, *, metric: str = "nc1",
                 reps: Sequence[str] = ("agop", "features"), band_floor: float = BAND_FLOOR,
                 formats=("png", "pdf")) -> list[str]:
  """One panel: ``metric`` against layer for several Deep RFM groups (e.g. two presets)."""
  from dnc_jax.viz import collapse as plots, style
  plt = style.pyplot()
  fig, ax = plt.subplots(figsize=(5.6, 3.8))
  colours = plt.get_cmap("tab10")(np.arange(len(groups)) % 10)
  styles = {"input": ":", "agop": "--", "features": "-"}
  for (name, runs), c in zip(groups.items(), colours):
    depth = min(len(r.metrics["layers"]) for r in runs)
    x = [rec["layer"] for rec in runs[0].metrics["layers"][:depth]]
    for rep in reps:
      v = np.array([[rec[metric][rep] for rec in r.metrics["layers"][:depth]] for r in runs],
                   dtype=float)
      mean = v.mean(0)
      ax.plot(x, mean, styles[rep], color=c, marker="o", ms=2.5, label=f"{name}: {rep}")
      if len(runs) > 1:
        sd = v.std(0, ddof=1)
        ax.fill_between(x, np.maximum(mean - sd, band_floor * mean), mean + sd, color=c,
                        alpha=0.15, lw=0)
  ax.set_yscale("log")
  ax.set_xlabel("layer $l$")
  ax.xaxis.set_major_locator(plots.integer_ticks())
  ax.set_ylabel(metric.upper() + " (paper convention)")
  n_seeds = sorted({len(r) for r in groups.values()})
  ax.set_title(f"{metric.upper()} against layer, mean ± 1 sd over {'/'.join(map(str, n_seeds))} "
               f"{'seed' if n_seeds == [1] else 'seeds'}\n(lower band edge ≥ {band_floor:g} × mean)")
  ax.grid(True, which="both", alpha=0.3)
  plots.legend_outside(ax, fontsize=7)
  files = plots.save_figure(fig, pathlib.Path(path).with_suffix(".png"), formats)
  plt.close(fig)
  return files


def make_figures(paths: Iterable, out, *, formats=("png", "pdf"), band_floor: float = BAND_FLOOR,
                 gram_layers=GRAM_LAYERS, compare: bool = True) -> dict:
  """Every figure and summary for the runs under ``paths``, written into ``out``.

  Returns ``{"files": [...], "groups": {name: summary}}``; also writes
  ``summary.json`` and ``summary.md`` into ``out``.
  """
  for fmt in formats:
    if fmt not in ("png", "pdf", "svg"):
      raise ConfigError(f"unknown figure format {fmt!r} (png, pdf or svg)")
  if not 0 < band_floor < 1:
    raise ConfigError(f"band floor must be in (0, 1), got {band_floor}")
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  groups = group_runs(find_runs(paths))
  files, summaries, md = [], {}, []
  from dnc_jax.io.runs import check_interrupt
  for name, runs in groups.items():
    check_interrupt()   # between groups: every file written so far is whole
    if runs[0].kind == "deep_rfm":
      files += rfm_figures(name, runs, out, formats=formats, band_floor=band_floor,
                           gram_layers=gram_layers)
      summaries[name] = rfm_summary(runs)
    else:
      files += nn_figures(name, runs, out, formats=formats)
      summaries[name] = nn_summary(runs)
    md.append(summary_markdown(name, summaries[name]))
  rfm_groups = {n: g for n, g in groups.items() if g[0].kind == "deep_rfm"}
  if compare and len(rfm_groups) > 1:
    files += plot_compare(rfm_groups, out / "compare_nc1.png", band_floor=band_floor,
                          formats=formats)
  atomic_write_bytes(out / "summary.json", json.dumps(summaries, indent=1).encode())
  atomic_write_bytes(out / "summary.md", "\n".join(md).encode())
  return {"files": files, "groups": summaries}


FIGURE_STEMS = ("_nc1", "_nc2", "_gram", "_gram_agop", "_nc1_decomposition", "_training")
# What marks an output folder of make_figures (refused as --out without --overwrite).
RUN_FILES = ("summary.md", "summary.json")


def write_figures(paths: Iterable, out, *, overwrite: bool = False, formats=("png", "pdf"),
                  band_floor: float = BAND_FLOOR, gram_layers=GRAM_LAYERS,
                  compare: bool = True) -> dict:
  """:func:`make_figures` into ``out`` under the ``--out`` rules of every command.

  ``out`` is checked first (:func:`dnc_jax.io.runs.check_out`): a folder that
  holds figures already is refused unless ``overwrite``, which first removes
  them (:func:`clear_figures`); a folder made for them and left empty by a
  failure is removed.
  """
  from dnc_jax.io import runs
  runs.check_out(out, overwrite=overwrite, markers=RUN_FILES)
  with runs.removed_if_left_empty(out):
    if overwrite:
      clear_figures(out)
    return make_figures(paths, out, formats=formats, band_floor=band_floor,
                        gram_layers=gram_layers, compare=compare)


def clear_figures(out) -> None:
  """Removes what :func:`make_figures` wrote into ``out`` before (only those files)."""
  out = pathlib.Path(out)
  if not out.is_dir():
    return
  for p in out.iterdir():
    if not p.is_file():
      continue
    if p.name in ("summary.md", "summary.json") or (
        p.suffix in (".png", ".pdf", ".svg")
        and (p.stem == "compare_nc1" or p.stem.endswith(FIGURE_STEMS))):
      p.unlink()
