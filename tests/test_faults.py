"""Faults a new user meets: --out rules, interrupted runs, silent NaN, file modes, help texts."""
import dataclasses
import inspect
import json
import os
import signal
import stat

import jax
import numpy as np
import pytest

import dnc_jax as dj
from dnc_jax import theory
from dnc_jax.viz import figures
from dnc_jax.rfm import krr
from dnc_jax.rfm import memory
from dnc_jax.viz import collapse as plots
from dnc_jax.io import runs
from dnc_jax.nets import train as train_lib
from dnc_jax.cli import deep_rfm as rfm_cli
from dnc_jax.cli import figures as fig_cli
from dnc_jax.cli import theory as theory_cli
from dnc_jax.cli import train_nn as nn_cli

from conftest import FASHION_FIXTURE

RFM = ["--n", "100", "--n-test", "20", "--depth", "1", "--width", "32", "--no-progress"]
NN = ["--model", "mlp", "--dataset", "digits", "--width", "32", "--depth", "2", "--n-test", "50",
      "--no-plots", "--no-progress"]


def _code(main, argv, capsys):
  code = main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


@pytest.fixture
def unwritable(tmp_path):
  """A path under a folder this process cannot write into."""
  if os.geteuid() != 0:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield ro / "run"
    ro.chmod(0o755)
    return
  # root writes through permission bits; sysfs refuses new entries even to root
  try:
    os.mkdir("/sys/dnc_jax_probe")
  except OSError:
    yield __import__("pathlib").Path("/sys/dnc_jax_run")
    return
  os.rmdir("/sys/dnc_jax_probe")
  pytest.skip("no unwritable folder available")


# ----------------------------------------------------------------------------- --out


