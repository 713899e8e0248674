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


def _layer(l, nfa, nc1_in, right, full, nc2):
  return {"layer": l, "nfa": {"sqrt_agop": nfa, "agop": nfa, "cosine_sqrt_agop": nfa},
          "nc1": {"input": nc1_in, "right_singular": right, "full_layer": full,
                  "agop_projection": right},
          "tr_w_over_t": 0.1, "tr_b_over_t": 0.9, "nc2": nc2}


def _write_run(root, seed, nfa, acc):
  d = root / f"net_fake_s{seed}"
  d.mkdir(parents=True)
  cfg = {"config": {"model": "mlp", "dataset": "mnist5k", "n": None, "lr": 0.05, "momentum": 0.0,
                    "init": 0.2, "batch_size": 128, "seed": seed},
         "dataset": {"n": 4000}}
  (d / "config.json").write_text(json.dumps(cfg))
  start = {"epoch": 0, "layers": [_layer(l, 0.9, 2.0, 1.9, 1.8, 4.0) for l in (1, 2)]}
  end = {"epoch": 500, "train_acc": acc,
         "layers": [_layer(1, nfa[0], 2.0, 1.0, 0.9, 3.0), _layer(2, nfa[1], 0.9, 0.3, 0.28, 1.0)]}
  (d / "history.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
  base = lambda m: {"epoch": 0, "layers": [{"layer": l, "nfa_baseline": {"mean": m, "sd": 0.01}}
                                           for l in (1, 2)]}
  summ = {"summary": {"epoch": 500, "train_acc": acc, "test_acc": 0.9, "train_loss": 0.01},
          "baseline": [base(0.6), base(0.5)]}
  (d / "summary.json").write_text(json.dumps(summ))


def test_network_tables_from_summaries(tmp_path):
  _write_run(tmp_path, 0, (0.70, 0.80), 1.0)
  _write_run(tmp_path, 1, (0.74, 0.76), 0.995)
  t = report_nets.layer_table(tmp_path, "net_fake")
  row1 = next(l for l in t.splitlines() if l.startswith("| 1 |")).split(" | ")
  vals = np.array([0.70, 0.74])
  assert row1[1] == f"{vals.mean():.3g} ± {vals.std(ddof=1):.2g}"          # NFA at the end
  assert row1[2] == "0.9 ± 0"                                            # NFA at epoch 0
  assert row1[8] == f"{np.log(2.0 / 1.0):.3g} ± 0"                        # log change by SVᵀ
  c = report_nets.claims_table(tmp_path, "net_fake")
  assert "Terminal phase (train accuracy ≥ 0.99 for every seed): reached." in c
  # NFA 0.75 ± 0.04 lies inside 0.74 ± 0.13; NC2 halves at layer 2 (4.0 → 1.0) only.
  rows = {r.split(" | ")[0].lstrip("| "): r for r in c.splitlines() if r.startswith("| ")}
  assert rows["NFA correlation at the end of training 0.74 ± 0.13"].endswith("| reproduced |")
  assert rows["DNC2 progresses only in the last layer"].endswith("| reproduced |")
  t = report_nets.training_table(tmp_path, {"fake": "net_fake"})
  assert "| fake | 500/500 | 1 / 0.995 |" in t and "reached by every seed" in t


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
