r"""Network run summaries under ``docs/runs/`` and the tables the documents quote.

:func:`export_run` turns a ``bin/train_nn`` run directory into a compact summary:

* ``config.json``: the run's options (machine-specific paths dropped);
* ``history.jsonl``: the probe records of every ``keep_every``-th epoch, of epoch
  0 and of the last probe, and the last epoch's record (floats to 5 significant
  digits);
* ``summary.json``: the run's ``metrics.json`` summary, plus ``baseline``: the
  probes of epoch 0 and of the last checkpoint again, with the NFA baseline of
  random eigenvectors (:func:`dnc_jax.nets.train.probe_saved`).

The summary is itself a run directory that :func:`dnc_jax.viz.figures.load_run`
reads, so ``bin/figures`` draws the training figures from it. The table
functions (registered with :func:`dnc_jax.report.tables.table`) compute every network
number of ``docs/reproduction.md`` and ``docs/networks.md`` from those summaries.

Usage::

    python -m dnc_jax.report.nets export runs/paper/NAME docs/runs/NAME
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np

from dnc_jax.report import tables as report
from dnc_jax.errors import DataError

_DATASET_DROP = ("files", "data_dir", "cache", "seconds_read", "tfds_order")
TERMINAL_ACC = 0.99
# The paper's numbers (Section 6).
PAPER_NFA = {"mlp": (0.74, 0.13), "resnet18": (0.74, 0.17)}
PAPER_CHANCE = 0.04


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read {path}: {e}; is it a finished bin/train_nn run?") from e


def export_run(run_dir, dest, *, keep_every: int = 50, baseline_draws: int = 20) -> pathlib.Path:
  """Writes the compact summary of the network run in ``run_dir`` into ``dest``.

  Args:
    run_dir: a finished ``bin/train_nn`` run (``config.json``, ``history.jsonl``,
      ``metrics.json``, ``checkpoints/``).
    dest: folder to write (created; its three files replaced).
    keep_every: keep the probe records of epochs divisible by this.
    baseline_draws: draws of the NFA baseline at epoch 0 and at the end.

  Returns:
    ``dest`` as a path.
  """
  from dnc_jax.io import runs as runs_lib
  from dnc_jax.nets import train as train_lib
  run_dir, dest = pathlib.Path(run_dir), pathlib.Path(dest)
  config = _read_json(run_dir / "config.json")
  metrics = _read_json(run_dir / "metrics.json")
  history = train_lib.read_history(run_dir / "history.jsonl")
  if not history:
    raise DataError(f"{run_dir}/history.jsonl is empty; the run has not started")
  config["dataset"] = {k: v for k, v in config.get("dataset", {}).items() if k not in _DATASET_DROP}
  probed = [r for r in history if "layers" in r]
  keep = {0, probed[-1]["epoch"] if probed else 0}
  lines = [r for r in history
           if ("layers" in r and (r["epoch"] in keep or r["epoch"] % keep_every == 0))
           or r is history[-1]]
  baseline = [train_lib.probe_saved(run_dir, epoch=e, baseline_draws=baseline_draws)
              for e in (0, None)]
  summary = {**metrics, "baseline": baseline}
  runs_lib.atomic_write_bytes(dest / "config.json",
                              (json.dumps(config, indent=1) + "\n").encode())
  runs_lib.atomic_write_bytes(
      dest / "history.jsonl",
      "".join(json.dumps(report.round_floats(r, 5), separators=(",", ":")) + "\n" for r in lines).encode())
  runs_lib.atomic_write_bytes(dest / "summary.json",
                              (json.dumps(report.round_floats(summary, 5), indent=1) + "\n").encode())
  return dest


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 3 or argv[0] != "export":
    print("usage: python -m dnc_jax.report.nets export RUN_DIR DEST", file=sys.stderr)
    return 2
  print(export_run(argv[1], argv[2]))
  return 0


# ----------------------------------------------------------------------------- reading


def load_group(root, group: str) -> list[dict]:
  """The summaries ``root/<group>_s<seed>``: ``{"name", "seed", "config", "history", "summary"}``."""
  root = pathlib.Path(root)
  out = []
  for p in sorted(root.glob(f"{group}_s*")):
    seed = p.name[len(group) + 2:]
    if not seed.isdigit() or not (p / "summary.json").exists():
      continue
    history = [json.loads(l) for l in (p / "history.jsonl").read_text().splitlines() if l]
    out.append({"name": p.name, "seed": int(seed), "config": _read_json(p / "config.json"),
                "history": history, "summary": _read_json(p / "summary.json")})
  return sorted(out, key=lambda r: r["seed"])


def final_probe(run: dict) -> dict:
  """The last probe record (``{"epoch", "layers", ...}``) of a run summary."""
  return [r for r in run["history"] if "layers" in r][-1]


def first_probe(run: dict) -> dict:
  return [r for r in run["history"] if "layers" in r][0]


def baseline(run: dict, which: str) -> dict:
  """The re-probe with NFA baseline at ``"start"`` (epoch 0) or ``"end"``."""
  return run["summary"]["baseline"][0 if which == "start" else -1]


def _layers(run: dict) -> list[int]:
  return [l["layer"] for l in final_probe(run)["layers"]]


def _per_layer(runs, get) -> dict[int, list[float]]:
  """``{layer: [get(layer record, run) for each run]}`` at each run's last probe."""
  out: dict[int, list[float]] = {}
  for run in runs:
    for rec in final_probe(run)["layers"]:
      out.setdefault(rec["layer"], []).append(float(get(rec, run)))
  return out


