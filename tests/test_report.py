"""Generated document tables: the committed docs equal what the committed summaries give,
and the network tables compute what an independent NumPy reading of the summaries gives."""
import json
import pathlib

import numpy as np
import pytest

from dnc_jax.report import tables as report
from dnc_jax.report import nets as report_nets

REPO = pathlib.Path(__file__).resolve().parents[1]
# The documents that quote generated tables (others hold none to check).
DOCS = [p for p in sorted((REPO / "docs").glob("*.md")) if report.block_names(p.read_text())]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_committed_docs_equal_regenerated_tables(doc):
  """Every number inside a generated block is what bin/figures --docs computes from docs/runs."""
  text = doc.read_text()
  stale = report.stale_blocks(text, REPO / "docs" / "runs")
  assert not stale, (f"{doc.name}: blocks {stale} differ from the committed summaries; run "
                     "bin/figures --docs")


def test_reproduction_report_has_network_and_rfm_blocks():
  assert {"reproduction.md", "networks.md", "deep_rfm.md"} <= {p.name for p in DOCS}
  names = report.block_names((REPO / "docs" / "reproduction.md").read_text())
  assert any(n.startswith("nets_") for n in names)
  assert any(n.startswith("rfm_") for n in names)


def test_render_replaces_only_block_bodies(tmp_path):
  calls = []

  @report.table("_test_table")
  def _t(root):
    calls.append(root)
    return "| a |\n|---|\n| 1 |"

  text = "before\n<!-- table:_test_table -->\nold\n<!-- /table:_test_table -->\nafter\n"
  out = report.render(text, tmp_path)
  assert out == ("before\n<!-- table:_test_table -->\n| a |\n|---|\n| 1 |\n"
                 "<!-- /table:_test_table -->\nafter\n")
  assert report.stale_blocks(text, tmp_path) == ["_test_table"]
  assert report.stale_blocks(out, tmp_path) == []
  with pytest.raises(report.ConfigError, match="no table named"):
    report.generate("_no_such_table", tmp_path)


# ------------------------------------------------------------- formatting, by hand
#
# Convention of every "m ± s" the reports quote: m is the mean over seeds, s the
# SAMPLE standard deviation (ddof = 1, divisor n − 1), m to 3 and s to 2 significant
# digits ("%g" formatting).


def test_fmt_by_hand():
  assert report.fmt(None) == "–"
  assert report.fmt(float("nan")) == "nan"
  assert report.fmt(float("inf")) == "inf"
  assert report.fmt(2 / 3) == "0.667"
  assert report.fmt(2 / 3, 4) == "0.6667"
  assert report.fmt(1.0) == "1"
  assert report.fmt(123456.0) == "1.23e+05"
  assert report.fmt(0.000123456) == "0.000123"
  assert report.fmt(-1.5e-7, 2) == "-1.5e-07"
  assert report.fmt(np.float32(0.5)) == "0.5"


def test_round_floats_by_hand():
  """Floats to significant digits at any depth; tuples become lists; the rest untouched."""
  x = {"a": 3.14159265, "b": [1.23456789, (2.0, 7)], "c": "3.14159265", "d": 5, "e": True,
       "f": 0.0, "g": float("nan"), "h": float("inf"), "i": None, "j": -0.000123456789,
       "k": 123456.7, "l": np.float64(1 / 3)}
  got = report.round_floats(x, 5)
  assert got == {"a": 3.1416, "b": [1.2346, [2.0, 7]], "c": "3.14159265", "d": 5, "e": True,
                 "f": 0.0, "g": got["g"], "h": float("inf"), "i": None, "j": -0.00012346,
                 "k": 123460.0, "l": 0.33333}
  assert np.isnan(got["g"])
  assert type(got["d"]) is int and got["e"] is True
  assert report.round_floats(123456.7, 3) == 123000.0
  assert x["a"] == 3.14159265      # the input is not modified


