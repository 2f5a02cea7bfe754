#!/usr/bin/env bash
# One device call for sedpa-tiny (≤ 10 min): GPU 0 trains the next stage from the embedded model, then
# identifies that stage's heads (full GPU recipe) and probes them; GPU 1 meanwhile runs the acceptance
# evaluation of the embedded model, then that of the new stage once it is trained. On a one-GPU machine the
# new stage's acceptance runs on GPU 0 after training (and the embedded model's is skipped, except in an
# EVAL_ONLY call: there GPU 0 runs the heads and, beside them, both acceptances one after the other).
#   SEDPA_GIT_COMMIT=<hash> RECIPE=recipes/tiny-stage6.yaml MINUTES=5 OUT=... bash bench/scripts/gpu_tiny_round.sh
# SKIP_EMBEDDED=1: skip the embedded model's acceptance (bench/results/tiny_acceptance_h200.json has it).
# DDP=1: train on both GPUs (torchrun, each GPU its own batches, gradients averaged: twice the tokens a step);
# then GPU 0 identifies the heads and GPU 1 runs the acceptance. WORKERS: data workers a process (default 12).
# ATTN: the SDPA kernel training runs (TinyTrainConfig.attention_backend; bench/scripts/tiny_train_throughput.py).
# A training-only round: NO_QUICK_EVAL=1 (no end-of-training look: the acceptance starts ~1 min sooner) and
# SKIP_HEADS=1 (heads only for a stage that will ship) leave room for MINUTES=6.2 (train ~420 s with the export,
# acceptance ~140 s to 32K). With DDP=1 and MINUTES=7 (stage 11) the acceptance was cut before 32K.
# Continuing an unshipped stage (runs/stageN/model): the call's working tree may hold 64 MiB, and the shipped
# weights already take 40 MB, so the sender puts the stage's weights in their place for the call and the
# device restores the shipped ones from git (their blob id, SHIPPED_BLOB):
#   cp runs/stage9/model/{model.safetensors,config.json} sedpa_compress/models/embedded/sedpa-tiny/   (here, before the call;
#   the config too where the stage changed the shape, e.g. grew KV heads: the shipped config comes back from git)
#   SWAPPED_INIT=1 SHIPPED_BLOB=$(git rev-parse HEAD:sedpa_compress/models/embedded/sedpa-tiny/model.safetensors) ...
#   git checkout sedpa_compress/models/embedded/sedpa-tiny/          (here, after the call)
# EXPORT_INT8=1: the new stage is stored as row-wise int8 (python -m sedpa_compress.models.int8 quantize) before
# the heads, the acceptance and the tar parts: what ships when a model of twice the parameters fills the budget
# (recipes/tiny-stage23.yaml). Such a stage continues in a later call as SWAPPED_INIT with model.int8.safetensors in
# the embedded folder and its model.safetensors removed there for the call (the tree then stays under 64 MiB).
# OVERRIDES="field=value ...": more recipe overrides for training, e.g. "schedule_span=[0.1667,0.3333]" (the part of
# one long schedule this call trains, a run split across calls) or compile_model=true.
# VALUES=<format>: after a model's acceptance, its acceptance with every value of that format too (tiny.evaluate
# --values; e.g. phrase, recipes/tiny-stage25.yaml), into acceptance_<name>_<format>.json.
# SOUP_WITH_INIT=1: after the new stage's acceptance, that of its average with the weights it continued
# (tiny.checkpoints average INIT NEW, into acceptance_soup.json): every continuation of the shipped soup scored below
# it, and an average of fine-tunes of one start often reads unseen inputs better than either (rebuild it here from the
# returned stage with the same command).
# NO_ACCEPTANCE=1: no acceptance of the new stage (a middle call of a run split across calls: MINUTES up to ~8).
# Continuing a stage kept in git history (python -m sedpa_compress.tiny.checkpoints keep ..., in an earlier session:
# the device's git is the history as the session started): INIT_CHECKPOINT=<name> restores it on the device.
# CORPUS=<name>: train on a corpus kept in history (python -m sedpa_compress.tiny.corpus keep ..., an earlier session)
# besides the bundled text: restored on the device to runs/corpus/<name> (the recipes' path, which training.json and
# the card then name) and passed as the recipe's `corpus`.
# EVAL_ONLY=1: no training; the weights to continue (SWAPPED_INIT or INIT_CHECKPOINT) are the new stage: GPU 0
# identifies its heads, GPU 1 (GPU 0 afterwards on one GPU) runs its acceptance. RECIPE is not read. ALSO_EVAL=<name>:
# the acceptance of a checkpoint kept in history too: on GPU 0 after the heads (EVAL_ONLY), else after the new stage's
# acceptance (and, on one GPU, after the embedded model's, which a training call runs there once the new stage's is
# done). Acceptance times: ~110 s to 32K one cell at a time with 4 tokens of answer room; >165 s with 24 (the
# H200 at 97b7280: 149 s for the needles alone, cut before the JSON); 56-66 s with 24 since the acceptance decodes a
# context's 30 cells in one batch (tiny.evaluate --batch; the H200 at 798e9f9).
# Before a call, bench/scripts/gpu_tiny_round_dryrun.sh runs this script here on the CPU (a fake one-GPU nvidia-smi,
# tiny contexts): a check of its plumbing (swaps, restores, which step runs where) that costs no device time.
# Training MINUTES=6.6 leaves too little of the 570 s for the heads step (cut at 8049dca): 5.5 leaves room.
# $OUT gets few files (the device returns at most 8): the new model as tar parts, and results.tar with
# every JSON, PNG and log, re-packed after each step (stage 22's last call: the device stopped it at the session's
# budget during the acceptance, after the model was exported, and the results packed only at the end were lost).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/gpu_tiny_round}; mkdir -p "$OUT"
W=$(mktemp -d); R=$W/results; mkdir -p "$R"
T0=$(date +%s); END=${END:-570}   # seconds after start by which every step has stopped
NEW=$W/run/model  # the new stage as it would ship: the heads, the acceptance and the tar parts read it
[[ -n ${EXPORT_INT8:-} && -z ${EVAL_ONLY:-} ]] && NEW+=_int8
left() { local n=$(( END - ($(date +%s) - T0) )); echo $(( n > 5 ? n : 5 )); }
pack() {  # results.tar as it stands: a call the device stops at its budget (SIGKILL, no trap) still returns what finished
  tar -C "$W" -cf "$OUT/.results.$BASHPID.tar" results 2>/dev/null && mv -f "$OUT/.results.$BASHPID.tar" "$OUT/results.tar"
}
acceptance() {  # MODEL NAME [ARGS]: the held-out acceptance of MODEL into $R/acceptance_NAME.{json,log}, stopped by END
  timeout $(left) python3 -m sedpa_compress.tiny.evaluate --model "$1" $EVAL "${@:3}" --out "$R/acceptance_$2.json" \
    > "$R/acceptance_$2.log" 2>&1
  pack
}
values_acceptance() {  # MODEL NAME: with VALUES=<format> (e.g. phrase), MODEL's acceptance with every value of it too
  [[ -n ${VALUES:-} ]] && acceptance "$1" "$2_$VALUES" --values "$VALUES"
  return 0
}
EMB=sedpa_compress/models/embedded/sedpa-tiny
EVAL="--contexts ${CONTEXTS:-1024,2048,4096,8192,16384,32768} --depths ${DEPTHS:-10} --samples ${SAMPLES:-3}"
INIT=$EMB
if [[ -n ${SWAPPED_INIT:-} ]]; then  # the tree's embedded weights are the stage to continue: move them aside
  INIT=$W/init; mkdir -p "$INIT"; cp -r "$EMB/." "$INIT/"
  git cat-file blob "${SHIPPED_BLOB:?SWAPPED_INIT needs SHIPPED_BLOB}" > "$W/shipped.safetensors" \
    && cp "$W/shipped.safetensors" "$EMB/model.safetensors" \
    && git show "HEAD:$EMB/config.json" > "$EMB/config.json" \
    && git show "HEAD:$EMB/training.json" > "$EMB/training.json" \
    || { echo "the shipped weights are not in this machine's git: the embedded acceptance is skipped"; SKIP_EMBEDDED=1; }
  rm -f "$EMB/model.int8.safetensors"  # a stage carried as int8 (EXPORT_INT8): the embedded folder is the shipped one again
