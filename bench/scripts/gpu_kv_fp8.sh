#!/usr/bin/env bash
# fp8 KV caches on the GPU machine in one call (issue 13, ≤ 10 min): the GPU tests, decode speed at 32K and
# 128K with bf16 and fp8 caches (full, duo, sedpa-w; Llama-3-8B geometry), the longest context that decodes
# at retrieval ratio 0.25 with each (caches filled directly, full attention beside duo), and sedpa-tiny's
# NIAH + perplexity with each (full, duo, sedpa-w).
#   device:  SEDPA_GIT_COMMIT=<hash> OUT=... bash bench/scripts/gpu_kv_fp8.sh
#   a shorter call: STEPS=speed,accuracy NIAH_MODES=full,duo LENGTHS=1k:32k:4 DEPTHS=5 RUN_PPL=0 TOTAL=300
#   CPU dry run of the plumbing (tiny model and contexts, GPU tests skipped):
#            DRY=1 PY=.venv/bin/python OUT=/tmp/kv bash bench/scripts/gpu_kv_fp8.sh
# A call returns at most 8 files: the JSONs come back as they are, the logs in logs.tar.
# Time: at SAMPLES=5 each KV dtype's NIAH (1K-32K x 10 depths, full / duo / sedpa-w) took ~4 min on one H200 at
# f93fe74, so STEPS=accuracy alone needs TOTAL≈570; beside other work on the same GPU the fp8 NIAH was cut twice.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/gpu_kv_fp8}; mkdir -p "$OUT"; L=$(mktemp -d)
T0=$(date +%s); TOTAL=${TOTAL:-570}
left() { local n=$(( TOTAL * $1 / 100 - ($(date +%s) - T0) )); echo $(( n > 10 ? n : 10 )); }  # s to mark $1 %
PY=${PY:-python3}
SEDPA="$PY -m sedpa_compress"  # an executable command line: `timeout` cannot run a shell function
STEPS=${STEPS:-tests,speed,maxctx,accuracy}
if [[ -n $DRY ]]; then
  $PY - <<'PY'
from pathlib import Path
import sys
sys.path.insert(0, "tests")
from conftest import build_tiny
if not Path("/tmp/sedpa_dry_model/config.json").exists():
    build_tiny("llama", Path("/tmp/sedpa_dry_model"), layers=3)
PY
  GEO="--model /tmp/sedpa_dry_model --device cpu"; CTX=256,512; MAXC="--memory-budget 1.003"
  SIZES="--sink 4 --recent 16 --window 64 --chunk 128 --decode-tokens 4"
  TINY="--device cpu"; LENGTHS=256,512; DEPTHS=2; SEQ=256
else
  GEO="--config llama-3-8b --random-weights"; CTX=32k,128k; MAXC=""
  SIZES="--sink 64 --recent 256 --window 8192 --chunk 8192 --decode-tokens 64"
  TINY=""; LENGTHS=${LENGTHS:-1k:32k:6}; DEPTHS=${DEPTHS:-10}; SEQ=8192
fi
NIAH_MODES=${NIAH_MODES:-full,duo,sedpa-w}  # sedpa-tiny's NIAH modes; RUN_PPL=0 skips its perplexity
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU (dry run)"; } > "$L/device.txt"
echo "${SEDPA_GIT_COMMIT:-unknown}" > "$L/commit.txt"
[[ $STEPS == *tests* ]] && timeout $(left 18) $PY -m pytest tests/test_runtime_gpu.py -q -p no:cacheprovider -m gpu \
  -k "fp8 or flash_chunk or chunked or mode_logits or graph" -rA 2>&1 | tail -30 > "$L/gpu_tests.log"
declare -A SPEED=([bf16]=30 [fp8]=42) MAXCTX=([bf16]=53 [fp8]=64)  # marks, % of TOTAL
[[ $STEPS != *maxctx* ]] && SPEED=([bf16]=38 [fp8]=64)  # the speed rows take max-context's share
for kv in bf16 fp8; do  # decode and prefill, one JSON per KV dtype
  [[ $STEPS == *speed* ]] && timeout $(left ${SPEED[$kv]}) $SEDPA bench efficiency $GEO --contexts $CTX \
    --attention full,duo,sedpa-w,tidal --peers none --retrieval-ratio 0.5 $SIZES --kv-dtype $kv \
    --out "$OUT/efficiency_kv_${kv}_llama-3-8b.json" > "$L/speed_$kv.log" 2>&1
done
for kv in bf16 fp8; do  # the longest context that decodes
  [[ $STEPS == *maxctx* ]] && timeout $(left ${MAXCTX[$kv]}) $SEDPA bench efficiency $GEO --max-context \
    --attention duo,full --retrieval-ratio 0.25 $SIZES $MAXC --kv-dtype $kv \
    --out "$OUT/efficiency_maxctx_kv_${kv}_llama-3-8b.json" > "$L/maxctx_$kv.log" 2>&1
done
if [[ $STEPS == *accuracy* ]]; then  # sedpa-tiny: NIAH and perplexity with both KV dtypes
  [[ $NIAH_MODES == *sedpa* || ${RUN_PPL:-1} != 0 ]] && \
    timeout $(left 68) $SEDPA compress --out "$L/tiny-sedpa" --window 2048 $TINY > "$L/compress.log" 2>&1
  COMP=""; [[ -d $L/tiny-sedpa ]] && COMP="--compressed $L/tiny-sedpa"
  declare -A NIAH=([bf16]=80 [fp8]=93) PPL=([bf16]=84 [fp8]=98)
  [[ ${RUN_PPL:-1} == 0 ]] && NIAH=([bf16]=82 [fp8]=98)
  for kv in bf16 fp8; do
    timeout $(left ${NIAH[$kv]}) $SEDPA bench niah $COMP -a $NIAH_MODES --lengths $LENGTHS \
      --depths $DEPTHS --samples ${SAMPLES:-1} --kv-dtype $kv $TINY --out "$L/niah_$kv.json" > "$L/niah_$kv.log" 2>&1
    [[ ${RUN_PPL:-1} != 0 ]] && timeout $(left ${PPL[$kv]}) $SEDPA bench ppl $COMP -a full,duo,sedpa-w --seq-len $SEQ \
      --windows 2 --kv-dtype $kv $TINY --out "$L/ppl_$kv.json" > "$L/ppl_$kv.log" 2>&1
  done
  $PY - "$L" "$OUT/kv_fp8_accuracy_sedpa-tiny.json" <<'PY'
import json, sys
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {"benchmark": "kv-fp8-accuracy", "model": "sedpa-tiny", "runs": {}, "summary": {}}
for kv in ("bf16", "fp8"):
    for bench in ("niah", "ppl"):
        p = src / f"{bench}_{kv}.json"
        if p.exists():
            run = json.loads(p.read_text())
            res["runs"][f"{bench}_{kv}"] = run
            res["summary"][f"{bench}_{kv}"] = {m: {k: s.get(k) for k in ("accuracy", "exact", "ppl", "by_context") if k in s}
                                              for m, s in run.get("summary", {}).items()}
out.write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res["summary"], indent=1)[:3000])
PY
fi
tar -C "$L" -cf "$OUT/logs.tar" $(cd "$L" && ls | grep -v '^tiny-sedpa$' | grep -v '\.png$' | grep -v 'cells.jsonl$')
ls -la "$OUT"; for f in "$L"/*.log; do echo "== $f"; tail -n 8 "$f"; done
