"""bin/figures on tiny Deep RFM and network runs: files, formats, grouping, summaries."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dnc_jax.viz import figures
from dnc_jax.cli import deep_rfm as deep_rfm_cli
from dnc_jax.cli import train_nn as train_nn_cli
from dnc_jax.errors import ConfigError

from conftest import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two seeds of a tiny Deep RFM run and one tiny network run."""
  root = tmp_path_factory.mktemp("runs")
  for seed in (0, 1):
    code = deep_rfm_cli.main(["--dataset", "synthetic", "--n", "100", "--n-test", "40",
                              "--depth", "3", "--width", "32", "--seed", str(seed),
                              "--out", str(root / f"rfm_s{seed}"), "--no-progress"])
    assert code == 0
  code = train_nn_cli.main(["--model", "mlp", "--dataset", "synthetic", "--n", "100",
                            "--n-test", "40", "--batch-size", "50", "--epochs", "1",
                            "--measure-every", "1", "--width", "16", "--depth", "2",
                            "--seed", "0", "--out", str(root / "mlp_s0"), "--no-progress",
                            "--no-plots"])
  assert code == 0
  return root, root / "mlp_s0"


def _check_png(path):
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC, path
  assert len(data) > 5000, path


def _check_pdf(path):
  data = path.read_bytes()
  assert data[:5] == b"%PDF-", path
  assert b"%%EOF" in data[-64:], path


def test_bin_figures_writes_every_figure(runs, tmp_path):
  root, nn = runs
  out = tmp_path / "figs"
  args = [str(root / "rfm_s0"), str(root / "rfm_s1"), str(nn)]
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bin", "figures"), *args,
                         "--out", str(out)], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "rfm: 2 seeds" in proc.stdout
  for stem in ("rfm_nc1", "rfm_nc2", "rfm_gram", "mlp_nc1_decomposition", "mlp_training"):
    _check_png(out / f"{stem}.png")
    _check_pdf(out / f"{stem}.pdf")
  summary = json.loads((out / "summary.json").read_text())
  s = summary["rfm"]
  assert s["seeds"] == [0, 1] and s["layers"] == [1, 2, 3]
  assert len(s["nc1"]["agop"]["mean"]) == 3 and all(v >= 0 for v in s["nc1"]["agop"]["sd"])
  assert s["decay"]["agop"]["total"] > 0
  md = (out / "summary.md").read_text()
  assert "| layer | NC1 input" in md and "paper conventions" in md
  assert summary["mlp"]["layers"] == [1, 2]
  assert -1.0 <= summary["mlp"]["nfa_all_layers"]["mean"] <= 1.0


def test_summary_numbers_match_runs(runs):
  """Per-layer mean and sample sd (ddof = 1) over seeds, the NC1 ratio of Φ to the AGOP
  projection and the total decay, against NumPy on the runs' own metrics.json."""
  root, _ = runs
  rs = figures.find_runs([root / "rfm_s0", root / "rfm_s1"])
  groups = figures.group_runs(rs)
  assert list(groups) == ["rfm"]
  s = figures.rfm_summary(groups["rfm"])
  layers = [json.loads((root / f"rfm_s{k}" / "metrics.json").read_text())["layers"]
            for k in (0, 1)]
  assert s["layers"] == [1, 2, 3]
  for metric in ("nc1", "nc2"):
    for rep in ("input", "agop", "features"):
      v = np.array([[rec[metric][rep] for rec in seed] for seed in layers])   # [seeds, layers]
      np.testing.assert_allclose(s[metric][rep]["mean"], v.mean(0), rtol=1e-12)
      np.testing.assert_allclose(s[metric][rep]["sd"], v.std(0, ddof=1), rtol=1e-9, atol=1e-15)
  nc1 = {rep: np.array([[rec["nc1"][rep] for rec in seed] for seed in layers])
         for rep in ("agop", "features")}
  np.testing.assert_allclose(s["phi_ratio"]["mean"], (nc1["features"] / nc1["agop"]).mean(0),
                             rtol=1e-12)
  assert s["decay"]["agop"]["total"] == pytest.approx(
      np.mean(nc1["agop"][:, 0] / nc1["agop"][:, -1]), rel=1e-12)


def test_compare_and_bad_input(runs, tmp_path):
  root, _ = runs
  # The same seed twice with the same configuration is an error, not a silent average.
  with pytest.raises(ConfigError, match="same seed"):
    figures.group_runs(figures.find_runs([root / "rfm_s0", root / "rfm_s0"]))
  with pytest.raises(ConfigError, match="no run directory"):
    figures.find_runs([tmp_path])
  with pytest.raises(ConfigError, match="format"):
    figures.make_figures([root / "rfm_s0"], tmp_path / "x", formats=("bmp",))
  # Two groups (different seeds in separate "groups" here differ in nothing, so use the
  # comparison function directly) give one comparison figure.
  g = figures.group_runs(figures.find_runs([root / "rfm_s0", root / "rfm_s1"]))
  files = figures.plot_compare({"a": g["rfm"], "b": g["rfm"][:1]}, tmp_path / "cmp.png",
                               formats=("png",))
  _check_png(tmp_path / "cmp.png")
  assert files == [str(tmp_path / "cmp.png")]
