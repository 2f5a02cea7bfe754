#!/usr/bin/env bash
# One device call (≤ 10 min): whole-step decode times at 128K (Llama-3-8B geometry, random weights, 50% retrieval
# heads) under launch overrides (bench/scripts/decode_split_rule.py), one queue a GPU: two side by side on a 2-GPU
# machine, QUEUE0 alone on one GPU (QUEUE1=none, the default now). Each entry is NAME=OVERRIDES[@MODES[@KV]] (MODES default full,duo,sedpa-w; KV default bf16),
# entries separated by ';'. QUEUE1 may start with "tests;" to run the GPU tests of the launch choices first.
#   SEDPA_GIT_COMMIT=<hash> OUT=... bash bench/scripts/gpu_decode_sweep.sh
#   QUEUE0='base=;pdl=--pdl' QUEUE1='tests;oneshot=--gemv-block-k 4096' OUT=... bash bench/scripts/gpu_decode_sweep.sh
#   CPU dry run of the plumbing: DRY=1 QUEUE0='base=' QUEUE1='exact=--rounding exact@duo' OUT=/tmp/sw \
#     PATH=.venv/bin:$PATH bash bench/scripts/gpu_decode_sweep.sh
# QUEUE0=none or QUEUE1=none leaves that GPU free for another job of the same call.
# $OUT gets sweep.tar: every JSON and log, and summary.txt (one line a row: name, mode, kv, ms, floor ratio).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/gpu_decode_sweep}; mkdir -p "$OUT"
W=$(mktemp -d); R=$W/sweep; mkdir -p "$R"
T0=$(date +%s); END=${END:-570}
left() { local n=$(( END - ($(date +%s) - T0) )); echo $(( n > 5 ? n : 5 )); }
CTX=${CTX:-128k}
BENCH="bench efficiency --config llama-3-8b --random-weights --contexts $CTX --peers none --retrieval-ratio 0.5
  --rank-ratio 0.85 --sink 64 --recent 256 --window 8192 --chunk 8192 --decode-tokens 64"
if [[ -n ${DRY:-} ]]; then  # the plumbing on a CPU: a 3-layer random Llama, tiny contexts, no GPU tests
  python3 -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
from conftest import build_tiny
Path('/tmp/sedpa_dry_model/config.json').exists() or build_tiny('llama', Path('/tmp/sedpa_dry_model'), layers=3)"
  BENCH="bench efficiency --model /tmp/sedpa_dry_model --device cpu --contexts 256 --peers none --retrieval-ratio 0.5
    --rank-ratio 0.85 --sink 4 --recent 16 --window 64 --chunk 128 --decode-tokens 4"
fi
# the default queue, for a one-GPU machine (QUEUE1 none, nothing else on the machine): two defaults rows, the noise
# floor that any candidate row is read against. Sweep 10's candidates (gate_up interleaved: on; the Triton prefill
# merge: on; one reduction after each GEMV's K loop: off) are decided (bench/results/decode_launch_sweep10_h200.json);
# a new candidate goes in as NAME=OVERRIDES twice, between and after the defaults rows.
QUEUE0=${QUEUE0:-"base=;base2="}
QUEUE1=${QUEUE1:-none}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/device.txt" 2>/dev/null || echo "no GPU" > "$R/device.txt"
echo "${SEDPA_GIT_COMMIT:-unknown}" > "$R/commit.txt"

run_queue() {  # $1 GPU, $2 queue ("none": leave that GPU to another job of the call)
  [[ $2 == none ]] && return
  export CUDA_VISIBLE_DEVICES=$1
  IFS=';' read -ra entries <<< "$2"
  for e in "${entries[@]}"; do
    [[ $(left) -lt 40 ]] && { echo "[gpu$1] out of time before: $e" >> "$R/queue$1.log"; break; }
    if [[ $e == tests ]]; then
      timeout $(( $(left) - 30 )) python3 -m pytest tests/test_runtime_gpu.py -q -p no:cacheprovider -m gpu -rA \
        -k "programmatic or split_k or mode_logits or decode_linear or rope_append or graph or fp8 or tidal or fused_glue or two_group" \
        > "$R/gpu_tests.log" 2>&1
      echo "[gpu$1] tests: $(tail -1 "$R/gpu_tests.log")" >> "$R/queue$1.log"
      continue
    fi
    name=${e%%=*}; rest=${e#*=}
    IFS='@' read -r over modes kv <<< "$rest"
    modes=${modes:-full,duo,sedpa-w}; kv=${kv:-bf16}
    # shellcheck disable=SC2086
    timeout $(( $(left) - 10 )) python3 bench/scripts/decode_split_rule.py $over $BENCH --attention "$modes" \
      --kv-dtype "$kv" --out "$R/$name.json" > "$R/$name.log" 2>&1
    echo "[gpu$1] $name ($over @ $modes @ $kv): rc $? at $(( $(date +%s) - T0 )) s" >> "$R/queue$1.log"
  done
}
run_queue 0 "$QUEUE0" &
run_queue 1 "$QUEUE1" &
wait
python3 - "$R" > "$R/summary.txt" <<'PY'
import json, sys
from pathlib import Path
rows = []
for p in sorted(Path(sys.argv[1]).glob("*.json")):
    d = json.loads(p.read_text())
    for r in d.get("rows", []):
        kv = "fp8" if "--kv-dtype fp8" in d.get("command", "") else "bf16"
        rows.append((p.stem, r["mode"], kv, r["context"], r["decode_ms"], r.get("prefill_s")))
        print(f"{p.stem:14s} {r['mode']:8s} {kv:5s} {r['context']:7d} {r['decode_ms']:7.3f} ms  x{r['floor_ratio']:.3f} floor"
              f"  prefill {r.get('prefill_s', float('nan')):7.3f} s")
# each row against the default launch's ("base" for bf16, "fp8" for fp8 caches) of the same mode and context
base = {(m, kv, c): (ms, pf) for name, m, kv, c, ms, pf in rows if name == ("base" if kv == "bf16" else "fp8")}
print("against the default launch (negative: faster), decode / prefill:")
for name, m, kv, c, ms, pf in rows:
    b = base.get((m, kv, c))
    if b and name not in ("base", "fp8"):
        pre = f"{100 * (pf / b[1] - 1):+6.2f}%" if pf and b[1] else "   n/a"
        print(f"  {name:14s} {m:8s} {kv:5s} {c:7d} {100 * (ms / b[0] - 1):+6.2f}%  {pre}")
PY
cat "$R"/queue*.log "$R/summary.txt"
tar -C "$W" -cf "$OUT/sweep.tar" sweep
