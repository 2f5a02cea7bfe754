#!/usr/bin/env bash
# Issue 6 acceptance on the embedded sedpa-tiny, on one GPU: build the SEDPA artifact (rank ratio 0.85),
# then NIAH (1k..16k x 10 depths) and perplexity for every mode, side by side:
#   full, streaming, duo (the pattern's recipe ratio), sedpa-s, sedpa-w (on the artifact), tidal;
# then the artifact's decode speed per mode and `sedpa bench report`'s trade-off table (issue 12), and tidal
# against full at 1K-32K (bench/results/niah_tidal_<name>.json).
#
#   run: bash bench/scripts/gpu_accuracy.sh            (the lead runs it on the device; results to $OUT)
#
# Wall-clock guarded (BUDGET, default 570 s): each step gets what is left, and a step cut short leaves its
# finished cells in bench/results/*.cells.jsonl (inside the tarball), so running the script again with
# those files in the tree resumes instead of starting over. Everything lands in $OUT/accuracy.tgz
# (unpack at the repo root: bench/results/{niah,ppl}_sedpa-tiny.*) plus the log and a summary.
# The reduced CPU run (bench/results/*_sedpa-tiny-cpu.*), with the venv's python3 first on PATH:
#   DEVICE=cpu BUDGET=3600 LENGTHS=1k:4k:4 SAMPLES=1 SEQ_LEN=4096 WINDOWS=2 TAIL=256 WINDOW=2048 NAME=sedpa-tiny-cpu \
#   OUT=/tmp/acc bash bench/scripts/gpu_accuracy.sh
# A dry run on any model: MODEL=DIR PATTERN=P ART=DIR DEVICE=cpu LENGTHS=256,512 DEPTHS=3 SEQ_LEN=256 TAIL=32 NAME=dry
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp/sedpa-accuracy}
mkdir -p "$OUT" bench/results
BUDGET=${BUDGET:-570}
START=$(date +%s)
left() { echo $(( BUDGET - 25 - ($(date +%s) - START) )); }  # 25 s kept for packing the results
PATTERN=${PATTERN:-recipes/patterns/sedpa-tiny.pattern.json}
ART=${ART:-out/sedpa-tiny-sedpa-r085}
MODES=full,streaming,duo,sedpa-s,sedpa-w,tidal
LENGTHS=${LENGTHS:-1k:16k:8}
DEPTHS=${DEPTHS:-10}
SAMPLES=${SAMPLES:-2}  # needles per (length, depth): one needle per length makes whole columns pass or fail together
SEQ_LEN=${SEQ_LEN:-16384}
TAIL=${TAIL:-512}
DEVICE=${DEVICE:-cuda}
MODEL_ARGS=${MODEL:+--model $MODEL}  # empty: the embedded sedpa-tiny
NAME=${NAME:-sedpa-tiny}
WINDOWS=${WINDOWS:-4}
WINDOW_ARGS=${WINDOW:+--window $WINDOW}  # sedpa-w's window; empty: the artifact's (8192)
LOG="$OUT/accuracy.log"
SEDPA="python3 -m sedpa_compress"
exec > >(tee -a "$LOG") 2>&1

nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
[ -f "$PATTERN" ] || { echo "missing $PATTERN (the heads engineer's sedpa-tiny pattern)"; exit 2; }

step() {  # step NAME CMD...: run with the time that is left, report how long it took
  local name=$1; shift
  local t=$(left)
  if [ "$t" -lt 20 ]; then echo "== $name: skipped, no time left"; return 1; fi
  echo "== $name (limit ${t}s): $*"
  local s=$(date +%s)
  timeout --signal=INT --kill-after=10 "$t" "$@"
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - s ))s"
  return $rc
}

# 1. the artifact: streaming heads' q/k/v/o low-rank at rank ratio 0.85 (skipped when already built)
if [ ! -f "$ART/config.json" ]; then
  step compress $SEDPA compress $MODEL_ARGS --pattern "$PATTERN" --rank-ratio 0.85 --out "$ART" --device "$DEVICE"
fi

# 2. needle in a haystack: 8 lengths x 10 depths x 2 needles, the same prompts for every mode
step niah $SEDPA bench niah $MODEL_ARGS --pattern "$PATTERN" --compressed "$ART" -a "$MODES" \
  --lengths "$LENGTHS" --depths "$DEPTHS" --samples "$SAMPLES" $WINDOW_ARGS --out "bench/results/niah_$NAME.json" --device "$DEVICE"

