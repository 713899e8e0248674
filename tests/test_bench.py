"""The benchmarks still run against the library (tiny sizes; their timings are not checked)."""
import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def _load(name):
  spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("agop", ["closed_form", "rules"])
def test_per_stage_bench_runs_every_stage(agop, tmp_path):
  out = _load("deep_rfm").main(["--n", "120", "--d", "16", "--width", "32", "--repeats", "1",
                                "--agop", agop, "--json", str(tmp_path / "stages.json")])
  assert set(out) == {"matmul (reference)", "kernel", "solve", f"agop ({agop})", "sqrt",
                      "features", "metrics x3", "whole layer"}
  assert all(v["seconds"] > 0 for v in out.values())
  assert (tmp_path / "stages.json").exists()


def test_whole_run_bench_reports_both_references(tmp_path, monkeypatch):
  """--run: the loop's FLOP rate against the burst and the sustained reference matmul."""
  mod = _load("deep_rfm")
  monkeypatch.setattr(mod, "REF_SHAPE", "[256, 256] x [256, 256]")
  real = mod.reference_matmul
  monkeypatch.setattr(mod, "reference_matmul", lambda size=2048, **kw: real(256, **kw))
  out = mod.main(["--run", "--dataset", "digits", "--n", "200", "--n-test", "50", "--depth", "2",
                  "--width", "32", "--command-runs", "0", "--json", str(tmp_path / "run.json")])
  run = out["compiled"]
  assert len(run["matmul_sustained_gflops"]) == len(run["matmul_gflops"]) == 3
  med = sorted(run["matmul_sustained_gflops"])[1]
  assert run["ratio_to_sustained_matmul"] == pytest.approx(run["gflops"] / med)
  assert run["gflops"] == pytest.approx(run["gflop"] / run["loop_seconds"])


def test_train_nn_bench_counts_probe_and_epoch_flops(tmp_path):
  mod = _load("train_nn")
  # 784-512-512-10: forward 784·512 + 512·512 + 512·10 multiply-adds per point; the SGD pass
  # adds the weight gradients of every layer and the input gradients of all but the first.
  fwd = 784 * 512 + 512 * 512 + 512 * 10
  assert mod.epoch_flops(128, 100, [784, 512, 512, 10]) == 2 * (128 * (3 * fwd - 784 * 512)
                                                                 + 100 * fwd)
  res = mod.main(["--n", "256", "--n-test", "64", "--rounds", "1",
                  "--json", str(tmp_path / "nn.json")])
  assert res["epoch_gflop"] == pytest.approx(mod.epoch_flops(256, 320, [784] + [512] * 5 + [10])
                                             / 1e9)
  assert res["probe_over_epoch_flops"] == pytest.approx(res["probe_gflop"] / res["epoch_gflop"])
  assert res["probe_s"] > 0 and res["epoch_s"] > 0


def test_startup_bench_times_imports_and_both_layer_shapes(tmp_path):
  res = _load("startup").main(["--repeats", "1", "--n", "64", "--n-test", "16",
                               "--json", str(tmp_path / "startup.json")])
  assert set(res["imports"]) == {"ml_dtypes", "jax", "matplotlib.pyplot", "sklearn.datasets"}
  assert all(r["median_s"] > 0 and r["version"] for r in res["imports"].values())
  assert [r["d"] for r in res["layer_trace_and_lower"]] == [784, 1024]
  assert (tmp_path / "startup.json").exists()