def test_mean_sd_is_sample_sd_by_hand():
  """[1, 2, 4]: mean 7/3, sample sd √(42/9 / 2) = √(7/3) = 1.53 (population sd: 1.25)."""
  assert report.mean_sd([1.0, 2.0, 4.0]) == "2.33 ± 1.5"
  assert report.mean_sd([1.0, 2.0, 4.0], 4) == "2.333 ± 1.5"
  assert np.sqrt(7 / 3) == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
  assert report.mean_sd([0.7, 0.74]) == "0.72 ± 0.028"       # |a − b| / √2, not / 2
  assert report.mean_sd([0.9, 0.9]) == "0.9 ± 0"
  assert report.mean_sd([0.123456]) == "0.123"                 # one value: no sd
  assert report.mean_sd(np.array([10.0, 20.0, 30.0, 40.0])) == "25 ± 13"


def _np_ms(v) -> str:
  """Independent "m ± s": NumPy mean and sample sd, printf formatting."""
  v = np.asarray(v, np.float64)
  return f"{v.mean():.3g} ± {v.std(ddof=1):.2g}"


# --------------------------------------------------------------- network summaries

# Made-up per-(seed, layer) values of three seeds and two head layers.
GOOD = {
    "nfa": [[0.70, 0.80], [0.74, 0.76], [0.71, 0.79]],
    "nfa0": [[0.90, 0.88], [0.91, 0.86], [0.89, 0.87]],
    "input": [[2.0, 0.9], [2.2, 1.0], [1.9, 0.8]],
    "right": [[1.0, 0.3], [1.2, 0.35], [0.9, 0.25]],
    "full": [[0.9, 0.28], [1.1, 0.33], [0.85, 0.24]],
    "proj": [[0.95, 0.29], [1.15, 0.34], [0.88, 0.26]],
    "nc2_0": [[4.0, 4.0], [4.2, 3.8], [3.9, 4.1]],
    "nc2": [[3.0, 1.0], [3.2, 1.2], [2.9, 0.9]],
    "base0": [[0.62, 0.58], [0.61, 0.59], [0.60, 0.57]],
    "base": [[0.52, 0.48], [0.51, 0.49], [0.50, 0.47]],
    "base_sd": [[0.01, 0.012], [0.011, 0.01], [0.009, 0.01]],
    "acc": [1.0, 0.995, 0.999], "test_acc": [0.9, 0.91, 0.89], "loss": [0.011, 0.012, 0.010],
}
# Every Section 6 claim fails: S Vᵀ loses to U + ReLU at layer 2, NFA 0.39 (paper
# 0.74 ± 0.13), NFA − baseline < 3 draw sd, NC2 halves at both layers, train accuracy < 0.99.
BAD = {**GOOD,
       "nfa": [[0.30, 0.40], [0.35, 0.45], [0.50, 0.30]],
       "right": [[1.0, 0.6], [1.2, 0.65], [0.9, 0.55]],
       "full": [[0.9, 0.3], [1.1, 0.33], [0.85, 0.27]],
       "nc2": [[1.0, 1.0], [1.2, 1.2], [0.9, 0.9]],
       "base": [[0.38, 0.38], [0.39, 0.37], [0.38, 0.39]],
       "acc": [0.95, 0.999, 0.98]}