@pytest.mark.parametrize("command", ["deep_rfm", "train_nn", "theory", "figures"])
def test_out_rules_are_the_same_in_every_command(command, tmp_path, unwritable, capsys,
                                                 monkeypatch):
  mains = {"deep_rfm": (rfm_cli.main, RFM), "train_nn": (nn_cli.main, NN + ["--epochs", "1"]),
           "theory": (theory_cli.main, ["lemma_c2"]),
           "figures": (fig_cli.main, [str(tmp_path / "no_runs_here")])}
  main, argv = mains[command]
  # The check comes before any work: the data, the checks and the runs are never touched.
  def no_work(*a, **k):
    raise AssertionError("work started before --out was checked")
  monkeypatch.setattr("dnc_jax.data.load_dataset", no_work)
  monkeypatch.setattr(theory_cli, "run", no_work)
  monkeypatch.setattr("dnc_jax.viz.figures.make_figures", no_work)
  afile = tmp_path / "afile"
  afile.write_text("x")
  for out, message in ((afile, f"--out {afile} is a file, not a directory"),
                       (afile / "sub", f"{afile} is a file, not a directory"),
                       (unwritable, "cannot write there")):
    code, _, err = _code(main, argv + ["--out", str(out)], capsys)
    assert code == 2, (out, err)
    assert err.startswith(f"{command}: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
  # An existing run directory is refused without --overwrite, in the same words.
  held = tmp_path / "held"
  held.mkdir()
  marker = {"deep_rfm": "metrics.json", "train_nn": "metrics.json", "theory": "results.json",
            "figures": "summary.md"}[command]
  (held / marker).write_text("{}")
  code, _, err = _code(main, argv + ["--out", str(held)], capsys)
  assert code == 2 and f"{held} already holds a run ({marker})" in err
  assert "pass --overwrite to replace it" in err
  assert (held / marker).read_text() == "{}"


def test_theory_and_figures_overwrite(tmp_path, capsys):
  out = tmp_path / "theory"
  assert theory_cli.main(["lemma_c2", "--out", str(out), "--no-figures"]) == 0
  err = capsys.readouterr().err
  # Progress per check, on stderr.
  assert "[1/1] lemma_c2" in err and "done in" in err
  assert theory_cli.main(["lemma_c2", "--out", str(out), "--no-figures"]) == 2
  assert "already holds a run" in capsys.readouterr().err
  (out / "thm53.png").write_bytes(b"stale")   # a figure of an earlier, other check
  assert theory_cli.main(["lemma_c2", "--out", str(out), "--no-figures", "--overwrite"]) == 0
  assert not (out / "thm53.png").exists()
  assert json.loads((out / "results.json").read_text())["check"] == "lemma_c2"


def test_failed_run_leaves_no_empty_directory(tmp_path, capsys):
  # Every kernel entry is 1 with this bandwidth: a singular ridgeless system at layer 1,
  # after the data load and the first files of the run.
  out = tmp_path / "deep" / "s"
  code, _, err = _code(rfm_cli.main, ["--dataset", "synthetic", "--n", "60", "--n-test", "10",
                                      "--depth", "1", "--preset", "paper", "--bandwidth",
                                      "1e30", "--out", str(out), "--no-progress"], capsys)
  assert code == 2 and "singular" in err
  assert not out.exists() and not out.parent.exists()
  # A float64 run is not told to use float64.
  assert "float64 (" not in err and "--x64" not in err
  code, _, err = _code(nn_cli.main, ["--model", "vgg11", "--dataset", "synthetic", "--out",
                                     str(out), "--no-progress"], capsys)
  assert code == 2 and "needs images of at least 8" in err
  assert not out.exists()


def test_solve_and_memory_messages():
  assert "float64 (--precision float64)" in str(krr.solve_error(0.0, 10, dtype=np.float32))
  assert "float64 (" not in str(krr.solve_error(0.0, 10, dtype=np.float64))
  assert "float64 (" not in str(krr.solve_error(1e-3, 10, "layer 2", dtype=np.float64))
  with pytest.raises(dj.ConfigError, match=r"the budget is 1\.02 MiB") as err:
    memory.plan_layer(2000, 100, 64, 64, 10, budget=int(0.001 * memory.GiB))
  assert "0.0 GiB" not in str(err.value)


# ----------------------------------------------------------------------------- interrupts


def test_train_nn_interrupted_before_its_first_measurement_resumes(tmp_path, capsys,
                                                                   monkeypatch):
  argv = NN + ["--epochs", "3", "--measure-every", "0"]
  full, cut = tmp_path / "full", tmp_path / "cut"
  code, _, err = _code(nn_cli.main, argv + ["--out", str(full)], capsys)
  assert code == 0, err
  real = train_lib.epoch_permutation

  def ctrl_c_in_epoch_2(key, epoch, n):
    if epoch == 2:
      os.kill(os.getpid(), signal.SIGINT)
    return real(key, epoch, n)

  monkeypatch.setattr(train_lib, "epoch_permutation", ctrl_c_in_epoch_2)
  code, _, err = _code(nn_cli.main, argv + ["--out", str(cut)], capsys)
  monkeypatch.undo()
  assert code == 130
  assert f"Continue with:\n  bin/train_nn --resume {cut}" in err
  assert not (cut / "metrics.json").exists()
  # Starting afresh is refused, naming both ways on ...
  code, _, err = _code(nn_cli.main, argv + ["--out", str(cut)], capsys)
  assert code == 2 and f"--resume {cut}" in err and "--overwrite" in err
  # ... and the printed command gives the uninterrupted run's numbers.
  code, _, err = _code(nn_cli.main, ["--resume", str(cut), "--no-progress"], capsys)
  assert code == 0, err
  a = train_lib.read_history(full / "history.jsonl")
  b = train_lib.read_history(cut / "history.jsonl")
  assert [r["epoch"] for r in b] == [0, 1, 2, 3]
  assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
  assert a[-1]["layers"] == b[-1]["layers"]
  # --overwrite starts afresh.
  code, _, err = _code(nn_cli.main, argv + ["--epochs", "1", "--out", str(cut), "--overwrite"],
                       capsys)
  assert code == 0, err
  assert [r["epoch"] for r in train_lib.read_history(cut / "history.jsonl")] == [0, 1]


def test_epoch_0_is_checkpointed(tmp_path):
  cfg = train_lib.TrainConfig(model="mlp", dataset="digits", width=16, depth=1, epochs=1,
                              measure_every=0, n_test=0, progress=False)
  train_lib.train(cfg, out_dir=tmp_path / "r")
  steps = sorted(int(p.name) for p in (tmp_path / "r" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [0, 1]


# ----------------------------------------------------------------------------- files


def test_files_respect_the_umask(tmp_path):
  old = os.umask(0o027)
  try:
    runs.write_json(tmp_path / "a.json", {"x": 1})
    os.umask(0o022)
    runs.atomic_write_bytes(tmp_path / "b.bin", b"1")
    plots.plot_collapse([[{"layer": 1, "nc1": {"input": 1.0, "agop": 0.5, "features": 0.7}}]],
                        "nc1", tmp_path / "nc1")
  finally:
    os.umask(old)
  mode = lambda p: stat.S_IMODE(os.stat(tmp_path / p).st_mode)
  assert mode("a.json") == 0o640
  assert mode("b.bin") == 0o644
  assert mode("nc1.png") == 0o644


# ----------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("flag, value, cause", [("--bandwidth", "1e200", "bandwidth 1e+200"),
                                                ("--ridge", "1e300", "ridge 1e+300")])
def test_vanishing_agop_is_an_error_naming_layer_cause_and_fix(flag, value, cause, tmp_path,
                                                               capsys):
  out = tmp_path / "nan"
  # float64: these values are beyond float32's range (refused before any work, below).
  code, stdout, err = _code(rfm_cli.main, RFM + [flag, value, "--precision", "float64", "--out",
                                                 str(out)], capsys)
  assert code == 2, stdout
  assert "deep_rfm: error: layer 1: the AGOP M is zero or not finite" in err
  assert cause in err and "--bandwidth" in err and "ridge" in err
  assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--bandwidth", "1e200"), ("--ridge", "1e300")])
def test_a_value_beyond_float32_is_refused_before_any_work(flag, value, tmp_path, capsys):
  out = tmp_path / "big"
  code, stdout, err = _code(rfm_cli.main, RFM + [flag, value, "--precision", "float32", "--out",
                                                 str(out)], capsys)
  assert code == 2, stdout
  assert f"{flag[2:]} {float(value):g} overflows float32" in err and "--precision float64" in err
  assert not out.exists()


def test_float32_agop_underflows_at_a_milder_bandwidth():
  ds = dj.load_dataset("digits", n=100, n_test=0)
  x = ds.x_train.astype(np.float32)
  cfg = dj.preset_config("reference", depth=1, width=16, bandwidth=1e30)
  # float32: the gradients (∝ 1/L) underflow; float64 still has room at this bandwidth.
  with pytest.raises(dj.DncError, match=r"layer 1: .*bandwidth 1e\+30 .*float32.*--precision float64"):
    dj.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(0))
  cfg = dataclasses.replace(cfg, bandwidth=1e-4)   # the kernel itself underflows off the diagonal
  with pytest.raises(dj.DncError, match=r"bandwidth 0\.0001 is so small"):
    dj.deep_rfm(x, ds.y_train, cfg, key=jax.random.key(0))


