"""The Deep RFM summaries committed under docs/runs against the SPEC's reference numbers,
and the summary format."""
import json
import pathlib

import numpy as np
import pytest

from dnc_jax.report import rfm as report_rfm

RUNS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "runs"


def _summaries(group):
  runs = report_rfm.load_group(RUNS, group)
  assert runs, f"no committed summaries docs/runs/{group}_s*"
  return runs


def test_committed_layer1_matches_spec():
  """SPEC §3, Fashion-MNIST n = 2000, layer 1 (no randomness): the authors' four numbers."""
  spec = {("nc1", "input"): 1.7629, ("nc1", "agop"): 0.5219, ("nc2", "input"): 4.3178,
          ("nc2", "agop"): 3.3305}
  for run in _summaries("rfm_fm2000_reference"):
    rec = run["metrics"]["layers"][0]
    for (m, rep), want in spec.items():
      assert rec[m][rep] == pytest.approx(want, rel=2e-4), (run["name"], m, rep)


def test_committed_layer10_matches_spec():
  """SPEC §3: the authors' NC1 of Φ at layer 10 = 0.00062 (NC1 / K), seed spread ±15 %.

  A fresh run takes minutes on a CPU: bench/spec_layer10.py makes and checks one.
  """
  runs = _summaries("rfm_fm2000_reference")
  assert len(runs) == 3
  vals = [r["metrics"]["layers"][9]["nc1"]["features"] / 10 for r in runs]
  assert abs(np.mean(vals) / 0.00062 - 1) <= 0.15
  for r in runs:
    c = r["config"]
    assert (c["run"]["dataset"], c["n"], c["deep_rfm"]["preset"], c["deep_rfm"]["features"]) == \
        ("fashion_mnist", 2000, "reference", "relu")


def test_gram_block_means_of_an_etf():
  """Collapsed data on a simplex ETF: +1 within a class, -1/(K-1) across."""
  k, per = 4, 3
  means = np.eye(k) - 1.0 / k                  # centred simplex, rows of equal norm
  x = np.repeat(means, per, axis=0)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  labels = np.repeat(np.arange(k), per)
  b = report_rfm.gram_block_means(x @ x.T, labels)
  assert b["within"] == pytest.approx(1.0) and b["across"] == pytest.approx(-1 / (k - 1))


def test_every_summary_is_compact():
  """Summaries hold no arrays: each run folder stays small."""
  folders = sorted(RUNS.glob("rfm_*"))
  assert len(folders) >= 3
  for p in folders:
    files = list(p.iterdir())
    assert files, p
    for f in files:
      assert f.suffix == ".json" and f.stat().st_size < 40_000, f
      json.loads(f.read_text())


def test_collapsed_nc2_of_imbalanced_classes():
  """NC2 of an ETF measured about the weighted (sample) global mean, by direct computation."""
  k = 10
  etf = k / (k - 1) * np.eye(k) - 1 / (k - 1)
  assert report_rfm.collapsed_nc2([7] * k) == pytest.approx(0.0, abs=1e-12)
  counts = np.array([135, 378, 289, 232, 204, 188, 156, 153, 138, 127])
  means = np.eye(k) - 1 / k                            # an ETF centred at the origin
  x = np.repeat(means, counts, axis=0)                 # every point at its class mean
  centred = means - x.mean(0)                          # about the sample global mean
  centred /= np.linalg.norm(centred, axis=1, keepdims=True)
  want = np.linalg.norm(centred @ centred.T - etf)
  assert report_rfm.collapsed_nc2(counts) == pytest.approx(want, rel=1e-12)
  assert want > 0.5


def test_tables_quote_what_bin_figures_computes():
  """Every per-layer mean in a Deep RFM table is bin/figures' mean over the same summaries."""
  from dnc_jax.viz import figures
  runs = _summaries("rfm_fm2000_reference")
  fig = figures.rfm_summary(figures.find_runs([RUNS / r["name"] for r in runs]))
  table = report_rfm.layer_table(RUNS, "rfm_fm2000_reference")
  rows = [l for l in table.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert len(rows) == len(fig["layers"]) >= 5
  for row, i in zip(rows, range(len(rows))):
    cells = [c.strip() for c in row.strip("|").split("|")]
    for j, (m, rep) in enumerate([(m, r) for m in ("nc1", "nc2") for r in report_rfm.REPS]):
      mean = float(cells[1 + j].split(" ± ")[0])
      assert mean == pytest.approx(fig[m][rep]["mean"][i], rel=6e-3), (i, m, rep)
  # and one cell against NumPy directly: mean and sample sd (ddof = 1) over the seeds
  v = np.array([r["metrics"]["layers"][4]["nc1"]["agop"] for r in runs])
  assert rows[4].split("|")[3].strip() == f"{v.mean():.3g} ± {v.std(ddof=1):.2g}"


def test_agop_gram_picture_is_x_times_sqrt_m(key):
  """The recorded Gram picture of X̃_1 = X_1 M_1^½, rebuilt in float64 NumPy from M_1."""
  from dnc_jax.rfm import driver as drfm
  rng = np.random.default_rng(0)
  k, per, d = 3, 8, 6
  labels = np.repeat(np.arange(k), per)
  x = (rng.normal(size=(k, d))[labels] + 0.5 * rng.normal(size=(k * per, d))).astype(np.float32)
  cfg = drfm.preset_config("reference", depth=1, width=16, keep_m=True, gram_layers=(1,),
                           gram_per_class=5)
  res = drfm.deep_rfm(x, labels, cfg, key=key)
  g, gl = res.grams_agop[1]
  x64 = x.astype(np.float64)
  x64 /= np.linalg.norm(x64, axis=1, keepdims=True)
  w, v = np.linalg.eigh(np.asarray(res.ms[0], np.float64))
  xa = x64 @ (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  xa -= xa.mean(0)                                   # centred by the mean of all rows
  pick = np.concatenate([np.flatnonzero(labels == c)[:5] for c in range(k)])
  xs = xa[pick] / np.linalg.norm(xa[pick], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(g), xs @ xs.T, atol=2e-4)
  np.testing.assert_array_equal(gl, labels[pick])


def test_export_command_writes_a_compact_summary(tmp_path):
  """`python -m dnc_jax.report.rfm export RUN DEST`, the command bench/rfm_queue.sh runs."""
  import json
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  src = repo / "docs" / "runs" / "rfm_digits_s0"
  proc = subprocess.run([sys.executable, "-m", "dnc_jax.report.rfm", "export", str(src),
                         str(tmp_path / "out")], cwd=repo, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  got = json.loads((tmp_path / "out" / "metrics.json").read_text())
  want = json.loads((src / "metrics.json").read_text())
  assert [r["nc1"] for r in got["layers"]] == [r["nc1"] for r in want["layers"]]
