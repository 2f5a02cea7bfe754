#!/usr/bin/env bash
# gpu_tiny_round.sh on this machine's CPU, before spending device time on a call: a fake nvidia-smi (one "GPU"),
# 512-token contexts, one depth and sample, two identification steps; every other variable passes through, e.g.
#   EVAL_ONLY=1 SWAPPED_INIT=1 SHIPPED_BLOB=... ALSO_EVAL=stage18-1 bash bench/scripts/gpu_tiny_round_dryrun.sh
# (~4 min on 2 cores). A training call's dry run needs a recipe a CPU can step (short lengths, few tokens a step).
# It exercises the script's plumbing (swaps, restores, which step runs where),
# not the timings: those only the device gives. Results land in $OUT (default /tmp/gpu_tiny_round_dryrun).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FAKE=$(mktemp -d)
cat > "$FAKE/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
case "$*" in *-L*) echo "GPU 0: CPU dry run (UUID: none)";; *) echo "CPU dry run, 0 MiB";; esac
SMI
chmod +x "$FAKE/nvidia-smi"
export PATH="$FAKE:$ROOT/.venv/bin:$PATH"  # the fake GPU, and a python3 with the project installed
export HEADS_RECIPE=${HEADS_RECIPE:-recipes/identify-sedpa-tiny-cpu.yaml}
export IDENTIFY_FLAGS=${IDENTIFY_FLAGS:---steps 2 --context-min 512 --context-max 640}
export CONTEXTS=${CONTEXTS:-512} DEPTHS=${DEPTHS:-1} SAMPLES=${SAMPLES:-1} TRIALS=${TRIALS:-1} K=${K:-2}
export OUT=${OUT:-/tmp/gpu_tiny_round_dryrun} END=${END:-1500} SEDPA_GIT_COMMIT=${SEDPA_GIT_COMMIT:-dry-run}
cd "$ROOT" && bash bench/scripts/gpu_tiny_round.sh
