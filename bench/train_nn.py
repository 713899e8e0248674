"""Benchmark: the jitted MLP training step and one full probe of the head.

Measures (after compilation) examples/s of the paper's MLP training step
(5 hidden layers of width 512, 784 inputs, 10 outputs, batch 128, SGD), the
time of one epoch on ``--n`` points, and the time of one probe of all five head
layers (AGOP of each tail, NFA correlations, NC1 decomposition) on the same
``--n`` points, as a fraction of the epoch.

    .venv/bin/python bench/train_nn.py [--n 5000] [--steps 200] [--json out.json]
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

from dnc_jax import nets, probes  # noqa: E402
from dnc_jax import train as train_lib  # noqa: E402


def _best(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--n", type=int, default=5000, help="points per epoch and per probe")
  p.add_argument("--steps", type=int, default=100, help="training steps timed")
  p.add_argument("--repeats", type=int, default=3, help="repeats (best is reported)")
  p.add_argument("--json", default=None, help="write the results here")
  args = p.parse_args(argv)

  cfg = train_lib.TrainConfig(lr=0.05, batch_size=128, progress=False)
  key = jax.random.key(0)
  k = 10
  x = jax.random.normal(jax.random.key(1), (args.n, 28, 28, 1))
  labels = np.arange(args.n) % k
  y = 2.0 * jax.nn.one_hot(jnp.asarray(labels), k) - 1.0
  model = nets.make_model("mlp", num_classes=k, depth=5, width=512, init_gain=0.3)
  opt = train_lib.make_optimizer(cfg)
  state = train_lib.init_state(model, opt, key, x[:2], jnp.float32)
  step_fn = train_lib.make_train_step(model, opt)
  step = jax.jit(step_fn)
  run_epoch = jax.jit(train_lib.make_epoch(step_fn))
  b = cfg.batch_size
  xb, yb = x[:b], y[:b]

  def steps():
    s = state
    for _ in range(args.steps):
      s, loss = step(s, xb, yb)
    return loss

  jax.block_until_ready(step(state, xb, yb))
  t_steps = _best(steps, args.repeats)
  nb = args.n // b
  idx = jnp.arange(nb * b).reshape(nb, b)
  jax.block_until_ready(run_epoch(state, x, y, idx))
  t_epoch = _best(lambda: run_epoch(state, x, y, idx)[1], args.repeats)

  v = {"params": state.params}
  h1 = nets.embed(model, v, x)
  hp = nets.head_params(v)
  probes.probe_head(hp, h1, labels, num_classes=k)   # compile
  t_probe = _best(lambda: jnp.asarray(
      [r["nfa"]["sqrt_agop"] for r in probes.probe_head(hp, h1, labels, num_classes=k)]),
                  args.repeats)
  res = {
      "backend": jax.default_backend(),
      "devices": str(jax.devices()),
      "cpu_count": os.cpu_count(),
      "load_average_1min": os.getloadavg()[0],
      "model": "mlp 784-5x512-10, batch 128, SGD",
      "train_step_examples_per_s": args.steps * b / t_steps,
      "train_step_ms": 1e3 * t_steps / args.steps,
      "n": args.n,
      "epoch_s (scan over full batches)": t_epoch,
      "epoch_examples_per_s": nb * b / t_epoch,
      "probe_all_5_layers_s": t_probe,
      "probe_over_epoch": t_probe / t_epoch,
  }
  print(json.dumps(res, indent=2))
  if args.json:
    train_lib.atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
  return res


if __name__ == "__main__":
  main()