def _write_group(root, group, data):
  """Writes the summaries ``root/<group>_s<seed>`` of ``data`` in the exported format."""
  v = {k: np.asarray(a, np.float64) for k, a in data.items()}
  for seed in range(v["nfa"].shape[0]):
    d = root / f"{group}_s{seed}"
    d.mkdir(parents=True)
    cfg = {"config": {"model": "mlp", "dataset": "mnist5k", "n": None, "lr": 0.05,
                      "momentum": 0.0, "init": 0.2, "batch_size": 128, "seed": seed},
           "dataset": {"n": 4000}}
    (d / "config.json").write_text(json.dumps(cfg))

    def layers(end, seed=seed):
      out = []
      for i in range(v["nfa"].shape[1]):
        get = lambda k: float(v[k][seed, i])
        nfa = get("nfa") if end else get("nfa0")
        out.append({"layer": i + 1,
                    "nfa": {"sqrt_agop": nfa, "agop": nfa - 0.1, "cosine_sqrt_agop": nfa + 0.05},
                    "nc1": ({"input": get("input"), "right_singular": get("right"),
                             "full_layer": get("full"), "agop_projection": get("proj")} if end
                            else {"input": 2.0, "right_singular": 1.9, "full_layer": 1.8,
                                  "agop_projection": 1.9}),
                    "tr_w_over_t": 0.1, "tr_b_over_t": 0.9,
                    "nc2": get("nc2") if end else get("nc2_0")})
      return out

    start = {"epoch": 0, "layers": layers(False)}
    end = {"epoch": 500, "train_acc": float(v["acc"][seed]), "layers": layers(True)}
    (d / "history.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
    base = lambda epoch, k: {"epoch": epoch, "layers": [
        {"layer": i + 1, "nfa_baseline": {"mean": float(v[k][seed, i]),
                                          "sd": float(v["base_sd"][seed, i])}}
        for i in range(v["nfa"].shape[1])]}
    summ = {"summary": {"epoch": 500, "train_acc": float(v["acc"][seed]),
                        "test_acc": float(v["test_acc"][seed]),
                        "train_loss": float(v["loss"][seed])},
            "baseline": [base(0, "base0"), base(500, "base")]}
    (d / "summary.json").write_text(json.dumps(summ))
  return v


def _cells(row):
  return [c.strip() for c in row.strip().strip("|").split("|")]


def test_layer_table_by_hand(tmp_path):
  """Every cell of the per-layer table: mean ± sample sd over seeds of the last probe; the
  log changes are log(NC1 φ(X) / NC1 φ(X)VSᵀ) and log(NC1 φ(X)VSᵀ / NC1 full layer)."""
  v = _write_group(tmp_path, "net_fake", GOOD)
  rows = [l for l in report_nets.layer_table(tmp_path, "net_fake").splitlines()
          if l.startswith("| ") and l[2].isdigit()]
  assert len(rows) == 2
  for i, row in enumerate(rows):
    col = lambda a: a[:, i]
    want = [str(i + 1), _np_ms(col(v["nfa"])), _np_ms(col(v["nfa0"])), _np_ms(col(v["base"])),
            _np_ms(col(v["input"])), _np_ms(col(v["right"])), _np_ms(col(v["full"])),
            _np_ms(col(v["proj"])), _np_ms(np.log(col(v["input"]) / col(v["right"]))),
            _np_ms(np.log(col(v["right"]) / col(v["full"]))), _np_ms(col(v["nc2"]))]
    assert _cells(row) == want


def _claims(root, group):
  text = report_nets.claims_table(root, group)
  rows = [_cells(r) for r in text.splitlines()
          if r.startswith("| ") and not r.startswith("| claim")]
  return text, {r[0]: r[1:] for r in rows}


def _expected_ours(v):
  """The "ours" column of the claims table, from NumPy means over seeds."""
  sv = np.log(v["input"] / v["right"]).mean(0)       # per layer
  relu = np.log(v["right"] / v["full"]).mean(0)
  nfa = v["nfa"].ravel()                               # every layer × seed value
  return {
      "sv": ", ".join(f"{a:.3g} / {b:.3g}" for a, b in zip(sv, relu)),
      "nfa": f"{nfa.mean():.3g} ± {nfa.std(ddof=1):.2g} ({nfa.size} layer × seed values)",
      "base": (f"baseline with random eigenvectors: {v['base0'].mean():.3g} at epoch 0, "
               f"{v['base'].mean():.3g} (draw sd {v['base_sd'].mean():.2g}) at the end; NFA "
               f"{v['nfa0'].mean():.3g} at epoch 0, {nfa.mean():.3g} at the end"),
      "nc2": ", ".join(f"{a:.3g} → {b:.3g}"
                       for a, b in zip(v["nc2_0"].mean(0), v["nc2"].mean(0))),
      "relu": ", ".join(f"{abs(b):.2g}" for b in relu),
  }, sv, relu


CLAIM_SV = "NC1 falls mostly through S Vᵀ, not through U and the ReLU (Figs. 2, 7)"
CLAIM_NFA = "NFA correlation at the end of training 0.74 ± 0.13"
CLAIM_BASE = "NFA far above chance (≈ 0.04 for width-512 matrices)"
CLAIM_NC2 = "DNC2 progresses only in the last layer"
CLAIM_RELU = "the ReLU does not significantly change NC1 (App. A)"


def test_claims_reproduced_by_hand(tmp_path):
  v = _write_group(tmp_path, "net_fake", GOOD)
  ours, sv, relu = _expected_ours(v)
  # The criteria on the made-up numbers, by hand.
  assert np.all(sv > np.abs(relu)) and np.all(np.abs(relu) < 0.25 * sv)
  assert abs(v["nfa"].mean() - 0.74) <= 0.13
  assert v["nfa"].mean() - v["base"].mean() > 3 * v["base_sd"].mean()
  assert list(np.flatnonzero(v["nc2"].mean(0) < 0.5 * v["nc2_0"].mean(0)) + 1) == [2]
  text, rows = _claims(tmp_path, "net_fake")
  assert "Terminal phase (train accuracy ≥ 0.99 for every seed): reached." in text
  assert rows[CLAIM_SV] == ["log change by SVᵀ / by U + ReLU per layer: " + ours["sv"],
                            "SVᵀ's log change > abs(U + ReLU's) at every layer", "reproduced"]
  assert rows[CLAIM_NFA] == [ours["nfa"], "inside the paper's mean ± sd", "reproduced"]
  assert rows[CLAIM_BASE] == [ours["base"], "NFA at the end above the baseline by > 3 draw sd",
                              "reproduced"]
  assert rows[CLAIM_NC2] == ["NC2 of each layer's output, epoch 0 → end: " + ours["nc2"],
                             "NC2 halves only at the last layer", "reproduced"]
  assert rows[CLAIM_RELU] == ["abs(log change by U + ReLU) per layer: " + ours["relu"],
                              "abs(U + ReLU) < ¼ of SVᵀ's log change", "reproduced"]


def test_claims_not_reproduced_by_hand(tmp_path):
  v = _write_group(tmp_path, "net_fake", BAD)
  ours, sv, relu = _expected_ours(v)
  assert list(sv > np.abs(relu)) == [True, False]
  assert list(np.abs(relu) < 0.25 * sv) == [True, False]
  assert abs(v["nfa"].mean() - 0.74) > 0.13
  assert v["nfa"].mean() - v["base"].mean() <= 3 * v["base_sd"].mean()
  assert np.all(v["nc2"].mean(0) < 0.5 * v["nc2_0"].mean(0))
  text, rows = _claims(tmp_path, "net_fake")
  assert ("Terminal phase (train accuracy ≥ 0.99 for every seed): **not reached** "
          "(train accuracy 0.95, 0.999, 0.98).") in text
  assert rows[CLAIM_SV][0] == "log change by SVᵀ / by U + ReLU per layer: " + ours["sv"]
  assert rows[CLAIM_SV][-1] == "at layers 1 of 2"
  assert rows[CLAIM_NFA] == [ours["nfa"], "inside the paper's mean ± sd", "differs"]
  assert rows[CLAIM_BASE][0] == ours["base"]
  assert rows[CLAIM_BASE][-1] == "not above the baseline"
  assert rows[CLAIM_NC2][-1] == "NC2 halves at layers 1, 2"
  assert rows[CLAIM_RELU][0] == "abs(log change by U + ReLU) per layer: " + ours["relu"]
  assert rows[CLAIM_RELU][-1] == "at layers 1 of 2"


def test_training_table_by_hand(tmp_path):
  """Accuracies per seed (4 and 3 digits), loss mean ± sample sd, terminal-phase verdict."""
  good = _write_group(tmp_path, "net_good", GOOD)
  _write_group(tmp_path, "net_bad", BAD)
  t = report_nets.training_table(tmp_path, {"good": "net_good", "bad": "net_bad",
                                            "none": "net_none"})
  rows = {c[0]: c for c in map(_cells, t.splitlines()) if c[0] in ("good", "bad", "none")}
  assert rows["good"] == ["good", "500/500/500", "1 / 0.995 / 0.999", "0.9 / 0.91 / 0.89",
                          _np_ms(good["loss"]), "reached by every seed"]
  assert _np_ms(good["loss"]) == "0.011 ± 0.001"
  assert rows["bad"][2] == "0.95 / 0.999 / 0.98"
  assert rows["bad"][-1] == "reached by 1 of 3 seeds"
  assert rows["none"] == ["none", "–", "–", "–", "–", "no summary yet"]


def test_export_and_docs_commands_end_to_end(tmp_path, monkeypatch):
  """train → bin/figures --export → a document block → bin/figures --docs, on tiny data."""
  from dnc_jax.nets import train
  from dnc_jax.cli import figures as cli
  cfg = train.TrainConfig(model="mlp", dataset="digits", n=200, n_test=50, epochs=2, width=16,
                          depth=2, measure_every=1, progress=False)
  run = tmp_path / "runs" / "net_tiny_s0"
  res = train.train(cfg, out_dir=run)
  assert cli.main([str(run), "--export", str(tmp_path / "docs_runs")]) == 0
  summary = json.loads((tmp_path / "docs_runs" / "net_tiny_s0" / "summary.json").read_text())
  start, end = summary["baseline"]
  assert (start["epoch"], end["epoch"]) == (0, 2)
  # The re-probe of the last checkpoint repeats the run's own last probe.
  last = res.history[-1]["layers"]
  assert len(end["layers"]) == len(last) == 2
  for a, b in zip(end["layers"], last):
    assert a["nfa"]["sqrt_agop"] == pytest.approx(b["nfa"]["sqrt_agop"], rel=1e-4)
    assert -1 <= a["nfa_baseline"]["mean"] <= 1 and a["nfa_baseline"]["draws"] == 20
  monkeypatch.setattr(report_nets, "GROUPS", {"tiny": "net_tiny"})
  doc = tmp_path / "doc.md"
  doc.write_text("x\n<!-- table:nets_training -->\n<!-- /table:nets_training -->\n")
  assert cli.main(["--docs", str(doc), "--runs-root", str(tmp_path / "docs_runs")]) == 0
  text = doc.read_text()
  acc = res.history[-1]["train_acc"]
  assert f"| tiny | 2 | {acc:.4g} |" in text
  assert report.stale_blocks(text, tmp_path / "docs_runs") == []


def test_precision_all_seeds_by_hand():
  """Around each seed: float32 seed s against float64 seed s, band from the two other seeds."""
  from dnc_jax.report import precision
  def run(v):   # one layer; the same value for every metric and representation
    return {m: {r: [v] for r in precision.REPS} for m in ("nc1", "nc2")}
  f64, f32 = [1.00, 1.10, 0.95], [1.02, 1.10, 1.20]
  results = {f"c/float64/s{s}": run(v) for s, v in enumerate(f64)}
  results.update({f"c/float32/s{s}": run(v) for s, v in enumerate(f32)})
  out = precision.all_seeds(results, "c")
  # seed 0: dev 0.02, band max(0.10, 0.05) = 0.10 -> 0.2
  # seed 1: dev 0, band max(0.1/1.1, 0.15/1.1) -> 0
  # seed 2: dev 0.25/0.95, band max(0.05/0.95, 0.15/0.95) -> 0.25/0.15
  per_seed = [0.2, 0.0, 0.25 / 0.15]
  assert out["outside"] == 6                       # seed 2, all six metric/representation pairs
  np.testing.assert_allclose(sorted(set(np.round(out["ratios"], 12))), sorted(per_seed))
  assert out["worst_ratio"] == pytest.approx(0.25 / 0.15)
  del results["c/float32/s2"]
  assert precision.all_seeds(results, "c") is None