def test_integer_data_is_converted():
  ds = dj.load_dataset("digits", n=100, n_test=0)
  pixels = np.round(ds.x_train * 4).astype(np.int32)   # integer-valued features
  cfg = dj.preset_config("reference", depth=1, width=16)
  a = dj.deep_rfm(pixels, ds.y_train, cfg, key=jax.random.key(0))
  b = dj.deep_rfm(pixels.astype(np.float32), ds.y_train, cfg, key=jax.random.key(0))
  assert a.layers[0]["nc1"] == b.layers[0]["nc1"]


# ----------------------------------------------------------------------------- first hour


@pytest.mark.parametrize("module", [rfm_cli, nn_cli, theory_cli, fig_cli])
def test_help_names_each_default_once(module):
  text = " ".join(module.build_parser().format_help().split())
  assert "(default: None)" not in text and "(default: False)" not in text
  for option in text.split(" --")[1:]:
    assert option.count("(default") <= 1, option
  if module is nn_cli:
    assert "--model {mlp,vgg11,resnet18}" in text


def test_default_n_test_takes_a_smaller_test_split_whole(tmp_path, capsys):
  # The fixture's test split has 500 images, fewer than the default 1000.
  base = ["--dataset", "fashion_mnist", "--data-dir", FASHION_FIXTURE, "--n", "100", "--depth",
          "1", "--width", "16", "--no-progress"]
  code, _, err = _code(rfm_cli.main, base + ["--out", str(tmp_path / "a")], capsys)
  assert code == 0, err
  assert json.loads((tmp_path / "a" / "config.json").read_text())["n_test"] == 500
  umask = os.umask(0)
  os.umask(umask)
  for name in ("metrics.json", "config.json", "nc1.png"):
    assert stat.S_IMODE(os.stat(tmp_path / "a" / name).st_mode) == 0o666 & ~umask, name
  code, _, err = _code(rfm_cli.main, base + ["--n-test", "1000", "--out", str(tmp_path / "b")],
                       capsys)
  assert code == 2 and "n_test=1000 is larger than" in err


def test_resume_compares_resolved_options(tmp_path, capsys):
  out = tmp_path / "r"
  run_cfg, _ = rfm_cli.parse(RFM + ["--out", str(out)])
  saved = {k: v for k, v in run_cfg.options.items() if k not in rfm_cli._RUN_CONTROL}
  runs.write_json(out / rfm_cli.CHECKPOINT / "options.json", saved)
  # The preset's bandwidth is 2.0 and its ridge 1e-3: naming them is no change.
  run_cfg, rfm_cfg = rfm_cli.parse(["--out", str(out), "--resume", "--bandwidth", "2.0",
                                    "--ridge", "1e-3", "--precision", "auto"])
  assert rfm_cfg.bandwidth == 2.0 and run_cfg.resume
  with pytest.raises(dj.DncError, match="--bandwidth 3.0 differs from the saved"):
    rfm_cli.parse(["--out", str(out), "--resume", "--bandwidth", "3.0"])