fi
if [[ -n ${INIT_CHECKPOINT:-} ]]; then
  [[ -n ${SWAPPED_INIT:-} ]] && { echo "INIT_CHECKPOINT and SWAPPED_INIT both name the weights to continue: pass one"; exit 2; }
  INIT=runs/init/$INIT_CHECKPOINT  # a kept checkpoint never changes under its name: the path the card names
  [[ -d $INIT ]] || python3 -m sedpa_compress.tiny.checkpoints restore "$INIT_CHECKPOINT" --to "$INIT" || exit 2
fi
if [[ -n ${ALSO_EVAL:-} ]]; then  # one more kept checkpoint's acceptance: after the heads (EVAL_ONLY) or the new stage's
  python3 -m sedpa_compress.tiny.checkpoints restore "$ALSO_EVAL" --to "$W/also" || exit 2
fi
if [[ -n ${CORPUS:-} ]]; then  # at the recipes' own path, so the run's training.json and card name it, not a temp dir
  CORPUS_DIR=runs/corpus/$CORPUS  # a kept corpus never changes under its name: a warm machine's earlier copy serves
  [[ -d $CORPUS_DIR ]] || python3 -m sedpa_compress.tiny.corpus restore "$CORPUS" --to "$CORPUS_DIR" || exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/device.txt"
