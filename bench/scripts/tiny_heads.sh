#!/usr/bin/env bash
# sedpa-tiny: identify heads (recipe), heatmap, and the probe, on whatever device is there (GPU: ~2 min).
#   OUT=bench/results bash bench/scripts/tiny_heads.sh      (then copy the pattern to recipes/patterns/)
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
K=${K:-4}
sedpa() { python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' "$@"; }
sedpa identify-heads ${MODEL:+--model "$MODEL"} --recipe recipes/identify-sedpa-tiny.yaml --out "$OUT/sedpa-tiny.pattern.json" ${IDENTIFY_FLAGS:-}
sedpa heads show "$OUT/sedpa-tiny.pattern.json"
sedpa heads probe ${MODEL:+--model "$MODEL"} --pattern "$OUT/sedpa-tiny.pattern.json" --k "$K" --contexts "${CONTEXTS:-1024,2048,4096}" \
  --samples "${SAMPLES:-2}" --out "$OUT/probe_sedpa-tiny.json"