def test_load_dataset_keeps_its_signature():
  params = inspect.signature(dj.load_dataset).parameters
  assert {"name", "n", "n_test", "data_dir"} <= set(params)
  assert dj.load_dataset.__doc__.startswith("Loads and prepares a dataset")


def test_plateau_note():
  flat = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 20, "train_loss": 0.9999}]
  note = nn_cli.plateau_note(flat)
  assert "has not left its initial plateau" in note and "500" in note
  assert nn_cli.plateau_note([{"epoch": 0, "train_loss": 1.0},
                              {"epoch": 20, "train_loss": 0.5, "train_acc": 0.8}], 10) is None
  # The class-prior plateau: the loss fell to 4(K-1)/K² but accuracy is at chance.
  prior = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 100, "train_loss": 0.36, "train_acc": 0.12}]
  assert "near chance (1/10)" in nn_cli.plateau_note(prior, 10)


# ----------------------------------------------------------------------------- figures


def _fake_rfm_run(path, seed, depth=3):
  reps = ("input", "agop", "features")
  layers = [{"layer": l, "nc1": {r: 1.0 / (l + k + 1) for k, r in enumerate(reps)},
             "nc2": {r: 2.0 / (l + k + 1) for k, r in enumerate(reps)}, "test_acc": 0.5}
            for l in range(1, depth + 1)]
  return figures.Run(path, "deep_rfm", {"run": {"seed": seed}}, metrics={"layers": layers})


def _drawn(monkeypatch):
  """Patches plots.save_figure to keep what each figure shows instead of writing it."""
  seen = []

  def capture(fig, path, formats=("png",), **_):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    legend = ax.get_legend()
    seen.append({"ticks": [t for t in ax.get_xticks() if lo <= t <= hi],
                 "title": ax.get_title(),
                 "legend_covers_axes": legend.get_window_extent(renderer).overlaps(
                     ax.get_window_extent(renderer))})
    return [str(path)]

  monkeypatch.setattr(plots, "save_figure", capture)
  return seen


def test_figures_integer_ticks_one_seed_and_legend_beside(tmp_path, monkeypatch):
  seen = _drawn(monkeypatch)
  runs_ = [_fake_rfm_run(tmp_path / "a", 0)]
  plots.plot_collapse([r.metrics["layers"] for r in runs_], "nc1", tmp_path / "nc1")
  figures.plot_compare({"a": runs_, "b": [_fake_rfm_run(tmp_path / "b", 0)]},
                       tmp_path / "cmp.png")
  assert len(seen) == 2
  for fig in seen:
    assert len(fig["ticks"]) >= 2 and all(float(t).is_integer() for t in fig["ticks"])
    assert not fig["legend_covers_axes"]
  assert "over 1 seed\n" in seen[1]["title"]


def test_theory_bar_legend_covers_no_bar(monkeypatch, tmp_path):
  import matplotlib.figure
  results = [theory.check_lemma_c2(np.repeat(np.arange(3), s), num_classes=3, lambda_map=1.0,
                                   lambda_hat=0.01) for s in ((2, 2, 2), (2, 3, 4))]
  overlaps = []
  save = matplotlib.figure.Figure.savefig

  def check(fig, *a, **k):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[1]
    box = ax.get_legend().get_window_extent(r)
    overlaps.append(any(box.overlaps(b.get_window_extent(r)) for b in ax.patches))
    return save(fig, *a, **k)

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", check)
  theory.plot_lemma_c2(results, str(tmp_path / "c2.png"))
  assert overlaps == [False]


def test_figures_names_a_damaged_file(tmp_path, capsys, monkeypatch):
  run = tmp_path / "runs" / "rfm_s0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"deep_rfm": {}, "run": {"seed": 0}}))
  (run / "metrics.json").write_text('{"layers": [{"layer": 1, "nc1"')   # cut short
  for where in (run, run.parent):
    code, _, err = _code(fig_cli.main, [str(where), "--out", str(tmp_path / "figs")], capsys)
    assert code == 2 and f"cannot read {run / 'metrics.json'}" in err and "damaged" in err
  # One seed is "1 seed".
  monkeypatch.setattr(figures, "make_figures",
                      lambda *a, **k: {"files": [], "groups": {"g": {"seeds": [0], "group": "x"}}})
  code, out, _ = _code(fig_cli.main, [str(run), "--out", str(tmp_path / "figs2")], capsys)
  assert code == 0 and "g: 1 seed, x" in out
