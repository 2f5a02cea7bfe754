#!/usr/bin/env bash
# Train sedpa-tiny on the GPU machine in one call (≤ 10 min): train, evaluate (needles full vs streaming,
# held-out perplexity), then identify its heads; everything the repo needs comes back in $OUT.
#   stage 1: bash bench/scripts/gpu_train_tiny.sh
#   stage 2: RECIPE=recipes/tiny-stage2.yaml INIT=runs/init IDENTIFY=0 bash bench/scripts/gpu_train_tiny.sh
#   (MINUTES=7 by default; INIT: a model folder whose weights to start from, carried to the machine)
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu_train_tiny}; mkdir -p "$OUT"
MINUTES=${MINUTES:-7}
sedpa() { python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
sedpa train-tiny --recipe "${RECIPE:-recipes/tiny.yaml}" --out runs/gpu --max-minutes "$MINUTES" \
  --override num_workers=12 ${INIT:+--init-from "$INIT"} 2>&1 | tee "$OUT/train.log"
M=runs/gpu/model
cp "$M/eval.json" "$OUT/tiny_eval.json" 2>/dev/null
# identification on the fresh model, bounded so the call always returns
[ "${IDENTIFY:-1}" = 1 ] && timeout 90 python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' \
  identify-heads --model "$M" --recipe recipes/identify-sedpa-tiny.yaml --out "$OUT/sedpa-tiny.pattern.json" \
  2>&1 | tail -20 > "$OUT/identify.log"
# the model folder (bf16 weights ~40 MB) in parts under the 16 MiB per-file limit
tar -C runs/gpu -cf - model | split -b 15M - "$OUT/model.tar.part-"
ls -la "$OUT"
