#!/usr/bin/env bash
# Train sedpa-tiny on the GPU machine in one call (≤ 10 min): train, a quick evaluation at the end, and
# (optionally) identify its heads; the model comes back in $OUT as tar parts under the 16 MiB file limit,
# the logs and JSONs as results.tar.
#   stage 3 (today's recipe, from the shipped model):
#     RECIPE=recipes/tiny-stage3.yaml INIT=sedpa_compress/models/embedded/sedpa-tiny IDENTIFY=0 bash bench/scripts/gpu_train_tiny.sh
#   stage 1 from scratch: bash bench/scripts/gpu_train_tiny.sh
#   (MINUTES=7 by default; INIT: a model folder whose weights and tokenizer to start from)
set -uo pipefail
# The GPU machine's copy of the tree carries a stale .git: pass SEDPA_GIT_COMMIT=<the commit sent> so the
# result JSONs name the code that ran.
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu_train_tiny}; mkdir -p "$OUT"
MINUTES=${MINUTES:-7}
RUN=${RUN:-runs/gpu}
sedpa() { python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
echo "${SEDPA_GIT_COMMIT:-unknown (pass SEDPA_GIT_COMMIT)}" > "$OUT/commit.txt"
sedpa train-tiny --recipe "${RECIPE:-recipes/tiny.yaml}" --out "$RUN" --max-minutes "$MINUTES" \
  --override num_workers=12 ${INIT:+--init-from "$INIT"} 2>&1 | tee "$OUT/train.log"
M=$RUN/model
cp "$M/eval.json" "$OUT/tiny_eval.json" 2>/dev/null
cp "$M/training.json" "$OUT/training.json" 2>/dev/null
[ "${IDENTIFY:-1}" = 1 ] && timeout 90 python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' \
  identify-heads --model "$M" --recipe recipes/identify-sedpa-tiny.yaml --out "$OUT/sedpa-tiny.pattern.json" \
  2>&1 | tail -20 > "$OUT/identify.log"
# the model folder (bf16 weights ~40 MB) in parts under the 16 MiB per-file limit; a device call
# returns at most 8 files, so the small ones travel as one tar
tar -C "$RUN" -cf - model | split -b 15M - "$OUT/model.tar.part-"
small=$(cd "$OUT" && ls | grep -v '^model.tar.part-' | grep -v '^results.tar$')
[ -n "$small" ] && (cd "$OUT" && tar -cf results.tar $small && rm -f $small)
ls -la "$OUT"
