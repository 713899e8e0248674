"""bin/deep_rfm: files written, metrics.json shape, and bad input (nothing half-written)."""
import json
import os
import subprocess
import sys

import pytest

from dnc_jax.cli import deep_rfm as cli

from conftest import FASHION_FIXTURE, REPO


def _run(argv, capsys):
  code = cli.main(argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_run_writes_directory(tmp_path, capsys):
  out = tmp_path / "run"
  code, stdout, _ = _run(["--n", "300", "--n-test", "60", "--depth", "3", "--width", "64",
                          "--out", str(out), "--no-progress"], capsys)
  assert code == 0, stdout
  for name in ("config.json", "metrics.json", "metrics.csv", "nc1.png", "nc2.png", "gram.png"):
    assert (out / name).stat().st_size > 0, name
  metrics = json.loads((out / "metrics.json").read_text())
  assert set(metrics) >= {"config", "conventions", "layers", "final"}
  assert [l["layer"] for l in metrics["layers"]] == [1, 2, 3]
  for rec in metrics["layers"]:
    assert set(rec["nc1"]) == set(rec["nc2"]) == {"input", "agop", "features"}
    assert 0.0 <= rec["train_acc"] <= 1.0 and 0.0 <= rec["test_acc"] <= 1.0
    assert rec["seconds"] > 0
    # 300 rows, 60 test rows, d -> 64 features, K = 10, the closed-form AGOP (SPEC §3
    # operation counts: distances with 2K class columns, Cholesky and predictions, the
    # Jacobian sums with K class columns, class-mean terms, JᵀJ, eigh + product, features)
    assert rec["agop"] == "closed_form"
    d = rec["dim_in"]
    assert rec["gflop"] == pytest.approx(
        (2 * 300**2 * (d + 20) + 2 * 60 * 300 * (d + 20) + 300**3 / 3
         + 4 * 300**2 * 10 + 2 * 60 * 300 * 10
         + 2 * 300**2 * 10 * (d + 10) + 2 * 300 * 10**2 * d + 2 * 300 * 10 * d**2
         + 11 * d**3 + 2 * 360 * d**2 + 2 * 360 * d * 64) / 1e9)
  mem = metrics["memory"]
  assert mem["peak_host_bytes"] > 0 and mem["budget_bytes"] > mem["estimate_bytes"] > 300**2 * 4
  assert "tr(Sigma_W)/tr(Sigma_B)" in metrics["conventions"]["nc1"]
  assert metrics["config"]["deep_rfm"]["preset"] == "reference"
  assert metrics["config"]["dataset"]["counts_train"]
  lines = (out / "metrics.csv").read_text().splitlines()
  assert len(lines) == 4 and lines[0].startswith("layer,")
  assert "NC1 (paper convention" in stdout
  # A second run into the same directory is refused ...
  code, _, err = _run(["--depth", "1", "--out", str(out), "--no-progress"], capsys)
  assert code == 2 and "already holds a run" in err and "--overwrite" in err
  # ... unless asked.
  code, _, _ = _run(["--n", "200", "--n-test", "40", "--depth", "1", "--width", "32",
                     "--out", str(out), "--overwrite", "--no-progress"], capsys)
  assert code == 0
  assert len(json.loads((out / "metrics.json").read_text())["layers"]) == 1


def test_fashion_fixture_reference_preset(tmp_path, capsys):
  out = tmp_path / "fm"
  code, _, err = _run(["--dataset", "fashion_mnist", "--data-dir", FASHION_FIXTURE, "--n", "300",
                       "--n-test", "50", "--depth", "2", "--width", "64", "--features", "cos",
                       "--preset", "paper", "--out", str(out), "--no-progress"], capsys)
  assert code == 0, err
  cfg = json.loads((out / "config.json").read_text())
  assert cfg["deep_rfm"]["ridge"] == 0.0 and cfg["deep_rfm"]["features"] == "cos"


@pytest.mark.parametrize("argv, match", [
    (["--data-dir", "/nonexistent/dir", "--dataset", "fashion_mnist"], "/nonexistent/dir"),
    (["--n", "100000"], "1500"),
    (["--bandwidth", "0"], "bandwidth must be a positive"),
    (["--bandwidth", "-1"], "bandwidth must be a positive"),
    (["--depth", "0"], "depth must be an integer ≥ 1"),
    (["--ridge", "-1"], "ridge must be"),
    (["--memory-gb", "0.001"], "--memory-gb"),
    (["--memory-gb", "-2"], "memory_gb must be > 0"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, argv, match):
  out = tmp_path / "bad"
  code, _, err = _run(argv + ["--out", str(out), "--no-progress"], capsys)
  assert code == 2
  assert "deep_rfm: error:" in err and match in err
  assert not out.exists() or not any(out.iterdir())


def test_singular_ridgeless_solve_writes_nothing(tmp_path, capsys):
  # With an enormous bandwidth every kernel entry is 1: a singular ridgeless system.
  code, _, err = _run(["--dataset", "synthetic", "--n", "60", "--n-test", "10", "--depth", "1",
                       "--preset", "paper", "--bandwidth", "1e30", "--out", str(tmp_path / "s2"),
                       "--no-progress"], capsys)
  assert code == 2 and "singular" in err and "--ridge" in err
  assert not (tmp_path / "s2" / "metrics.json").exists()
  assert not (tmp_path / "s2" / "config.json").exists()


def test_unknown_dataset_and_help():
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bin", "deep_rfm"), "--dataset",
                         "imagenet"], capture_output=True, text=True)
  assert proc.returncode == 2 and "invalid choice: 'imagenet'" in proc.stderr
  assert "digits" in proc.stderr
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bin", "deep_rfm"), "--help"],
                        capture_output=True, text=True)
  assert proc.returncode == 0
  for flag in ("--dataset", "--data-dir", "--n", "--n-test", "--depth", "--kernel", "--bandwidth",
               "--ridge", "--features", "--width", "--sigma", "--preset", "--seed", "--x64", "--out"):
    assert flag in proc.stdout


