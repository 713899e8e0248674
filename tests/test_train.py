"""Training: SGD step vs NumPy, jitted step traces, loss decrease, resume, divergence, CLI."""
import json
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnc_jax.nets import models as nets
from dnc_jax.nets import train as train_lib
from dnc_jax.cli import train_nn
from dnc_jax.errors import ConfigError


def _synthetic(n=96, k=3, d=6, seed=0, n_test=30):
  rng = np.random.default_rng(seed)
  means = 2.0 * rng.normal(size=(k, d))
  y = np.repeat(np.arange(k), n // k).astype(np.int32)
  yt = np.repeat(np.arange(k), n_test // k).astype(np.int32)
  x = (means[y] + rng.normal(size=(len(y), d))).astype(np.float32)
  xt = (means[yt] + rng.normal(size=(len(yt), d))).astype(np.float32)
  return types.SimpleNamespace(x_train=x.reshape(-1, 1, d, 1), y_train=y,
                               x_test=xt.reshape(-1, 1, d, 1), y_test=yt, num_classes=k,
                               image_shape=(1, d, 1), name="synthetic", info={})


TINY = dict(model="mlp", dataset="synthetic", width=8, depth=2, batch_size=32, init=1.0,
            lr=0.05, measure_every=2, progress=False)


def test_sgd_step_matches_numpy(x64, key):
  """One SGD step (momentum, weight decay) vs a float64 NumPy forward/backward."""
  cfg = train_lib.TrainConfig(**{**TINY, "momentum": 0.9, "weight_decay": 1e-2, "lr": 0.1})
  model = nets.make_model("mlp", num_classes=3, depth=2, width=8, init_gain=1.0,
                          param_dtype=jnp.float64)
  opt = train_lib.make_optimizer(cfg)
  x = jax.random.normal(jax.random.fold_in(key, 1), (5, 6), jnp.float64)
  y = 2.0 * jax.nn.one_hot(jnp.array([0, 1, 2, 0, 1]), 3, dtype=jnp.float64) - 1.0
  st = train_lib.init_state(model, opt, key, x, jnp.float64)
  step = jax.jit(train_lib.make_train_step(model, opt))
  st1, loss = step(st, x, y)
  st2, _ = step(st1, x, y)
  hp = nets.head_params({"params": st.params})
  w1, w2 = (np.asarray(w) for w in nets.head_weights(hp))
  wo = np.asarray(nets.readout_weight(hp))
  xn, yn = np.asarray(x), np.asarray(y)

  def grads(w1, w2, wo):
    a1 = xn @ w1.T; h1 = np.maximum(a1, 0)
    a2 = h1 @ w2.T; h2 = np.maximum(a2, 0)
    out = h2 @ wo.T
    g_out = 2 * (out - yn) / out.size
    g_wo = g_out.T @ h2
    g_a2 = (g_out @ wo) * (a2 > 0)
    g_w2 = g_a2.T @ h1
    g_a1 = (g_a2 @ w2) * (a1 > 0)
    return np.mean((out - yn) ** 2), [g_a1.T @ xn, g_w2, g_wo]

  ps, bufs = [w1, w2, wo], [0, 0, 0]
  l0, _ = grads(*ps)
  assert float(loss) == pytest.approx(l0, rel=1e-12)
  for _ in range(2):   # PyTorch SGD: g += wd p; buf = m buf + g; p -= lr buf
    _, gs = grads(*ps)
    gs = [g + 1e-2 * p for g, p in zip(gs, ps)]
    bufs = [0.9 * b + g for b, g in zip(bufs, gs)]
    ps = [p - 0.1 * b for p, b in zip(ps, bufs)]
  hp2 = nets.head_params({"params": st2.params})
  got = [np.asarray(w) for w in nets.head_weights(hp2)] + [np.asarray(nets.readout_weight(hp2))]
  chex.assert_trees_all_close(got, ps, rtol=1e-11, atol=1e-13)
  assert int(st2.step) == 2


def test_train_step_traces_once(key):
  model = nets.make_model("mlp", num_classes=3, depth=2, width=8)
  opt = optax.sgd(0.1)
  x = jnp.ones((4, 6))
  y = -jnp.ones((4, 3))
  st = train_lib.init_state(model, opt, key, x, jnp.float32)
  step = jax.jit(chex.assert_max_traces(train_lib.make_train_step(model, opt), n=1))
  for i in range(4):
    st, _ = step(st, x + i, y)
  assert int(st.step) == 4


def test_epoch_permutation_depends_on_seed_and_epoch_only(key):
  p1 = train_lib.epoch_permutation(key, 1, 50)
  assert sorted(p1.tolist()) == list(range(50))
  np.testing.assert_array_equal(p1, train_lib.epoch_permutation(key, 1, 50))
  assert not np.array_equal(p1, train_lib.epoch_permutation(key, 2, 50))
  assert not np.array_equal(p1, train_lib.epoch_permutation(jax.random.fold_in(key, 1), 1, 50))


def test_epoch_order_is_the_one_config_json_states():
  """config.json says permutation(fold_in(split(key(seed), 3)[1], epoch), N); so it is."""
  from dnc_jax import data
  cfg = train_lib.TrainConfig(model="mlp", dataset="digits", width=8, depth=1, seed=3,
                              progress=False)
  ds = data.load_dataset("digits", n=200, n_test=50, cache=False)
  setup, _ = train_lib.set_up(cfg, ds)
  want = jax.random.permutation(jax.random.fold_in(jax.random.split(jax.random.key(3), 3)[1], 4),
                                200)
  np.testing.assert_array_equal(train_lib.epoch_permutation(setup.data_key, 4, 200),
                                np.asarray(want))


def test_tiny_mlp_on_digits_learns(tmp_path):
  """A small MLP on the bundled digits drives the training loss well down."""
  cfg = train_lib.TrainConfig(model="mlp", dataset="digits", width=64, depth=2, init=1.0,
                              lr=0.05, epochs=12, measure_every=6, n_test=100, progress=False)
  res = train_lib.train(cfg, out_dir=tmp_path / "run")
  losses = [r["train_loss"] for r in res.history]
  assert losses[-1] < 0.5 * losses[0]
  assert res.history[-1]["train_acc"] > 0.6
  files = {p.name for p in (tmp_path / "run").iterdir()}
  assert {"config.json", "history.jsonl", "metrics.json", "metrics.csv", "checkpoints"} <= files
  conf = json.loads((tmp_path / "run" / "config.json").read_text())
  assert "tr(Sigma_W)/tr(Sigma_B)" in conf["conventions"]["nc1"]
  assert "permutation(fold_in(split(key(seed), 3)[1], epoch), N)" in json.dumps(conf)
  lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
  assert len(lines) == 13
  rec = json.loads(lines[6])
  assert rec["epoch"] == 6 and [l["layer"] for l in rec["layers"]] == [1, 2]
  assert set(rec["layers"][0]["nc1"]) == {"input", "right_singular", "full_layer", "agop_projection"}
  assert {"sqrt_agop", "agop"} <= set(rec["layers"][0]["nfa"])


def test_resume_is_bit_for_bit(tmp_path):
  ds = _synthetic(n=100)   # 100 = 3 full batches of 32 + a partial batch of 4
  full = train_lib.train(train_lib.TrainConfig(**TINY, epochs=4), out_dir=tmp_path / "a",
                         dataset=ds)
  train_lib.train(train_lib.TrainConfig(**TINY, epochs=2), out_dir=tmp_path / "b", dataset=ds)
  resumed = train_lib.train(train_lib.TrainConfig(**TINY, epochs=4), out_dir=tmp_path / "b",
                            resume=True, dataset=ds)
  chex.assert_trees_all_equal(full.state, resumed.state)
  assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
  # A different configuration is refused, naming the differing option.
  with pytest.raises(ConfigError, match="lr: stored 0.05, asked 0.1"):
    train_lib.train(train_lib.TrainConfig(**{**TINY, "lr": 0.1}, epochs=6),
                    out_dir=tmp_path / "b", resume=True, dataset=ds)
  # An existing run is not overwritten without --resume.
  with pytest.raises(ConfigError, match="already holds a run"):
    train_lib.train(train_lib.TrainConfig(**TINY, epochs=4), out_dir=tmp_path / "a", dataset=ds)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  ds = _synthetic(n=96)
  cfg = train_lib.TrainConfig(**{**TINY, "lr": 1e4, "measure_every": 0}, epochs=20)
  with pytest.raises(train_lib.DivergenceError, match=r"at epoch (\d+).*--lr 5000") as err:
    train_lib.train(cfg, out_dir=tmp_path / "nan", dataset=ds)
  bad = int(str(err.value).split("at epoch ")[1].split()[0])
  steps = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps[-1] == bad - 1
  hist = train_lib.read_history(tmp_path / "nan" / "history.jsonl")
  assert hist[-1]["epoch"] == bad - 1
  assert all(np.isfinite(r["train_loss"]) for r in hist)


def test_bad_input_errors(tmp_path):
  ds = _synthetic()
  with pytest.raises(ConfigError, match="unknown model"):
    train_lib.train(train_lib.TrainConfig(**{**TINY, "model": "lenet"}), dataset=ds)
  with pytest.raises(ConfigError, match="vgg11 needs images of at least 8"):
    train_lib.train(train_lib.TrainConfig(**{**TINY, "model": "vgg11"}), dataset=ds)
  with pytest.raises(ConfigError, match="no config.json"):
    train_lib.train(train_lib.TrainConfig(**TINY), out_dir=tmp_path / "none", resume=True,
                    dataset=ds)


def test_cli_errors_and_defaults(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:   # argparse lists the choices
    train_nn.main(["--model", "alexnet"])
  assert exit_.value.code == 2
  assert "invalid choice: 'alexnet'" in capsys.readouterr().err
  assert train_nn.main(["--model", "vgg11", "--dataset", "synthetic", "--out",
                        str(tmp_path / "v")]) == 2
  assert "needs images of at least 8" in capsys.readouterr().err
  assert train_nn.main(["--resume", str(tmp_path / "missing")]) == 2
  cfg, out, resume, _ = train_nn.parse(["--model", "vgg11"])
  assert (cfg.lr, cfg.momentum, cfg.epochs, cfg.init) == (0.01, 0.9, 600, 0.3)
  cfg, *_ = train_nn.parse(["--model", "resnet18"])
  assert (cfg.lr, cfg.momentum, cfg.epochs, cfg.init) == (0.05, 0.0, 300, 0.2)
  cfg, *_ = train_nn.parse(["--dataset", "mnist"])
  assert (cfg.model, cfg.lr, cfg.epochs, cfg.init, cfg.batch_size) == ("mlp", 0.05, 500, 0.2, 128)
