"""Signals while XLA compiles: a clean exit (130, 143), never a crash, and a usable directory."""
import os
import signal
import subprocess
import sys
import time

from dnc_jax import DncError
from dnc_jax.cli import deep_rfm as rfm_cli
from dnc_jax.cli import train_nn as nn_cli

from conftest import REPO

RFM = ["deep_rfm", "--n", "200", "--n-test", "20", "--depth", "3", "--width", "64",
       "--no-progress", "--no-compile-cache"]
NN = ["train_nn", "--model", "mlp", "--dataset", "digits", "--width", "32", "--depth", "2",
      "--epochs", "2", "--n-test", "50", "--no-plots", "--no-progress"]
# (command, signals sent, seconds after the run's first file appears, expected exit code);
# the first file appears once the data are loaded, when the first compilation starts.
TRIES = [
    (RFM, [signal.SIGINT], 0.0, 130),
    (RFM, [signal.SIGTERM], 0.3, 143),
    (RFM, [signal.SIGINT, signal.SIGINT], 0.2, 130),   # the second one stops at once
    (RFM, [signal.SIGKILL], 0.5, -signal.SIGKILL),
    (NN, [signal.SIGINT], 0.3, 130),
    (NN, [signal.SIGKILL], 0.3, -signal.SIGKILL),
]


def _first_file(argv, out):
  return out / ("checkpoint/options.json" if argv[0] == "deep_rfm" else "config.json")


def _accepted(argv, out) -> bool:
  """Whether the printed resume command, or a fresh start, accepts ``out``."""
  if argv[0] == "deep_rfm":
    for resume in (["--resume"], []):
      try:
        run_cfg, _ = rfm_cli.parse(argv[1:] + ["--out", str(out)] + resume)
        rfm_cli.experiment.check_out(run_cfg)
        return True
      except DncError:
        pass
    return False
  for resume in (True, False):
    try:
      nn_cli.check_out(out, resume=resume, overwrite=False)
      return True
    except DncError:
      pass
  return False


def test_signals_during_compilation_exit_cleanly(tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  procs = []
  for i, (argv, sigs, delay, expected) in enumerate(TRIES):
    out = tmp_path / f"run{i}"
    cmd = [sys.executable, os.path.join(REPO, "bin", argv[0]), *argv[1:], "--out", str(out)]
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True))
  pending = {i: None for i in range(len(TRIES))}   # try -> when its first file appeared
  deadline = time.time() + 180
  while pending and time.time() < deadline:
    for i in list(pending):
      argv, sigs, delay, _ = TRIES[i]
      if procs[i].poll() is not None:
        raise AssertionError(f"try {i} ended before its signal: {procs[i].stderr.read()}")
      out = tmp_path / f"run{i}"
      if pending[i] is None and _first_file(argv, out).exists():
        pending[i] = time.time()
      if pending[i] is not None and time.time() >= pending[i] + delay:
        for k, sig in enumerate(sigs):
          if k:
            time.sleep(0.2)
          procs[i].send_signal(sig)
        del pending[i]
    time.sleep(0.02)
  assert not pending, "some runs never started"
  errs = [p.communicate(timeout=180)[1] for p in procs]
  # Never a crash (-11) or an exit code that does not name the signal.
  assert [p.returncode for p in procs] == [t[3] for t in TRIES], errs
  for i, (argv, sigs, _, expected) in enumerate(TRIES):
    out, err = tmp_path / f"run{i}", errs[i]
    if expected > 0:
      assert "interrupted" in err and "Traceback" not in err, err
      if argv[0] == "deep_rfm":
        assert f"bin/deep_rfm --out {out} --resume" in err
      else:
        assert f"bin/train_nn --resume {out}" in err
    assert _accepted(argv, out), (i, sorted(p.name for p in out.rglob("*")))
