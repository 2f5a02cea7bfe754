#!/usr/bin/env bash
# sedpa-tiny: identify heads, heatmap, and the probe, on whatever device is there.
#   GPU (~3 min):  OUT=bench/results bash bench/scripts/tiny_heads.sh
#   CPU (~30 min): RECIPE=recipes/identify-sedpa-tiny-cpu.yaml CONTEXTS=1024,2048 SAMPLES=1 TRIALS=2 bash bench/scripts/tiny_heads.sh
# Writes $OUT/sedpa-tiny.pattern.json (+ .png heatmap) and $OUT/probe_sedpa-tiny.json (+ .png); copy the
# pattern to recipes/patterns/sedpa-tiny.pattern.json (and beside the embedded model as sedpa_pattern.json).
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
K=${K:-4}
RECIPE=${RECIPE:-recipes/identify-sedpa-tiny.yaml}
sedpa() { python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' "$@"; }
sedpa identify-heads ${MODEL:+--model "$MODEL"} --recipe "$RECIPE" --out "$OUT/sedpa-tiny.pattern.json" ${IDENTIFY_FLAGS:-}
sedpa heads show "$OUT/sedpa-tiny.pattern.json"
sedpa heads probe ${MODEL:+--model "$MODEL"} --pattern "$OUT/sedpa-tiny.pattern.json" --k "$K" \
  --contexts "${CONTEXTS:-1024,2048,4096}" --samples "${SAMPLES:-2}" --random-trials "${TRIALS:-3}" \
  --out "$OUT/probe_sedpa-tiny.json"
