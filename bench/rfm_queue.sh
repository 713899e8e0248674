#!/usr/bin/env bash
# Runs the Deep RFM jobs of bench/rfm_jobs.txt one after the other and exports each
# finished run's compact summary to docs/runs/<name>/ (dnc_jax.report.rfm).
#
#   nohup bash bench/rfm_queue.sh > runs/rfm_queue.log 2>&1 &
#
# Each line of the jobs file is `NAME  bin/deep_rfm options...` ('#' starts a comment).
# A job whose summary exists is skipped; one with a checkpoint in runs/rfm/NAME is
# continued with --resume; the file is re-read after every job, so jobs can be added
# while the queue runs. Runs go to runs/rfm/NAME (not committed).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
JOBS="${1:-bench/rfm_jobs.txt}"
OUTROOT="${RFM_RUNS:-runs/rfm}"
DOCS="${RFM_DOCS:-docs/runs}"
mkdir -p "$OUTROOT"
declare -A failed=()
while true; do
  next=""
  while read -r name args; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    [[ -e "$DOCS/$name/metrics.json" || -n "${failed[$name]:-}" ]] && continue
    next="$name"; nargs="$args"; break
  done < "$JOBS"
  [[ -z "$next" ]] && break
  out="$OUTROOT/$next"
  echo "== $next ($(date -u +%H:%M:%S)): $nargs"
  t0=$SECONDS
  if [[ -e "$out/metrics.json" ]]; then
    rc=0
  elif [[ -e "$out/checkpoint/state.json" ]]; then
    $PY bin/deep_rfm --out "$out" --resume --no-progress; rc=$?
  else
    # shellcheck disable=SC2086
    $PY bin/deep_rfm $nargs --out "$out" --overwrite --no-progress; rc=$?
  fi
  if [[ $rc -eq 0 ]]; then
    $PY -m dnc_jax.report.rfm export "$out" "$DOCS/$next" || failed[$next]=1
  else
    failed[$next]=1
  fi
  echo "== $next: exit $rc after $((SECONDS - t0)) s"
done
echo "== queue done ($(date -u +%H:%M:%S)); failed: ${!failed[*]}"
