#!/usr/bin/env bash
# fp8 KV caches on the GPU machine in one call (issue 13, ≤ 10 min): the GPU tests, decode speed at 128K
# with bf16 and fp8 caches (full, duo, sedpa-w; Llama-3-8B geometry), the longest context that decodes at
# retrieval ratio 0.25 with each, and sedpa-tiny's NIAH + perplexity with each (full, duo, sedpa-w).
#   SEDPA_GIT_COMMIT=<hash> OUT=... bash bench/scripts/gpu_kv_fp8.sh
# A call returns at most 8 files: everything but the JSONs travels in logs.tar.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/gpu_kv_fp8}; mkdir -p "$OUT"; L=$(mktemp -d)
T0=$(date +%s); TOTAL=${TOTAL:-570}
left() { local n=$(( TOTAL * $1 / 100 - ($(date +%s) - T0) )); echo $(( n > 10 ? n : 10 )); }
sedpa() { python3 -c 'import sys; sys.argv[0] = "sedpa"; from sedpa_compress.cli import main; main()' "$@"; }
SIZES="--sink 64 --recent 256 --window 8192 --chunk 8192 --decode-tokens 64"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$L/device.txt"
[[ ${STEPS:-tests} == *tests* ]] && timeout $(left 20) python3 -m pytest tests/test_runtime_gpu.py \
  -q -p no:cacheprovider -m gpu -k "fp8 or flash_chunk or chunked or mode_logits" -rA 2>&1 | tail -30 > "$L/gpu_tests.log"
# decode and prefill at 32K / 128K, both KV dtypes in one JSON each
declare -A SPEED=([bf16]=32 [fp8]=45) MAXC=([bf16]=57 [fp8]=70) ACC=([bf16]=84 [fp8]=96)  # % of TOTAL
STEPS=${STEPS:-tests,speed,maxctx,accuracy}
for kv in bf16 fp8; do
  [[ $STEPS == *speed* ]] && timeout $(left ${SPEED[$kv]}) sedpa bench efficiency --config llama-3-8b --random-weights \
    --contexts 32k,128k --attention full,duo,sedpa-w --peers none --retrieval-ratio 0.5 $SIZES --kv-dtype $kv \
    --out "$OUT/efficiency_kv_${kv}_llama-3-8b.json" > "$L/speed_$kv.log" 2>&1
done
for kv in bf16 fp8; do
  [[ $STEPS == *maxctx* ]] && timeout $(left ${MAXC[$kv]}) sedpa bench efficiency --config llama-3-8b --random-weights \
    --max-context --attention duo,full --retrieval-ratio 0.25 $SIZES --kv-dtype $kv \
    --out "$OUT/efficiency_maxctx_kv_${kv}_llama-3-8b.json" > "$L/maxctx_$kv.log" 2>&1
done
# accuracy on sedpa-tiny: NIAH and perplexity with both KV dtypes in one run each (the artifact for sedpa-w)
if [[ $STEPS == *accuracy* ]]; then
  timeout $(left 80) sedpa compress --out "$L/tiny-sedpa" --window 2048 > "$L/compress.log" 2>&1
  for kv in bf16 fp8; do
    timeout $(left ${ACC[$kv]}) sedpa bench niah --compressed "$L/tiny-sedpa" -a full,duo,sedpa-w \
      --lengths 1k:32k:6 --depths 10 --samples 1 --kv-dtype $kv --out "$L/niah_$kv.json" > "$L/niah_$kv.log" 2>&1
    timeout 60 sedpa bench ppl --compressed "$L/tiny-sedpa" -a full,duo,sedpa-w --seq-len 8192 --windows 2 \
      --kv-dtype $kv --out "$L/ppl_$kv.json" > "$L/ppl_$kv.log" 2>&1
  done
  python3 - "$L" "$OUT/kv_fp8_accuracy_sedpa-tiny.json" <<'PY'
import json, sys
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {"benchmark": "kv-fp8-accuracy", "model": "sedpa-tiny", "runs": {}}
for kv in ("bf16", "fp8"):
    for b in ("niah", "ppl"):
        p = src / f"{b}_{kv}.json"
        if p.exists():
            res["runs"][f"{b}_{kv}"] = json.loads(p.read_text())
out.write_text(json.dumps(res, indent=1) + "\n")
PY
fi
tar -C "$L" -cf "$OUT/logs.tar" $(cd "$L" && ls | grep -v '^tiny-sedpa$')
ls -la "$OUT"; tail -n 12 "$L"/*.log
