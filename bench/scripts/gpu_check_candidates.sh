#!/usr/bin/env bash
# One device call (~5 min on two GPUs): the GPU tests and the probes that judge the kernel candidates before a
# launch sweep times them in the whole step. GPU 1 runs every GPU test; GPU 0 meanwhile times each fused projection
# against its plain GEMV (gemv_probe.py --glue-only: gate_up_pairs, the chain fused_pairs_folded) and one layer's
# chunk-prefill attention with each past-block merge (prefill_attention_probe.py: runtime-triton-merge,
# runtime-compiled-merge). On a one-GPU machine the probes run first, then the tests.
#   SEDPA_GIT_COMMIT=<hash> OUT=... bash bench/scripts/gpu_check_candidates.sh
# $OUT gets gpu_tests_<commit>_h200.txt, gemv_glue_parts_<commit>_h200.json and prefill_attention_probe_<commit>_h200.json
# with their logs in probes.tar.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/gpu_check_candidates}; mkdir -p "$OUT"
C=${SEDPA_GIT_COMMIT:-unknown}
L=$(mktemp -d)
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
probes() {
  timeout 240 python3 bench/scripts/gemv_probe.py --glue-only --out "$OUT/gemv_glue_parts_${C}_h200.json" > "$L/glue.log" 2>&1
  timeout 200 python3 bench/scripts/prefill_attention_probe.py --out "$OUT/prefill_attention_probe_${C}_h200.json" \
    > "$L/prefill_attention.log" 2>&1
}
tests() {  # the torch trace's debug lines would bury the results
  timeout 420 python3 -m pytest tests -m gpu -q -p no:cacheprovider -rA 2>&1 | grep -v "DEBUG    torch.__trace" \
    > "$OUT/gpu_tests_${C}_h200.txt"
}
if [[ $gpus -ge 2 ]]; then
  (CUDA_VISIBLE_DEVICES=0 probes) &
  (CUDA_VISIBLE_DEVICES=1 tests) &
  wait
else
  probes
  tests
fi
tail -1 "$OUT/gpu_tests_${C}_h200.txt"
grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests_${C}_h200.txt" | head -20
tar -C "$L" -cf "$OUT/probes.tar" .
