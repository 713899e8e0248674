#!/usr/bin/env bash
# The Deep RFM figures of docs/reproduction.md: bin/figures on the full run folders in
# runs/rfm (made by bench/rfm_queue.sh), palette-compressed into docs/figures/.
#
#   bash bench/rfm_figures.sh [GROUP ...]     # default: rfm_mnist5k_relu rfm_mnist5k_cos
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(rfm_mnist5k_relu rfm_mnist5k_cos)
for g in "${groups[@]}"; do
  runs=(runs/rfm/"$g"_s[0-9]*)
  [[ -e "${runs[0]}" ]] || { echo "no runs/rfm/${g}_s*; skipped"; continue; }
  out="runs/figs/$g"
  rm -rf "$out"   # this script's own output folder
  $PY bin/figures "${runs[@]}" --out "$out" --formats png --no-compare
  short="${g#rfm_}"
  for stem in nc1 nc2 gram gram_agop; do
    src=$(ls "$out"/*_"$stem".png 2>/dev/null | head -1)
    [[ -n "$src" ]] || continue
    $PY -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(64, method=Image.Quantize.MAXCOVERAGE).save(sys.argv[2], optimize=True)" \
      "$src" "docs/figures/${short}_${stem}.png"
    echo "docs/figures/${short}_${stem}.png"
  done
done
