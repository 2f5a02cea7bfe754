#!/usr/bin/env bash
# The CUDA runtime's GPU tests and efficiency benchmark in one call on the GPU machine.
# Usage (device): bash bench/scripts/gpu_runtime_check.sh [tests|bench|maxctx|all]   -> logs, JSON, PNG in $OUT
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-out}; mkdir -p "$OUT"
what=${1:-all}
CLI="python3 bench/scripts/efficiency_cli.py efficiency"
if python3 -c "import sedpa_compress.cli.bench" 2>/dev/null && python3 -m sedpa_compress.cli --help 2>/dev/null | grep -q bench; then
  CLI="python3 -c 'from sedpa_compress.cli import main; main()' bench efficiency"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee "$OUT/gpu.txt"
if [[ $what == all || $what == tests ]]; then
  timeout 200 python3 -m pytest tests/test_runtime_gpu.py -q -p no:cacheprovider -m gpu 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [[ $what == all || $what == bench ]]; then
  timeout 330 $CLI --config llama-3-8b --random-weights --contexts 8k,32k,64k,128k \
    --attention full,duo,sedpa-w,tidal --retrieval-ratio 0.5 --rank-ratio 0.85 --sink 64 --recent 256 \
    --window 8192 --time-budget 270 --out "$OUT/efficiency_llama-3-8b.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log"
fi
if [[ $what == all || $what == maxctx ]]; then
  timeout 200 $CLI --config llama-3-8b --random-weights --max-context --attention duo,sedpa-s,full \
    --retrieval-ratio 0.25 --rank-ratio 0.85 --time-budget 150 \
    --out "$OUT/efficiency_maxctx_llama-3-8b.json" 2>&1 | grep -v Warning | tee "$OUT/maxctx.log"
fi