def _share(rec: dict) -> tuple[float, float]:
  c = rec["nc1"]
  return (math.log(c["input"] / c["right_singular"]),
          math.log(c["right_singular"] / c["full_layer"]))


def _ms(vals, digits=3) -> str:
  return report.mean_sd(vals, digits)


def describe(runs) -> str:
  """One line: model, data, size, epochs, seeds, and the summaries' folder names."""
  c = runs[0]["config"]["config"]
  ds = runs[0]["config"].get("dataset", {})
  n = ds.get("n", c.get("n"))
  name = c["dataset"] + (" (5,000-digit subset of MNIST)" if c["dataset"] == "mnist5k" else "")
  epochs = sorted({final_probe(r)["epoch"] for r in runs})
  return (f"{c['model']}, {name}, n = {n} training points, lr {c['lr']:g}, momentum "
          f"{c['momentum']:g}, init {c['init']:g}, batch {c['batch_size']}, last probe at epoch "
          f"{'/'.join(map(str, epochs))}, seeds {', '.join(str(r['seed']) for r in runs)} "
          f"(`docs/runs/{runs[0]['name'][:-3]}_s*`)")


def _missing(group: str) -> str:
  return (f"_No committed summary `docs/runs/{group}_s*` yet; `bench/paper_networks.sh` "
          "makes the runs and `python -m dnc_jax.report.nets export` the summaries._\n")


# ----------------------------------------------------------------------------- tables


def training_table(root, groups: dict[str, str]) -> str:
  """Per run group: epochs, final train / test accuracy, whether the terminal phase was reached."""
  lines = ["| runs | epochs | train accuracy | test accuracy | train loss | terminal phase (train acc ≥ 0.99) |",
           "|---|---|---|---|---|---|"]
  for label, group in groups.items():
    runs = load_group(root, group)
    if not runs:
      lines.append(f"| {label} | – | – | – | – | no summary yet |")
      continue
    s = [r["summary"]["summary"] for r in runs]
    reached = [x["train_acc"] >= TERMINAL_ACC for x in s]
    verdict = ("reached by every seed" if all(reached) else
               "not reached by any seed" if not any(reached) else
               f"reached by {sum(reached)} of {len(runs)} seeds")
    lines.append(f"| {label} | {'/'.join(str(x['epoch']) for x in s)} | "
                 f"{' / '.join(report.fmt(x['train_acc'], 4) for x in s)} | "
                 f"{' / '.join(report.fmt(x['test_acc'], 3) for x in s)} | "
                 f"{_ms([x['train_loss'] for x in s])} | {verdict} |")
  lines.append("")
  lines.append("One value per seed (seeds in order), accuracy of argmax of the outputs; train loss = "
               "MSE on ±1 targets averaged over all N·K entries, mean ± sd over seeds.")
  return "\n".join(lines) + "\n"


