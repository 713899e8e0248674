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
