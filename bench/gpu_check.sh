#!/usr/bin/env bash
# The GPU check of docs/performance.md: one script, under 8 minutes on one H200, plus at most
# 5 minutes for the Deep RFM run at the paper's size (full size only).
#
#   bash bench/gpu_check.sh            # N = 50,000, d = 3072 (CIFAR-10-shaped synthetic data)
#   bash bench/gpu_check.sh --small    # N = 2,000, d = 256: a one-minute rehearsal (CPU too)
#
# Prints, in order: the device; per-stage seconds and roofline ratios of one layer
# (bench/deep_rfm.py); the vmap(jacrev) AGOP against the closed form (bench/agop.py);
# the whole depth-19 run after compilation with its peak device memory; and what
# TF32 changes in the NC curves against the seed spread (bench/precision.py); and Deep RFM
# at the paper's size, Fashion-MNIST n = 50,000, 19 layers, ReLU, seed 0 (full size only),
# whose compact summary goes to $OUT/rfm_fm50000_relu_s0/ (copy it to docs/runs/).
# Fashion-MNIST is read from $FASHION_MNIST_DIR (default: the Debian package's folder).
# Results are also written as JSON under $OUT (or ./gpu_check) for docs/performance.md.
# Needs python3 with jax (CUDA), flax, optax, chex, numpy, scikit-learn, matplotlib, tqdm.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DNC_JAX_COMPILE_CACHE="${DNC_JAX_COMPILE_CACHE:-/tmp/dnc_jax_xla}"
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-gpu_check}"
mkdir -p "$OUTDIR"

if [[ "${1:-}" == "--small" ]]; then
  N=2000; NT=400; D=256; DEPTH=3; AN=2000; AD=256; AB=250; PSEEDS=2; PDEPTH=4
else
  N=50000; NT=10000; D=3072; DEPTH=19; AN=20000; AD=3072; AB=2000; PSEEDS=3; PDEPTH=19
fi

step() {  # step SECONDS NAME COMMAND...: a step that overruns is stopped, the rest still runs
  local limit=$1 name=$2; shift 2
  echo; echo "== $name ($(date -u +%H:%M:%S), at most ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
}

step 60 device bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; \
  $PY -c 'import jax; print(\"jax\", jax.__version__, jax.devices())'"
step 150 "one layer, per stage" $PY bench/deep_rfm.py --n "$N" --d "$D" --repeats 2 --json "$OUTDIR/stages.json"
step 60 "AGOP: vmap(jacrev) vs closed form" $PY bench/agop.py --n "$AN" --d "$AD" --batch-size "$AB" --repeats 3
step 240 "whole run, depth $DEPTH" $PY bench/deep_rfm.py --run --dataset synthetic --dim "$D" --n "$N" \
  --n-test "$NT" --depth "$DEPTH" --json "$OUTDIR/run.json"
step 90 "TF32 vs the seed spread (digits)" $PY bench/precision.py --dataset digits --depth "$PDEPTH" \
  --seeds "$PSEEDS" --json "$OUTDIR/precision.json"
if [[ "${1:-}" != "--small" ]]; then
  FM_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
  step 300 "Deep RFM, Fashion-MNIST n = 50000, 19 layers, ReLU" bash -c "$PY bin/deep_rfm \
    --dataset fashion_mnist --data-dir '$FM_DIR' --n 50000 --n-test 10000 --depth 19 \
    --features relu --seed 0 --precision float32 --no-progress --overwrite \
    --out /tmp/rfm_fm50000_relu_s0 && \
    $PY -m dnc_jax.report.rfm export /tmp/rfm_fm50000_relu_s0 '$OUTDIR/rfm_fm50000_relu_s0'"
fi
echo; echo "gpu_check: done in $SECONDS s; JSON in $OUTDIR/"