def layer_table(root, group: str) -> str:
  """NFA and the NC1 decomposition per head layer at the last probe (mean ± sd over seeds)."""
  runs = load_group(root, group)
  if not runs:
    return _missing(group)
  nfa = _per_layer(runs, lambda r, _: r["nfa"]["sqrt_agop"])
  nfa0 = {}
  for run in runs:
    for rec in first_probe(run)["layers"]:
      nfa0.setdefault(rec["layer"], []).append(rec["nfa"]["sqrt_agop"])
  base = {}
  for run in runs:
    for rec in baseline(run, "end")["layers"]:
      base.setdefault(rec["layer"], []).append(rec["nfa_baseline"]["mean"])
  parts = {k: _per_layer(runs, lambda r, _, k=k: r["nc1"][k])
           for k in ("input", "right_singular", "full_layer", "agop_projection")}
  sv = _per_layer(runs, lambda r, _: _share(r)[0])
  relu = _per_layer(runs, lambda r, _: _share(r)[1])
  nc2 = _per_layer(runs, lambda r, _: r["nc2"])
  lines = [describe(runs) + "; mean ± sd over seeds.", "",
           "| layer | NFA, end | NFA, epoch 0 | baseline, end | NC1 φ(X) | NC1 φ(X)VSᵀ | NC1 full layer "
           "| NC1 AGOP^½ proj. | log change by SVᵀ | log change by U + ReLU | NC2 of output |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for l in _layers(runs[0]):
    lines.append(
        f"| {l} | {_ms(nfa[l])} | {_ms(nfa0[l])} | {_ms(base[l])} | {_ms(parts['input'][l])} | "
        f"{_ms(parts['right_singular'][l])} | {_ms(parts['full_layer'][l])} | "
        f"{_ms(parts['agop_projection'][l])} | {_ms(sv[l])} | {_ms(relu[l])} | {_ms(nc2[l])} |")
  lines += ["", "NFA = Pearson correlation of the entries of WᵀW and AGOP^½ (paper convention); "
            "baseline = the same correlation with both matrices' eigenvectors replaced by "
            "Haar-random ones (spectra kept; mean over 20 draws, then over seeds); NC1 = "
            "tr Σ_W / tr Σ_B (paper convention, sample global mean); log change = "
            "log(NC1 before / NC1 after) (positive: NC1 falls)."]
  return "\n".join(lines) + "\n"


def _group_stats(runs) -> dict:
  nfa_all = [rec["nfa"]["sqrt_agop"] for run in runs for rec in final_probe(run)["layers"]]
  nfa0_all = [rec["nfa"]["sqrt_agop"] for run in runs for rec in first_probe(run)["layers"]]
  base_end = [rec["nfa_baseline"]["mean"] for run in runs for rec in baseline(run, "end")["layers"]]
  base_start = [rec["nfa_baseline"]["mean"] for run in runs
                for rec in baseline(run, "start")["layers"]]
  base_sd = [rec["nfa_baseline"]["sd"] for run in runs for rec in baseline(run, "end")["layers"]]
  sv = [_share(rec)[0] for run in runs for rec in final_probe(run)["layers"]]
  relu = [_share(rec)[1] for run in runs for rec in final_probe(run)["layers"]]
  by_layer_sv = _per_layer(runs, lambda r, _: _share(r)[0])
  by_layer_relu = _per_layer(runs, lambda r, _: _share(r)[1])
  nc2_end = _per_layer(runs, lambda r, _: r["nc2"])
  nc2_start = {}
  for run in runs:
    for rec in first_probe(run)["layers"]:
      nc2_start.setdefault(rec["layer"], []).append(rec["nc2"])
  return {"nfa": nfa_all, "nfa0": nfa0_all, "base_end": base_end, "base_start": base_start,
          "base_sd": base_sd, "sv": sv, "relu": relu, "by_layer_sv": by_layer_sv,
          "by_layer_relu": by_layer_relu, "nc2_end": nc2_end, "nc2_start": nc2_start,
          "train_acc": [r["summary"]["summary"]["train_acc"] for r in runs]}


def claims_table(root, group: str, *, model: str = "mlp") -> str:
  """The paper's Section 6 claims, each with our numbers, an explicit criterion and a verdict."""
  runs = load_group(root, group)
  if not runs:
    return _missing(group)
  s = _group_stats(runs)
  layers = sorted(s["by_layer_sv"])
  sv_mean = {l: float(np.mean(s["by_layer_sv"][l])) for l in layers}
  relu_mean = {l: float(np.mean(s["by_layer_relu"][l])) for l in layers}
  nfa_m, nfa_sd = float(np.mean(s["nfa"])), float(np.std(s["nfa"], ddof=1))
  p_m, p_sd = PAPER_NFA.get(model, PAPER_NFA["mlp"])
  base_m = float(np.mean(s["base_end"]))
  base_sd = float(np.mean(s["base_sd"]))
  nc2_s = {l: float(np.mean(s["nc2_start"][l])) for l in layers}
  nc2_e = {l: float(np.mean(s["nc2_end"][l])) for l in layers}
  terminal = all(a >= TERMINAL_ACC for a in s["train_acc"])
  rows = []
  sv_wins = [l for l in layers if sv_mean[l] > abs(relu_mean[l])]
  rows.append((
      "NC1 falls mostly through S Vᵀ, not through U and the ReLU (Figs. 2, 7)",
      "log change by SVᵀ / by U + ReLU per layer: " + ", ".join(
          f"{report.fmt(sv_mean[l], 3)} / {report.fmt(relu_mean[l], 3)}" for l in layers),
      "SVᵀ's log change > abs(U + ReLU's) at every layer",
      "reproduced" if len(sv_wins) == len(layers) else
      f"at layers {', '.join(map(str, sv_wins)) or 'none'} of {len(layers)}"))
  rows.append((
      f"NFA correlation at the end of training {p_m} ± {p_sd}",
      f"{report.fmt(nfa_m, 3)} ± {report.fmt(nfa_sd, 2)} ({len(s['nfa'])} layer × seed values)",
      "inside the paper's mean ± sd",
      "reproduced" if abs(nfa_m - p_m) <= p_sd else "differs"))
  rows.append((
      f"NFA far above chance (≈ {PAPER_CHANCE} for width-512 matrices)",
      f"baseline with random eigenvectors: {report.fmt(float(np.mean(s['base_start'])), 3)} at "
      f"epoch 0, {report.fmt(base_m, 3)} (draw sd {report.fmt(base_sd, 2)}) at the end; NFA "
      f"{report.fmt(float(np.mean(s['nfa0'])), 3)} at epoch 0, {report.fmt(nfa_m, 3)} at the end",
      "NFA at the end above the baseline by > 3 draw sd",
      "reproduced" if nfa_m - base_m > 3 * base_sd else "not above the baseline"))
  rel = [l for l in layers if nc2_e[l] < 0.5 * nc2_s[l]]
  rows.append((
      "DNC2 progresses only in the last layer",
      "NC2 of each layer's output, epoch 0 → end: " + ", ".join(
          f"{report.fmt(nc2_s[l], 3)} → {report.fmt(nc2_e[l], 3)}" for l in layers),
      "NC2 halves only at the last layer",
      "reproduced" if rel == [layers[-1]] else
      f"NC2 halves at layers {', '.join(map(str, rel)) or 'none'}"))
  relu_small = [l for l in layers if abs(relu_mean[l]) < 0.25 * max(sv_mean[l], 1e-12)]
  rows.append((
      "the ReLU does not significantly change NC1 (App. A)",
      "abs(log change by U + ReLU) per layer: " + ", ".join(
          report.fmt(abs(relu_mean[l]), 2) for l in layers),
      "abs(U + ReLU) < ¼ of SVᵀ's log change",
      "reproduced" if len(relu_small) == len(layers) else
      f"at layers {', '.join(map(str, relu_small)) or 'none'} of {len(layers)}"))
  head = [describe(runs) + ". Terminal phase (train accuracy ≥ 0.99 for every seed): "
          + ("reached." if terminal else "**not reached** "
             f"(train accuracy {', '.join(report.fmt(a, 3) for a in s['train_acc'])})."), "",
          "| claim (paper, Section 6) | ours | criterion | verdict |", "|---|---|---|---|"]
  return "\n".join(head + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]) + "\n"


