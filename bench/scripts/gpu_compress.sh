#!/usr/bin/env bash
# Compression wall time and peak memory on the GPU machine, Llama-3-8B geometry (issue 2).
# Run from the repo root on the device:  bash bench/scripts/gpu_compress.sh  (results under $OUT)
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -m sedpa_compress compress --config llama-3-8b --random-weights --scope all --rank-ratio 0.85 \
  --out /tmp/llama-3-8b-random-sedpa --overwrite --report-json "$OUT/compress_llama-3-8b_h100.json" 2>&1 | tail -25
du -sh /tmp/llama-3-8b-random-sedpa
python3 - <<'PY'
import time, torch, sedpa_compress
t = time.perf_counter()
m = sedpa_compress.load("/tmp/llama-3-8b-random-sedpa", device="cuda")
print(f"artifact load (manifest sha256 + safetensors) {time.perf_counter() - t:.1f} s")
ids = torch.randint(0, 1000, (1, 512), device="cuda")
with torch.inference_mode():
    print("logits finite:", bool(torch.isfinite(m.model(ids).logits).all()))
PY
