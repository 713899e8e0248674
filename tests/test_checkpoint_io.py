"""bin/deep_rfm checkpoints: written in the background, never half-read, exact on resume; timing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from dnc_jax.io import runs
from dnc_jax.cli import deep_rfm as cli
from dnc_jax.rfm import checkpoint, timing
from dnc_jax.errors import DncError

from conftest import REPO

ARGS = ["--dataset", "synthetic", "--n", "120", "--n-test", "24", "--depth", "4", "--width", "48",
        "--precision", "float32", "--no-progress"]


def _layers(out):
  """The layer records of a finished run, without wall-clock seconds."""
  layers = json.loads((out / "metrics.json").read_text())["layers"]
  return [{k: v for k, v in rec.items() if k != "seconds"} for rec in layers]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  """An uninterrupted run: the reference every resumed run must equal bit for bit."""
  out = tmp_path_factory.mktemp("full") / "run"
  assert cli.main(ARGS + ["--out", str(out)]) == 0
  return out


def test_timing_adds_up_and_layer_shapes_compile_once(full, capsys):
  metrics = json.loads((full / "metrics.json").read_text())
  t = metrics["timing"]
  parts = sum(t[p] for p in timing.PHASES)
  assert t["total"] > 0 and abs(parts - t["total"]) < 0.01 * t["total"] + 0.01
  assert all(t[p] >= 0 for p in timing.PHASES if p != "other") and t["other"] > -0.05
  assert 0 < t["loop_share"] <= 1 and t["loop_share"] == pytest.approx(t["layers"] / t["total"],
                                                                        abs=1e-3)
  # The layer compiles for the input width (layer 1) and the feature width (layer 2) only.
  by_layer = t["compile_by_layer"]
  assert set(by_layer) == {"1", "2", "3", "4"}
  assert by_layer["1"] > 0 and by_layer["2"] > 0 and by_layer["3"] == by_layer["4"] == 0
  line = timing.format_timing(t)
  assert line.startswith(f"time {t['total']:.1f} s: layer loop ") and "checkpoints" in line


def test_rfm_layer_traces_once_per_input_width():
  """Counted from JAX's own trace events: 2 traces for depth 5 (d -> D, then D -> D)."""
  import jax
  from jax import monitoring
  from dnc_jax.rfm import driver as drfm
  traces = []

  def on_span(event, start, end, **kw):
    if event == "/jax/core/compile/jaxpr_trace_duration" and kw.get("fun_name") == "_rfm_layer":
      traces.append(start)

  rng = np.random.default_rng(0)
  x = rng.normal(size=(37, 11)).astype(np.float32)   # a shape no other test uses
  labels = np.arange(37) % 3
  cfg = drfm.preset_config("reference", depth=5, width=13)
  monitoring.register_event_time_span_listener(on_span)
  try:
    drfm.deep_rfm(x, labels, cfg, key=jax.random.key(0))
  finally:
    monitoring.unregister_event_time_span_listener(on_span)
  assert len(traces) == 2


def _interrupt_after(monkeypatch, layers_done, slow_write=0.0):
  """Makes the run stop at its safe point after ``layers_done`` layers, as SIGTERM would;
  ``slow_write`` seconds of delay in each checkpoint write keep that write in flight."""
  real_check = runs.check_interrupt
  real_write = runs.write_npz_uncompressed
  done = []

  def check():
    done.append(1)
    if len(done) > layers_done:   # the first call follows the data load
      raise runs.Interrupted(signal.SIGTERM)
    real_check()

  def write(path, **arrays):
    time.sleep(slow_write)
    real_write(path, **arrays)

  monkeypatch.setattr(runs, "check_interrupt", check)
  monkeypatch.setattr(runs, "write_npz_uncompressed", write)


