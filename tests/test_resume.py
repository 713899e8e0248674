"""Crash safety of bin/deep_rfm: a killed run resumes to the uninterrupted result."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dnc_jax.cli import deep_rfm as cli

from conftest import REPO

ARGS = ["--dataset", "synthetic", "--n", "150", "--n-test", "30", "--depth", "8", "--width", "64",
        "--no-progress"]


def _strip_times(obj):
  if isinstance(obj, dict):
    return {k: _strip_times(v) for k, v in obj.items()
            if k not in ("seconds", "seconds_total", "seconds_read", "cache", "run", "memory",
                         "timing")}
  if isinstance(obj, list):
    return [_strip_times(v) for v in obj]
  return obj


def test_killed_run_resumes_to_the_same_metrics(tmp_path, capsys):
  full, killed = tmp_path / "full", tmp_path / "killed"
  assert cli.main(ARGS + ["--out", str(full)]) == 0
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "bin", "deep_rfm"), *ARGS,
                           "--out", str(killed)], env=env, stderr=subprocess.PIPE, text=True)
  state = killed / "checkpoint" / "state.json"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if state.exists() and json.loads(state.read_text())["layer"] >= 3:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be interrupted"
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143   # 128 + SIGTERM
  assert "--resume" in err and f"--out {killed}" in err
  assert not (killed / "metrics.json").exists()
  # Options may not change on resume ...
  assert cli.main(["--out", str(killed), "--resume", "--depth", "9"]) == 2
  assert "--depth 9 differs from the saved 8" in capsys.readouterr().err
  # A resumption refused for memory keeps the finished layers (the budget may change).
  assert cli.main(["--out", str(killed), "--resume", "--memory-gb", "1e-6"]) == 2
  assert "--memory-gb" in capsys.readouterr().err
  assert (killed / "checkpoint" / "state.json").exists()
  # ... and the resumed run equals the uninterrupted one.
  assert cli.main(["--out", str(killed), "--resume", "--no-progress"]) == 0
  a = json.loads((full / "metrics.json").read_text())
  b = json.loads((killed / "metrics.json").read_text())
  assert _strip_times(a["layers"]) == _strip_times(b["layers"])
  assert a["final"]["test_acc"] == b["final"]["test_acc"]
  assert not (killed / "checkpoint").exists()
  # Nothing left to resume.
  assert cli.main(["--out", str(killed), "--resume"]) == 2
  assert "already finished" in capsys.readouterr().err


def test_interrupted_run_is_protected(tmp_path, capsys):
  out = tmp_path / "r"
  (out / "checkpoint").mkdir(parents=True)
  assert cli.main(ARGS + ["--out", str(out)]) == 2
  assert "interrupted run; continue it with --resume" in capsys.readouterr().err


def test_same_seed_gives_identical_metrics_json(tmp_path):
  args = ["--dataset", "synthetic", "--n", "80", "--n-test", "20", "--depth", "2", "--width", "32",
          "--no-progress"]
  for name in ("a", "b"):
    assert cli.main(args + ["--out", str(tmp_path / name)]) == 0
  a = json.loads((tmp_path / "a" / "metrics.json").read_text())
  b = json.loads((tmp_path / "b" / "metrics.json").read_text())
  dump = lambda m: json.dumps(_strip_times(m), sort_keys=True)
  assert dump(a) == dump(b)
  assert cli.main(args + ["--seed", "1", "--out", str(tmp_path / "c")]) == 0
  c = json.loads((tmp_path / "c" / "metrics.json").read_text())
  assert c["layers"][0]["nc1"]["features"] != a["layers"][0]["nc1"]["features"]