# 3. perplexity: 4 windows of 16k tokens of the bundled held-out text (tail_ppl: the last 512 tokens, tidal decodes them)
step ppl $SEDPA bench ppl $MODEL_ARGS --pattern "$PATTERN" --compressed "$ART" -a "$MODES" \
  --seq-len "$SEQ_LEN" --windows "$WINDOWS" $WINDOW_ARGS --decode-tail "$TAIL" --out "bench/results/ppl_$NAME.json" --device "$DEVICE"

# 4. decode speed of the same modes on the artifact (its pattern and factors), then the trade-off table
#    (NIAH, ppl, decode ms, KV bytes, peak memory, parameters per mode) as markdown + PNG
EFF_CONTEXTS=${EFF_CONTEXTS:-4k,16k}  # sedpa-tiny: 32K positions, less the decoded tokens
[ "$DEVICE" = cpu ] && EFF_CONTEXTS=${EFF_CONTEXTS_CPU:-512}
step efficiency $SEDPA bench efficiency --model "$ART" --contexts "$EFF_CONTEXTS" --attention full,duo,sedpa-s,sedpa-w,tidal \
  --peers none $WINDOW_ARGS --out "bench/results/efficiency_$NAME.json" --device "$DEVICE"
step report $SEDPA bench report bench/results/niah_$NAME.json bench/results/ppl_$NAME.json \
  bench/results/efficiency_$NAME.json --out "bench/results/report_$NAME.md"

# 5. tidal against full at 1K-32K (issue 12: within 5 points at every length at top-k 2048), with the
#    selection layers the pattern gives (runtime/modes/tidal.py pattern_selection_layers)
TIDAL_LENGTHS=${TIDAL_LENGTHS:-1k:32k:6}
[ "$DEVICE" = cpu ] && TIDAL_LENGTHS=${TIDAL_LENGTHS_CPU:-1k,2k}
step tidal $SEDPA bench niah $MODEL_ARGS --pattern "$PATTERN" -a full,tidal --lengths "$TIDAL_LENGTHS" \
  --depths "$DEPTHS" --samples "$SAMPLES" --out "bench/results/niah_tidal_$NAME.json" --device "$DEVICE"

tar czf "$OUT/accuracy.tgz" bench/results/niah_$NAME* bench/results/ppl_$NAME* bench/results/efficiency_$NAME* \
  bench/results/report_$NAME* $(ls bench/results/niah_tidal_$NAME* 2>/dev/null)
NAME=$NAME python3 - <<'EOF' | tee "$OUT/summary.txt"
import json, os, pathlib
for name in ("niah", "ppl"):
    p = pathlib.Path(f"bench/results/{name}_{os.environ['NAME']}.json")
    if not p.is_file():
        print(f"{name}: no result (cut short? rerun to resume)"); continue
    r = json.loads(p.read_text())
    print(f"{name} on {r['device']}:")
    for mode, s in r["summary"].items():
        if name == "niah":
            print(f"  {mode:10s} accuracy {s['accuracy']:.3f} score {s['score']:.3f} by_context {s['by_context']}")
        else:
            print(f"  {mode:10s} ppl {s['ppl']:.3f} tail_ppl {s['tail_ppl']} vs_full {s['vs_full']:+.4f}")
    S = r["summary"]
    if name == "niah" and "full" in S:  # issue 6 goals, in NIAH points (accuracy x 100)
        f = 100 * S["full"]["accuracy"]
        for mode, slack in (("duo", 1), ("sedpa-s", 2)):
            if mode in S:
                d = 100 * S[mode]["accuracy"] - f
                print(f"  goal {mode} >= full - {slack}: {d:+.1f} points -> {'met' if d >= -slack else 'MISSED'}")
        if "streaming" in S:
            print(f"  streaming vs full: {100 * S['streaming']['accuracy'] - f:+.1f} points (should be clearly lower)")
    if name == "ppl" and "full" in S:
        for mode in ("sedpa-s", "sedpa-w"):
            if mode in S:
                v = S[mode]["vs_full"]
                print(f"  goal {mode} ppl within +3%: {v:+.2%} -> {'met' if v <= 0.03 else 'MISSED'}")
p = pathlib.Path(f"bench/results/niah_tidal_{os.environ['NAME']}.json")
if p.is_file():
    S = json.loads(p.read_text())["summary"]
    if "tidal" in S and "full" in S:
        gaps = {n: round(100 * (S["tidal"]["by_context"][n] - a), 1) for n, a in S["full"]["by_context"].items()}
        worst = min(gaps.values())
        print(f"tidal vs full by length (points): {gaps}; goal within 5 at every length -> "
              f"{'met' if worst >= -5 else 'MISSED'}")
EOF
echo "total $(( $(date +%s) - START ))s"
