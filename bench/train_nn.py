"""Benchmark: one full probe of the MLP head against training epochs and a plain matmul.

For the paper's MLP (784 inputs, 5 hidden layers of 512, 10 outputs, batch 128,
SGD) on ``--n`` points, each round times, one after the other:

* a plain float32 ``[2048]³`` matmul (the reference rate of this machine now);
* one training epoch as ``bin/train_nn`` runs it: the jitted SGD scan over the
  full batches, then the evaluation of the loss and accuracy on the ``n``
  training points and ``--n-test`` test points (``epoch``); and the SGD scan
  alone (``sgd pass``);
* one probe of all five head layers (:func:`dnc_jax.nets.probes.probe_head`: tail
  AGOPs, NFA correlations, NC1 decomposition, NC2).

Timings of one round are taken seconds apart, so their ratios are robust to a
machine whose load changes; the medians over ``--rounds`` rounds are printed:
``probe / epoch`` (target ≤ 3) and ``probe FLOP rate / matmul rate`` (target
≥ 0.5, FLOPs counted by :func:`dnc_jax.nets.probes.probe_flops`).

    .venv/bin/python bench/train_nn.py [--n 5000] [--rounds 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dnc_jax.nets import models as nets  # noqa: E402
from dnc_jax.nets import probes  # noqa: E402
from dnc_jax.io import runs  # noqa: E402
from dnc_jax.nets import train as train_lib  # noqa: E402


def epoch_flops(n_sgd: int, n_eval: int, dims) -> float:
  """FLOPs (2 per multiply-add) of one epoch of an MLP with layer sizes ``dims``.

  The SGD pass over ``n_sgd`` points runs each layer's product forward, for the weight
  gradient and (all but the first layer) for the input gradient; the evaluation runs
  ``n_eval`` points forward.
  """
  macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
  return 2.0 * (n_sgd * (3 * sum(macs) - macs[0]) + n_eval * sum(macs))


def _time(fn) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--n", type=int, default=5000, help="points per epoch and per probe")
  p.add_argument("--n-test", type=int, default=1000, help="test points evaluated per epoch")
  p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians reported)")
  p.add_argument("--json", default=None, help="write the results here")
  args = p.parse_args(argv)

  k, b = 10, 128
  cfg = train_lib.TrainConfig(lr=0.05, batch_size=b, progress=False)
  x = jax.random.normal(jax.random.key(1), (args.n, 28, 28, 1))
  x_test = jax.random.normal(jax.random.key(2), (args.n_test, 28, 28, 1))
  labels = np.arange(args.n) % k
  y = 2.0 * jax.nn.one_hot(jnp.asarray(labels), k) - 1.0
  y_test = 2.0 * jax.nn.one_hot(jnp.arange(args.n_test) % k, k) - 1.0
  model = nets.make_model("mlp", num_classes=k, depth=5, width=512, init_gain=0.3)
  opt = train_lib.make_optimizer(cfg)
  state = train_lib.init_state(model, opt, jax.random.key(0), x[:2], jnp.float32)
  run_epoch = jax.jit(train_lib.make_epoch(train_lib.make_train_step(model, opt)))
  fwd = jax.jit(lambda v, xb: model.apply(v, xb, train=False))
  nb = args.n // b
  idx = jnp.arange(nb * b).reshape(nb, b)

  def sgd_pass():
    return run_epoch(state, x, y, idx)[1]

  def epoch():
    # As bin/train_nn: the SGD pass, then loss and accuracy on both splits.
    st, losses = run_epoch(state, x, y, idx)
    v = {"params": st.params}
    out = []
    for xs, ys in ((x, y), (x_test, y_test)):
      o = train_lib.batched_apply(lambda xb: fwd(v, xb), xs, 1024)
      out.append((float(train_lib.mse_loss(o, ys)), np.argmax(np.asarray(o), axis=1)))
    return losses

  v = {"params": state.params}
  h1 = nets.embed(model, v, x)
  hp = nets.head_params(v)

  def probe():
    return jnp.asarray([r["nfa"]["sqrt_agop"] for r in probes.probe_head(hp, h1, labels,
                                                                          num_classes=k)])

  a = jax.random.normal(jax.random.key(3), (2048, 2048))
  matmul = jax.jit(lambda a: jnp.matmul(a, a, precision=jax.lax.Precision.HIGHEST))

  def mm():
    return matmul(a)

  for fn in (mm, sgd_pass, epoch, probe):   # compile
    _time(fn)
  flops = probes.probe_flops(args.n, [784] + [512] * 5, k)
  e_flops = epoch_flops(nb * b, args.n + args.n_test, [784] + [512] * 5 + [k])
  rounds = []
  for _ in range(args.rounds):
    r = {"matmul_s": _time(mm), "sgd_pass_s": _time(sgd_pass), "epoch_s": _time(epoch),
         "probe_s": _time(probe)}
    r["matmul_s"] = min(r["matmul_s"], _time(mm))
    rounds.append(r)
  med = lambda key: float(np.median([key(r) for r in rounds]))  # noqa: E731
  mm_rate = lambda r: 2 * 2048 ** 3 / r["matmul_s"]  # noqa: E731
  res = {
      "date": time.strftime("%Y-%m-%d"),
      "backend": jax.default_backend(),
      "cpu_count": os.cpu_count(),
      "load_average_1min": os.getloadavg()[0],
      "n": args.n, "n_test": args.n_test, "rounds": args.rounds,
      "model": "mlp 784-5x512-10, batch 128, SGD",
      "probe_gflop": flops / 1e9,
      "matmul_gflop_per_s": med(lambda r: mm_rate(r) / 1e9),
      "sgd_pass_s": med(lambda r: r["sgd_pass_s"]),
      "epoch_s": med(lambda r: r["epoch_s"]),
      "probe_s": med(lambda r: r["probe_s"]),
      "probe_over_epoch": med(lambda r: r["probe_s"] / r["epoch_s"]),
      "probe_over_sgd_pass": med(lambda r: r["probe_s"] / r["sgd_pass_s"]),
      "probe_rate_over_matmul": med(lambda r: flops / r["probe_s"] / mm_rate(r)),
      "epoch_gflop": e_flops / 1e9,
      # The probe's FLOPs in epochs: its time in epochs if both ran equally fast.
      "probe_over_epoch_flops": flops / e_flops,
      "epoch_rate_over_matmul": med(lambda r: e_flops / r["epoch_s"] / mm_rate(r)),
  }
  print(json.dumps(res, indent=2))
  print(f"probe / epoch = {res['probe_over_epoch']:.2f} (target <= 3); "
        f"probe FLOP rate / matmul = {res['probe_rate_over_matmul']:.2f} (target >= 0.5); "
        f"medians of {args.rounds} interleaved rounds")
  print(f"counted FLOPs: probe {flops / 1e9:.0f} GFLOP = {res['probe_over_epoch_flops']:.2f} "
        f"epochs of {e_flops / 1e9:.0f} GFLOP; an epoch runs at "
        f"{res['epoch_rate_over_matmul']:.2f} of the matmul rate, the probe at "
        f"{res['probe_rate_over_matmul']:.2f}")
  if args.json:
    runs.atomic_write_bytes(args.json, (json.dumps(res, indent=2) + "\n").encode())
  return res


if __name__ == "__main__":
  main()