def test_interrupt_flushes_the_last_state_and_old_checkpoints_resume(full, tmp_path, monkeypatch,
                                                                     capsys):
  cut = tmp_path / "cut"
  # The write of layer 2's state is still running when the interrupt is acted on.
  _interrupt_after(monkeypatch, 2, slow_write=0.5)
  assert cli.main(ARGS + ["--out", str(cut)]) == 143
  monkeypatch.undo()
  assert "after layer 2" in capsys.readouterr().err
  ckpt = cut / "checkpoint"
  meta = json.loads((ckpt / "state.json").read_text())
  assert meta["layer"] == 2 and len(meta["layers"]) == 2
  assert sorted(p.name for p in ckpt.iterdir()) == ["options.json", "state.json",
                                                    "state_0002.npz"]
  with np.load(ckpt / "state_0002.npz") as z:   # written uncompressed
    info = z.zip.getinfo("x.npy")
    assert info.compress_type == 0 and z["x"].shape == (120, 48)
  # The same state as a compressed file, as earlier versions wrote it.
  old = tmp_path / "old"
  shutil.copytree(cut, old)
  with np.load(old / "checkpoint" / "state_0002.npz") as z:
    arrays = {k: z[k] for k in z.files}
  np.savez_compressed(old / "checkpoint" / "state_0002.npz", **arrays)
  with np.load(old / "checkpoint" / "state_0002.npz") as z:
    assert z.zip.getinfo("x.npy").compress_type != 0
  for out in (cut, old):
    assert cli.main(["--out", str(out), "--resume", "--no-progress"]) == 0
    assert _layers(out) == _layers(full)
    assert not (out / "checkpoint").exists()
    # The last line: the resumed run's time by phase (layers 3 and 4 only).
    t = json.loads((out / "metrics.json").read_text())["timing"]
    assert capsys.readouterr().out.splitlines()[-1] == timing.format_timing(t)
    assert set(t["compile_by_layer"]) == {"3", "4"}


_KILLED_WRITER = textwrap.dedent("""
  import sys, time
  from dnc_jax.io import atomic
  from dnc_jax.cli import deep_rfm as cli
  real = atomic.atomic_write_with

  def half_then_hang(path, fill):
    if path.name == "state_0003.npz":
      def half(f):
        f.write(b"PK" + bytes(1000))   # the start of a file whose end never comes
        f.flush()
        print("writing", flush=True)
        time.sleep(600)
      return real(path, half)
    return real(path, fill)

  atomic.atomic_write_with = half_then_hang
  sys.exit(cli.main(sys.argv[1:]))
""")


def test_killed_during_a_checkpoint_write_resumes_exactly(full, tmp_path):
  out = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, *ARGS, "--out", str(out)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
  finally:
    proc.kill()   # SIGKILL: no handler, no flush
    proc.communicate(timeout=60)
  ckpt = out / "checkpoint"
  assert list(ckpt.glob(".state_0003.npz.*.tmp"))   # the half-written file, under a temporary name
  assert json.loads((ckpt / "state.json").read_text())["layer"] == 2
  state = checkpoint.load_checkpoint(ckpt)
  assert state.layer == 2 and state.x.shape == (120, 48)
  assert cli.main(["--out", str(out), "--resume", "--no-progress"]) == 0
  assert _layers(out) == _layers(full)


def test_a_failed_checkpoint_write_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  from dnc_jax.rfm import driver as drfm
  writer = checkpoint.CheckpointWriter(tmp_path / "file" / "checkpoint")   # under a file: cannot be made
  writer.submit(drfm.DeepRFMState(1, np.zeros((2, 2)), np.zeros((1, 2)), [], {}, None, {}))
  with pytest.raises(DncError, match=r"^could not write the checkpoint in .*checkpoint: ") as err:
    writer.wait()
  assert "\n" not in str(err.value)
  writer.wait()   # reported once


def test_a_failed_run_leaves_no_checkpoint_while_a_write_is_in_flight(tmp_path, monkeypatch,
                                                                        capsys):
  from dnc_jax.rfm import driver as drfm
  real = drfm.check_agop

  failed = threading.Event()
  real_write = runs.write_npz_uncompressed

  def fail_at_layer_2(m, layer, config):
    if layer == 2:
      failed.set()
      raise drfm.AgopError("layer 2: the AGOP M is zero")
    real(m, layer, config)

  def write_after_the_failure(path, **arrays):   # layer 1's state is in flight at the failure
    failed.wait(60)
    time.sleep(0.2)
    real_write(path, **arrays)

  monkeypatch.setattr(drfm, "check_agop", fail_at_layer_2)
  monkeypatch.setattr(runs, "write_npz_uncompressed", write_after_the_failure)
  out = tmp_path / "failed"
  assert cli.main(ARGS + ["--out", str(out)]) == 2
  assert "layer 2: the AGOP M is zero" in capsys.readouterr().err
  for t in threading.enumerate():   # a write that outlived the run would make the folder again
    if t.name == "checkpoint":
      t.join()
  assert not out.exists()
