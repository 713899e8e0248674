#!/usr/bin/env bash
# The network figures of docs/reproduction.md and docs/networks.md, drawn by bin/figures
# from the committed summaries docs/runs/net_<group>_s* and palette-compressed into
# docs/figures/net_<group>_{nc1_decomposition,training}.png.
#
#   bash bench/net_figures.sh [GROUP ...]   # default: every net_* group in docs/runs
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
groups=("$@")
if [[ ${#groups[@]} -eq 0 ]]; then
  mapfile -t groups < <(ls -d docs/runs/net_*_s[0-9]* 2>/dev/null | sed 's#docs/runs/##; s#_s[0-9]*$##' | sort -u)
fi
for g in "${groups[@]}"; do
  runs=(docs/runs/"$g"_s[0-9]*)
  [[ -e "${runs[0]}" ]] || { echo "no docs/runs/${g}_s*; skipped"; continue; }
  out="runs/figs/$g"
  $PY bin/figures "${runs[@]}" --out "$out" --formats png --overwrite
  for stem in nc1_decomposition training; do
    src=$(ls "$out"/*_"$stem".png 2>/dev/null | head -1)
    [[ -n "$src" ]] || continue
    $PY -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(64).save(sys.argv[2], optimize=True)" \
      "$src" "docs/figures/${g}_${stem}.png"
    echo "docs/figures/${g}_${stem}.png"
  done
done
