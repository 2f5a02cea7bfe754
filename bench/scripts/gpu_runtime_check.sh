#!/usr/bin/env bash
# The CUDA runtime on the GPU machine in one call: GPU tests, the efficiency benchmark (all modes and
# contexts, Llama-3-8B geometry), the --max-context search at retrieval ratio 0.25, the prefill attention
# probe (bench/scripts/prefill_attention_probe.py) and a short decode profile (PROFILE_MODE=sedpa-w ...). Every step has its own wall-clock limit so the whole call ends in ~560 s, and every step
# leaves its log/JSON under $OUT even when it is cut off (the benchmark rewrites its JSON after each row).
#
#   device:  OUT=... bash bench/scripts/gpu_runtime_check.sh     (CHUNK=16384: the prefill chunk, default 8192)
#   CPU dry run of the plumbing (tiny model, tiny contexts, GPU tests skipped):
#            DRY=1 OUT=/tmp/out bash bench/scripts/gpu_runtime_check.sh
set -o pipefail
# The GPU machine's copy of the tree carries a stale .git: pass SEDPA_GIT_COMMIT=<the commit sent> so the
# result JSONs name the code that ran.
export PYTHONUNBUFFERED=1 PYTHONPATH=. TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out}; mkdir -p "$OUT"
PY=${PY:-python3}
T0=$(date +%s)
TOTAL=${TOTAL:-560}   # the whole call's wall-clock budget; the steps' marks scale with it
mark() { echo $(( TOTAL * $1 / 100 )); }
left() { local n=$(( ${1} - ($(date +%s) - T0) )); echo $(( n > 10 ? n : 10 )); }  # seconds to mark $1 (>= 10)
CLI="$PY -m sedpa_compress bench efficiency"

if [[ -n $DRY ]]; then
  # tiny stand-in for the 8B geometry: a 3-layer random Llama written once
  $PY - <<'EOF'
from pathlib import Path
import sys
sys.path.insert(0, "tests")
from conftest import build_tiny
if not Path("/tmp/sedpa_dry_model/config.json").exists():
    build_tiny("llama", Path("/tmp/sedpa_dry_model"), layers=3)
EOF
  MODEL="--model /tmp/sedpa_dry_model --device cpu"
  CTX=256,512; SIZES="--sink 4 --recent 16 --window 64 --top-k 32 --chunk 128 --decode-tokens 4"
  MAXC="--memory-budget 1.003"; REFMAX=512
else
  MODEL="--config llama-3-8b --random-weights"
  CTX=${CTX:-8k,32k,64k,128k}; SIZES="--sink 64 --recent 256 --window 8192 --top-k 2048 --chunk ${CHUNK:-8192} --decode-tokens 64"
  MAXC=""; REFMAX=${REFMAX:-131072}
fi
MODES=${MODES:-full,duo,sedpa-w,tidal,sedpa-s}
PEERS=${PEERS:-transformers-eager,transformers-static-compile}
STEPS=${STEPS:-tests,bench,maxctx,probe,profile}   # which steps to run (a short call takes tests,bench; +kernels)

{ nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  | tee "$OUT/env.txt"

# 1. every GPU test (skipped without CUDA): the runtime against the fp32 reference, the efficiency rows, the
#    FlexAttention backend of head identification
if [[ $STEPS == *tests* ]]; then
timeout $(left $(mark 35)) $PY -m pytest tests -q \
  -p no:cacheprovider -m gpu --timeout 100 -rA 2>&1 | grep -v -i -E "warning:|warnings\.warn" | tee "$OUT/gpu_tests.log" | tail -40
echo "[tests done at $(( $(date +%s) - T0 )) s]"
fi

# 2. efficiency: every mode and context in one run (goal modes first; duo and the plain transformers
#    reference rows come last so a time cut drops them first)
if [[ $STEPS == *bench* ]]; then
timeout $(left $(mark 75)) $CLI $MODEL --contexts $CTX --attention $MODES --peers $PEERS --retrieval-ratio 0.5 \
  --rank-ratio 0.85 $SIZES --reference-max $REFMAX --time-budget $(( $(left $(mark 75)) - 45 )) \
  --out "$OUT/efficiency_llama-3-8b.json" 2>&1 | grep -v -i warning | tee "$OUT/bench.log" | tail -45
$PY -c "
import json, sys
from pathlib import Path
from sedpa_compress.bench.efficiency import plot
p = Path('$OUT/efficiency_llama-3-8b.json')
if p.exists() and not p.with_suffix('.png').exists():
    plot(json.loads(p.read_text()), p.with_suffix('.png'))  # the run was cut: plot what it measured
" 2>&1 | tail -3
echo "[bench done at $(( $(date +%s) - T0 )) s]"
fi

# 3. the longest context that decodes, retrieval ratio 0.25 (bf16 weights and KV)
[[ $STEPS == *maxctx* ]] && timeout $(left $(mark 88)) $CLI $MODEL --max-context --attention duo,full --retrieval-ratio 0.25 $SIZES $MAXC \
  --time-budget $(( $(left $(mark 88)) - 40 )) --out "$OUT/efficiency_maxctx_llama-3-8b.json" 2>&1 \
  | grep -v -i warning | tee "$OUT/maxctx.log" | tail -12
echo "[max-context done at $(( $(date +%s) - T0 )) s]"

# 4. which attention kernel the full-attention chunk prefill should use (8K chunks at 0-120K of past)
if [[ -z $DRY && $STEPS == *probe* ]]; then
  timeout $(left $(mark 94)) $PY bench/scripts/prefill_attention_probe.py --out "$OUT/prefill_attention_probe.json" 2>&1 \
    | grep -v -i warning | tail -12
fi
# 4b. which launch the split-K decode kernel should use (bf16 and fp8 caches; STEPS=...,kernels)
if [[ -z $DRY && $STEPS == *kernels* ]]; then
  timeout $(left $(mark 97)) $PY bench/scripts/decode_kernel_probe.py --out "$OUT/decode_kernel_probe.json" 2>&1 \
    | grep -v -i warning | tail -6
fi
# 4c. whether a Triton GEMV beats cuBLAS for the decode's projections (STEPS=...,gemv)
if [[ -z $DRY && $STEPS == *gemv* ]]; then
  timeout $(left $(mark 98)) $PY bench/scripts/gemv_probe.py --out "$OUT/gemv_probe.json" 2>&1 | grep -v -i warning | tail -4
fi
# 5. where a decode step's time goes (PROFILE_MODE, default full; PROFILE_KV bf16|fp8; PROFILE_CONTEXT, default
#    64K): top kernels, eager step
if [[ -z $DRY && $STEPS == *profile* ]]; then
  timeout $(left $TOTAL) $PY bench/scripts/runtime_profile.py --mode "${PROFILE_MODE:-full}" --kv-dtype "${PROFILE_KV:-bf16}" \
    --context "${PROFILE_CONTEXT:-65536}" \
    --out "$OUT/decode_profile_${PROFILE_MODE:-full}_${PROFILE_KV:-bf16}.txt" 2>&1 | grep -v -i warning | tail -30
fi
# 6. where one prefill chunk's time goes (PREFILL_MODE, default duo, the last 8K chunk of 128K; STEPS=...,prefillprof)
if [[ -z $DRY && $STEPS == *prefillprof* ]]; then
  timeout $(left $TOTAL) $PY bench/scripts/runtime_profile.py --prefill --mode "${PREFILL_MODE:-duo}" --context 131072 \
    --out "$OUT/prefill_profile_${PREFILL_MODE:-duo}.txt" 2>&1 | grep -v -i warning | tail -30
fi
echo "[all done at $(( $(date +%s) - T0 )) s]"
# a device call returns at most 8 files: the logs and text reports travel as one tar
(cd "$OUT" && logs=$(ls | grep -E '\.(log|txt)$') && [ -n "$logs" ] && tar -cf logs.tar $logs && rm -f $logs)
ls -la "$OUT"
