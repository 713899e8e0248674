#!/usr/bin/env bash
# The paper's network runs on a CPU (Section 6, Appendix D), resumable: run it
# again after an interruption and every run continues from its last checkpoint.
#
#   nohup bash bench/paper_networks.sh > runs/paper_networks.log 2>&1 &
#
# MLP 5 x 512 (no biases, MSE on +-1 targets, SGD batch 128, lr 0.05, init 0.2 on
# MNIST / 0.3 otherwise) to 500 epochs, probes every 10 epochs, seeds 0-2, on
# mnist5k (4,000 training points) and Fashion-MNIST (first 10,000 training
# points); runs that have not reached 99 % train accuracy continue in steps of
# 500 epochs up to 2,000. VGG-11 and ResNet-18 with the MLP head on 1,000
# Fashion-MNIST images for 30 epochs show the probes on conv backbones.
# Compact summaries go to docs/runs/<name>/ (bin/figures --export).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-runs/paper}
mkdir -p "$ROOT"

train() {  # name, then train_nn options
  local name=$1; shift
  local dir="$ROOT/$name"
  if [ -f "$dir/metrics.json" ] && [ -z "${EPOCHS_OVERRIDE:-}" ]; then
    echo "== $name: done"; return 0
  fi
  if [ -f "$dir/config.json" ]; then
    echo "== $name: resuming $(date +%T)"
    $PY bin/train_nn --resume "$dir" --no-progress --no-plots ${EPOCHS_OVERRIDE:+--epochs $EPOCHS_OVERRIDE}
  else
    echo "== $name: starting $(date +%T)"
    $PY bin/train_nn --out "$dir" --no-progress --no-plots "$@"
  fi
}

train_acc() {  # last train accuracy of a run
  $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['train_acc'])" \
    "$ROOT/$1/metrics.json" 2>/dev/null || echo 0
}

to_terminal_phase() {  # continue a run until train accuracy >= 0.99 or 2,000 epochs
  local name=$1
  for e in 1000 1500 2000; do
    local acc; acc=$(train_acc "$name")
    if $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.99 else 1)" "$acc"; then
      echo "== $name: train accuracy $acc >= 0.99"; return 0
    fi
    local done_epochs
    done_epochs=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['epoch'])" "$ROOT/$name/metrics.json")
    if [ "$done_epochs" -ge "$e" ]; then continue; fi
    EPOCHS_OVERRIDE=$e train "$name"
  done
}

for s in 0 1 2; do
  train "mlp_mnist5k_s$s" --model mlp --dataset mnist5k --seed $s
done
for m in vgg11 resnet18; do
  train "${m}_fm1000_s0" --model $m --dataset fashion_mnist --n 1000 --n-test 1000 \
    --epochs 30 --measure-every 5 --seed 0
done
for s in 0 1 2; do
  train "mlp_fm10k_s$s" --model mlp --dataset fashion_mnist --n 10000 --n-test 2000 --seed $s
done
for s in 0 1 2; do to_terminal_phase "mlp_mnist5k_s$s"; done
for s in 0 1 2; do to_terminal_phase "mlp_fm10k_s$s"; done
echo "== all done $(date +%T)"
