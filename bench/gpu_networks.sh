#!/usr/bin/env bash
# Section 6 on one GPU, under 8 minutes: ResNet-18 (lr 0.05, init 0.2, no momentum) and
# VGG-11 (lr 0.01, momentum 0.9, init 0.2 on MNIST / 0.3 otherwise), each with the paper's
# 5-layer MLP head (Appendix D), on mnist5k (4,000 real MNIST digits) and Fashion-MNIST
# (first 10,000 training points), each trained for as many epochs as fit in its time
# slot (probes every 10 epochs; a run stopped by its slot keeps its last epoch). Prints
# per run the last probe's epoch, accuracies, and per head layer the NFA correlation and
# the NC1 decomposition (paper convention tr Σ_W / tr Σ_B); compact summaries go to
# $OUT/net_<model>_<data>_s0/ (copy them to docs/runs/ to quote them).
#
#   bash bench/gpu_networks.sh            # four runs of ~100 s each
#   bash bench/gpu_networks.sh --small    # a CPU rehearsal: 2 epochs on 256 points each
#
# Fashion-MNIST is read from $FASHION_MNIST_DIR (default: the Debian package's folder,
# else the 2,000-point copy in tests/data/fashion_mnist).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DNC_JAX_COMPILE_CACHE="${DNC_JAX_COMPILE_CACHE:-/tmp/dnc_jax_xla}"
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-gpu_networks}"
RUNS="${RUNS_DIR:-/tmp/dnc_gpu_networks}"
mkdir -p "$OUTDIR" "$RUNS"
FM_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
[ -d "$FM_DIR" ] || FM_DIR=tests/data/fashion_mnist

if [[ "${1:-}" == "--small" ]]; then
  SLOT=120; EPOCHS=2; EVERY=1; NMN=256; NFM=256; NT=100
else
  SLOT=100; EPOCHS=400; EVERY=10; NMN=4000; NFM=10000; NT=1000
fi

run() {  # name, train_nn options: trains for at most $SLOT s, prints the last probe
  local name=$1; shift
  echo; echo "== $name ($(date -u +%H:%M:%S), at most ${SLOT}s)"
  rm -rf "$RUNS/$name"
  timeout -s TERM "$SLOT" $PY bin/train_nn --out "$RUNS/$name" --epochs "$EPOCHS" \
    --measure-every "$EVERY" --n-test "$NT" --no-progress --no-plots "$@"
  echo "== $name: exit $? (143: stopped by its slot after a saved epoch)"
  $PY - "$RUNS/$name" <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
hist = [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines() if l]
last = hist[-1]
probe = [r for r in hist if "layers" in r][-1]
print(f"epochs {last['epoch']}, train acc {last.get('train_acc', float('nan')):.4f}, "
      f"test acc {last.get('test_acc', float('nan')):.4f}; last probe at epoch {probe['epoch']}")
print("layer  NFA(sqrt)  NC1 phi(X)  NC1 phi(X)VS^T  NC1 full  NC1 AGOP^1/2  NC2")
for r in probe["layers"]:
  c = r["nc1"]
  print(f"{r['layer']:>5}  {r['nfa']['sqrt_agop']:9.3f}  {c['input']:10.4g}  {c['right_singular']:14.4g}"
        f"  {c['full_layer']:8.4g}  {c['agop_projection']:12.4g}  {r['nc2']:.3g}")
PY
  $PY -m dnc_jax.report.nets export "$RUNS/$name" "$OUTDIR/net_$name" > /dev/null \
    || echo "== $name: export failed"
}

run resnet18_mnist5k_s0 --model resnet18 --dataset mnist5k --n "$NMN" --seed 0
run resnet18_fm10k_s0 --model resnet18 --dataset fashion_mnist --data-dir "$FM_DIR" --n "$NFM" --seed 0
run vgg11_mnist5k_s0 --model vgg11 --dataset mnist5k --n "$NMN" --seed 0
run vgg11_fm10k_s0 --model vgg11 --dataset fashion_mnist --data-dir "$FM_DIR" --n "$NFM" --seed 0
echo; echo "gpu_networks: done in $SECONDS s; summaries in $OUTDIR/"