def test_import_is_light():
  code = ("import sys, dnc_jax; bad = [m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow_datasets', 'matplotlib', 'tensorflow')]; print(bad); sys.exit(bool(bad))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cg_solver_and_devices(tmp_path, capsys):
  base = ["--dataset", "synthetic", "--n", "120", "--n-test", "20", "--depth", "2", "--width", "32",
          "--no-progress"]
  code, _, err = _run(base + ["--out", str(tmp_path / "chol")], capsys)
  assert code == 0, err
  code, _, err = _run(base + ["--solver", "cg", "--cg-tol", "1e-6", "--out", str(tmp_path / "cg")],
                      capsys)
  assert code == 0, err
  a = json.loads((tmp_path / "chol" / "metrics.json").read_text())["layers"]
  b = json.loads((tmp_path / "cg" / "metrics.json").read_text())["layers"]
  for ra, rb in zip(a, b):
    for rep in ("input", "agop", "features"):
      assert abs(ra["nc1"][rep] / rb["nc1"][rep] - 1) < 0.01
  code, _, err = _run(base + ["--devices", "64", "--out", str(tmp_path / "many")], capsys)
  assert code == 2 and "xla_force_host_platform_device_count" in err


def test_auto_precision_is_float32_with_a_ridge_and_float64_ridgeless(tmp_path):
  """The default arithmetic follows the measured rule of docs/numerics.md."""
  run_cfg, _ = cli.parse(["--out", str(tmp_path / "a")])
  assert (run_cfg.precision, run_cfg.x64) == ("float32", False)
  run_cfg, _ = cli.parse(["--out", str(tmp_path / "b"), "--preset", "paper"])
  assert (run_cfg.precision, run_cfg.x64) == ("float64", True)
  run_cfg, _ = cli.parse(["--out", str(tmp_path / "c"), "--ridge", "0"])
  assert run_cfg.x64
  run_cfg, _ = cli.parse(["--out", str(tmp_path / "d"), "--preset", "paper", "--precision",
                          "float32"])
  assert not run_cfg.x64


def test_figures_drawn_during_final_krr_and_only_kept_on_success(tmp_path, capsys, monkeypatch):
  """The figures are drawn in a thread while the final KRR runs, from the last layer's
  state (its Gram pictures include the final representation's); they reach the
  folder only when the run succeeds, and equal what the main thread draws."""
  import threading
  import numpy as np
  import pathlib
  from dnc_jax.rfm import driver, experiment, krr
  from dnc_jax.viz import collapse as plots
  seen = []
  final = driver.OneDevice.final

  def watched(self, *args, **kwargs):
    seen.append(sorted(t.name for t in threading.enumerate()))
    return final(self, *args, **kwargs)

  monkeypatch.setattr(driver.OneDevice, "final", watched)
  argv = ["--n", "200", "--n-test", "40", "--depth", "2", "--width", "32", "--no-progress"]
  out = tmp_path / "ok"
  assert _run(argv + ["--out", str(out)], capsys)[0] == 0
  assert "draw-figures" in seen[0]
  drawn = {name: (out / name).read_bytes() for name in ("nc1.png", "nc2.png", "gram.png")}
  # Drawn again in the main thread from the result: the same pictures.
  metrics = json.loads((out / "metrics.json").read_text())
  g = np.load(out / "grams.npz")
  grams = {int(k.split("_")[1]): (g[k], g[f"labels_{k.split('_')[1]}"])
           for k in g.files if k.startswith("layer_")}
  assert sorted(grams) == [1, 3]          # gram layers 1 and depth + 1
  again = {}
  plots.plot_collapse([metrics["layers"]], "nc1", out / "nc1", into=again)
  assert again[str(out / "nc1.png")] == drawn["nc1.png"]

  def fail(self, *args, **kwargs):
    raise krr.solve_error(0.0, 200, "final KRR", dtype=np.float32)

  monkeypatch.setattr(driver.OneDevice, "final", fail)
  draws = []
  draw = experiment._FigureDrawer.draw

  def recorded(self, *args):
    files = draw(self, *args)
    draws.append((threading.current_thread().name, sorted(files)))
    return files

  monkeypatch.setattr(experiment._FigureDrawer, "draw", recorded)
  bad = tmp_path / "bad"
  code, _, err = _run(argv + ["--out", str(bad)], capsys)
  assert code != 0 and "final KRR" in err
  # The thread drew all four figures (and was waited for), yet none reached the folder.
  assert [(name, [pathlib.Path(p).name for p in files]) for name, files in draws] == [
      ("draw-figures", ["gram.png", "gram_agop.png", "nc1.png", "nc2.png"])]
  assert not any(bad.glob("*.png")) and not (bad / "metrics.json").exists()