echo "${SEDPA_GIT_COMMIT:-unknown}" > "$R/commit.txt"
TRAIN=(python3 -m sedpa_compress)
read -ra items <<< "${OVERRIDES:-}"  # split on spaces, never globbed ("[...]" is a pattern to the shell)
EXTRA=(); for o in "${items[@]}"; do EXTRA+=(--override "$o"); done
[[ -n ${CORPUS:-} ]] && EXTRA+=(--override "corpus=$CORPUS_DIR")
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
EVAL_GPU=1
if [[ $NGPU -lt 2 ]]; then  # one GPU: the acceptance waits for training on the same GPU, never beside it
  [[ -n ${DDP:-} ]] && { echo "DDP=1 needs two GPUs; this machine has $NGPU: run without DDP"; exit 2; }
  if [[ -z ${EVAL_ONLY:-} ]]; then  # an eval-only call has no training to slow: the baseline runs beside the heads
    # a training call: the embedded model's acceptance waits for the new stage's (batched, ~1 min each to 32K)
    # (none in a middle call of a split run, NO_ACCEPTANCE: there is no new acceptance to set it beside)
    [[ -z ${SKIP_EMBEDDED:-} && -z ${NO_ACCEPTANCE:-} ]] && { echo "one GPU: the embedded model's acceptance runs after the new stage's"; EMBEDDED_AFTER=1; }
    SKIP_EMBEDDED=1
  fi
  EVAL_GPU=0
fi
if [[ -n ${DDP:-} ]]; then  # train on both GPUs (torchrun, one process a GPU); GPU 1 evaluates only afterwards
  TRAIN=(python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m sedpa_compress)
  [[ -z ${SKIP_EMBEDDED:-} ]] && echo "DDP=1: the embedded model's acceptance is skipped (GPU 1 trains)"; SKIP_EMBEDDED=1