GROUPS = {
    "MLP, mnist5k (4,000 training points)": "net_mlp_mnist5k",
    "MLP, Fashion-MNIST (first 10,000)": "net_mlp_fm10k",
    "ResNet-18 + MLP head, Fashion-MNIST (first 500), 10 epochs": "net_resnet18_fm500",
    "VGG-11 + MLP head, Fashion-MNIST (first 500), 10 epochs": "net_vgg11_fm500",
}


@report.table("nets_training")
def table_training(root) -> str:
  return training_table(root, GROUPS)


@report.table("nets_mlp_mnist5k")
def table_mlp_mnist5k(root) -> str:
  return layer_table(root, "net_mlp_mnist5k")


@report.table("nets_mlp_fm10k")
def table_mlp_fm10k(root) -> str:
  return layer_table(root, "net_mlp_fm10k")


@report.table("nets_vgg11_fm500")
def table_vgg(root) -> str:
  return layer_table(root, "net_vgg11_fm500")


@report.table("nets_resnet18_fm500")
def table_resnet(root) -> str:
  return layer_table(root, "net_resnet18_fm500")


@report.table("nets_claims_mnist5k")
def table_claims_mnist5k(root) -> str:
  return claims_table(root, "net_mlp_mnist5k")


@report.table("nets_claims_fm10k")
def table_claims_fm10k(root) -> str:
  return claims_table(root, "net_mlp_fm10k")


if __name__ == "__main__":
  sys.exit(main())
