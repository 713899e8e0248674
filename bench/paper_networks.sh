#!/usr/bin/env bash
# The paper's network runs on a CPU (Section 6, Appendix D), resumable: run it
# again after an interruption and every run continues from its last checkpoint.
#
#   for lane in 1 2 3; do
#     nohup bash bench/paper_networks.sh > runs/paper_networks.$lane.log 2>&1 &
#   done
#
# ONLY=fm10k (any substring of the job names) runs only the matching jobs.
#
# MLP 5 x 512 (no biases, MSE on +-1 targets, SGD batch 128, lr 0.05, init 0.2 on
# MNIST / 0.3 otherwise) to 500 epochs, probes every 10 epochs, seeds 0-2, on
# mnist5k (4,000 training points) and Fashion-MNIST (first 10,000 training
# points); runs that have not reached 99 % train accuracy continue in steps of
# 100 epochs up to 2,000. VGG-11 and ResNet-18 with the MLP head on 500
# Fashion-MNIST images for 10 epochs show the probes on conv backbones (a CPU
# epoch of ResNet-18 on 1,000 images costs about 100 CPU-seconds).
# Compact summaries: for d in runs/paper/*_s[0-9]*; do python -m dnc_jax.report.nets
#   export "$d" "docs/runs/net_$(basename "$d")"; done   (finished runs only)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-runs/paper}
mkdir -p "$ROOT"

# Several copies of this script may run at once (one per core or so): each
# takes the next job whose lock it can create and skips finished ones.
claim() { mkdir "$ROOT/$1.lock" 2>/dev/null; }
release() { rmdir "$ROOT/$1.lock" 2>/dev/null || true; }

epochs_done() {
  $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['epoch'])" \
    "$ROOT/$1/metrics.json" 2>/dev/null || echo 0
}

reached() {  # train accuracy >= 0.99 in the run's metrics.json
  $PY -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['summary']['train_acc'] >= 0.99 else 1)" \
    "$ROOT/$1/metrics.json" 2>/dev/null
}

step() {  # name, target epochs, options of a new run
  local name=$1 target=$2; shift 2
  local dir="$ROOT/$name"
  if [ -f "$dir/metrics.json" ] && [ "$(epochs_done "$name")" -ge "$target" ]; then return 0; fi
  if [ -f "$dir/config.json" ]; then
    echo "== $name: to epoch $target, resuming $(date +%T)"
    $PY bin/train_nn --resume "$dir" --epochs "$target" --no-progress --no-plots
  else
    echo "== $name: to epoch $target, starting $(date +%T)"
    $PY bin/train_nn --out "$dir" --epochs "$target" --no-progress --no-plots "$@"
  fi
}

job() {  # name, max epochs, options: 500 epochs, then +100 until train acc >= 0.99 or max
  local name=$1 max=$2; shift 2
  # ONLY=<pattern> restricts a lane to matching jobs (e.g. ONLY=fm10k).
  case "$name" in *${ONLY:-}*) ;; *) return 0 ;; esac
  claim "$name" || return 0
  local target=500
  [ "$max" -lt 500 ] && target=$max
  while :; do
    step "$name" "$target" "$@" || { echo "== $name: failed"; release "$name"; return 1; }
    if reached "$name"; then echo "== $name: train accuracy >= 0.99 at epoch $(epochs_done "$name")"; break; fi
    [ "$target" -ge "$max" ] && { echo "== $name: train accuracy < 0.99 at epoch $target"; break; }
    target=$((target + 100))
  done
  release "$name"
}

for s in 0 1 2; do
  job "mlp_mnist5k_s$s" 2000 --model mlp --dataset mnist5k --seed $s
done
for m in resnet18 vgg11; do
  job "${m}_fm500_s0" 10 --model $m --dataset fashion_mnist --n 500 --n-test 200 \
    --measure-every 5 --seed 0
done
for s in 0 1 2; do
  job "mlp_fm10k_s$s" 2000 --model mlp --dataset fashion_mnist --n 10000 --n-test 2000 --seed $s
done
echo "== lane done $(date +%T)"