fi
(
  export CUDA_VISIBLE_DEVICES=0; [[ -n ${DDP:-} ]] && export CUDA_VISIBLE_DEVICES=0,1
  if [[ -n ${EVAL_ONLY:-} ]]; then  # the weights given are the stage: heads and acceptance only
    mkdir -p "$W/run" && cp -r "$INIT" "$W/run/model" && touch "$W/trained"
    export CUDA_VISIBLE_DEVICES=0
    RECIPE="${HEADS_RECIPE:-recipes/identify-sedpa-tiny.yaml}" MODEL="$NEW" OUT="$R" timeout $(left) \
      bash bench/scripts/tiny_heads.sh > "$R/heads.log" 2>&1
    pack
    [[ -n ${ALSO_EVAL:-} ]] && acceptance "$W/also" "$ALSO_EVAL"
    echo "[gpu0 done at $(( $(date +%s) - T0 )) s]" >> "$R/heads.log"
    exit 0
  fi
  timeout $(( $(left) - 60 )) "${TRAIN[@]}" \
    train-tiny --recipe "$RECIPE" --out "$W/run" --max-minutes "${MINUTES:-5}" --override num_workers=${WORKERS:-12} ${ATTN:+--override attention_backend=$ATTN} "${EXTRA[@]}" --init-from "$INIT" \
    ${NO_QUICK_EVAL:+--no-eval} > "$R/train.log" 2>&1
  [[ -z ${NO_QUICK_EVAL:-} ]] && cp "$W/run/model/eval.json" "$R/train_quick_eval.json"
  cp "$W/run/model/training.json" "$R/training.json"
  [[ -n ${EXPORT_INT8:-} ]] && python3 -m sedpa_compress.models.int8 quantize "$W/run/model" --to "$NEW" >> "$R/train.log" 2>&1
  pack; touch "$W/trained"
  export CUDA_VISIBLE_DEVICES=0
  tar -C "$(dirname "$NEW")" -cf - "$(basename "$NEW")" | split -b 15M - "$OUT/model.tar.part-"
  [[ -n ${SKIP_HEADS:-} ]] && exit 0
  # tiny_heads.sh reads RECIPE as its identification recipe: give it its own (HEADS_RECIPE), not training's
  RECIPE="${HEADS_RECIPE:-recipes/identify-sedpa-tiny.yaml}" MODEL="$NEW" OUT="$R" timeout $(left) \
    bash bench/scripts/tiny_heads.sh > "$R/heads.log" 2>&1
  pack
  echo "[gpu0 done at $(( $(date +%s) - T0 )) s]" >> "$R/heads.log"
) &
(
  export CUDA_VISIBLE_DEVICES=$EVAL_GPU
  [[ -z ${SKIP_EMBEDDED:-} ]] && acceptance "$EMB" embedded
  while [ ! -e "$W/trained" ] && [ $(left) -gt 60 ]; do sleep 5; done
  [ -e "$W/trained" ] && [[ -z ${NO_ACCEPTANCE:-} ]] && acceptance "$NEW" new && values_acceptance "$NEW" new
  if [ -e "$W/trained" ] && [[ -n ${SOUP_WITH_INIT:-} ]]; then  # the new stage averaged with the weights it continued
    python3 -m sedpa_compress.tiny.checkpoints average "$INIT" "$NEW" --to "$W/soup" > "$R/soup.log" 2>&1 \
      && acceptance "$W/soup" soup
  fi
  [[ -n ${EMBEDDED_AFTER:-} ]] && acceptance "$EMB" embedded
  [[ -z ${SKIP_EMBEDDED:-} ]] && values_acceptance "$EMB" embedded
  [[ -n ${ALSO_EVAL:-} && -z ${EVAL_ONLY:-} ]] && acceptance "$W/also" "$ALSO_EVAL"
  echo "[gpu1 done at $(( $(date +%s) - T0 )) s]" >> "$R/acceptance_new.log"
) &
wait
pack
for f in "$R"/*.log; do echo "== $f"; tail -n 5 "$f"; done
ls -la "$OUT"
