"""`sedpa bench efficiency` with the decode's launch choices overridden (the split-K split rule, the GEMV's
launch, programmatic dependent launch), to time the whole decode step under another choice (the kernel
probe times one kernel with a fixed number of busy heads; a real duo layer has 2-6 of 8). Example, duo at
128K with bf16 caches, the two-group kernel at 2 programs an SM, floored:

    PYTHONPATH=. python3 bench/scripts/decode_split_rule.py --key bf16-two --programs-per-sm 2 --rounding floor \
        bench efficiency --config llama-3-8b --random-weights --contexts 32k,128k --attention duo --peers none \
        --retrieval-ratio 0.5 --sink 64 --recent 256 --chunk 8192 --decode-tokens 64 --out $OUT/duo_bf16.json

bench/results/decode_splits_duo_h200.json collects six such runs (bf16 / fp8; 4 or 2 programs an SM; floor or
nearest), which chose kernels.SPLIT_ROUNDING and the "<dtype>-two" entries of kernels.DECODE_PROGRAMS_PER_SM;
bench/results/decode_launch_sweep_h200.json the GEMV against cuBLAS and the programs an SM of the next session;
bench/results/decode_launch_sweep2_h200.json (bench/scripts/gpu_decode_sweep.sh) PDL, the one-shot GEMV, the fused
merge, fp8 key dots and the exact split counts; decode_launch_sweep3_h200.json the GEMV's rows a program and fp8
keys as the key dot's A operand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def switch(ap: argparse.ArgumentParser, name: str, on: tuple[str, str], off: tuple[str, str]) -> str:
    """kernels.<name> as two exclusive options, (flag, help) each, that set it True or False; neither leaves it.
    Returns `name`, the options' destination."""
    group = ap.add_mutually_exclusive_group()
    group.add_argument(on[0], dest=name, action="store_const", const=True, help=f"kernels.{name} {on[1]}")
    group.add_argument(off[0], dest=name, action="store_const", const=False, help=f"kernels.{name} {off[1]}")
    return name


def main() -> None:
    from sedpa_compress.runtime import kernels

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key", help="a kernels.DECODE_PROGRAMS_PER_SM key: bf16, fp8, bf16-two, fp8-two")
    ap.add_argument("--programs-per-sm", type=int)
    ap.add_argument("--decode-block-n", type=int, help="kernels.DECODE_LAUNCH[--key]'s keys a block")
    ap.add_argument("--decode-warps", type=int, help="kernels.DECODE_LAUNCH[--key]'s warps")
    ap.add_argument("--decode-stages", type=int, help="kernels.DECODE_LAUNCH[--key]'s pipeline stages")
    ap.add_argument("--decode-maxnreg", type=int,
                    help="a register cap for --key's kernel (Triton's maxnreg: spills traded for programs an SM)")
    ap.add_argument("--rounding", choices=kernels.SPLIT_ROUNDINGS,
                    help="kernels.SPLIT_ROUNDING for --key's kernel, or every kernel's without --key (default: the table's)")
    ap.add_argument("--gemv-max-weight", type=int, default=kernels.GEMV_MAX_WEIGHT,
                    help="kernels.GEMV_MAX_WEIGHT: 0 puts every decode projection on cuBLAS")
    ap.add_argument("--gemv-block-k", type=int, help="kernels.GEMV_LAUNCH's block_k (4096: the one-shot GEMV)")
    ap.add_argument("--gemv-block-n", type=int, help="kernels.GEMV_LAUNCH's block_n")
    ap.add_argument("--ss-fp32", action="store_true",
                    help="kernels.SS_UNITS off: the fused glue's sums of squares as fp32 atomic adds (order-dependent), "
                         "not int64 fixed point")
    ap.add_argument("--gemv-norm-block-n", type=int,
                    help="kernels.GEMV_NORM_BLOCK_N: rows a program for the fused GEMVs that apply a norm (qkv, gate_up)")
    ap.add_argument("--epilogue-block-n", type=int,
                    help="kernels.EPILOGUE_BLOCK_N: activation rows a program for gate_up's GEMV under the SwiGLU "
                         "epilogue (each reads as many gate and up rows; 1: two weight rows, as the plain GEMV)")
    ap.add_argument("--min-split-blocks", type=int,
                    help="kernels.MIN_SPLIT_BLOCKS: the fewest key blocks a split reads (fewer splits for short caches)")
    ap.add_argument("--reduce-db", type=int, help="kernels.REDUCE_DB: the split merge's head_dim columns a program at most "
                    "(16, the default since 7bebe55: 8 programs a query head instead of 1 at 64 splits or fewer; "
                    "0: uncapped)")
    switches = [switch(ap, "SWIGLU_EPILOGUE",
           ("--swiglu-epilogue", "on (the default since sweep 8): the fused glue's SwiGLU in gate_up's GEMV, down "
                                 "reads the activation"),
           ("--swiglu-in-down", "off: each of down's programs recomputes silu(gate) * up"))]
    switches.append(switch(ap, "FOLD_NORM_WEIGHTS",
           ("--fold-norm-weights", "on (the default since sweep 9): the RMSNorm weights folded into qkv_in's and "
                                   "gate_up's columns (the fused GEMVs read no norm weight)"),
           ("--unfolded-norms", "off: the fused GEMVs read the norms' weights")))
    switches.append(switch(ap, "GATE_UP_INTERLEAVED",
           ("--gate-up-interleaved", "on (the default since sweep 10): gate_up's rows stored gate_0, up_0, ... so "
                                     "the SwiGLU-epilogue GEMV reads one tile a program"),
           ("--gate-up-halves", "off: [gate; up]")))
    switches.append(switch(ap, "GEMV_DEFER_REDUCE",
           ("--gemv-defer-reduce", "on: every decode GEMV sums its products over the K blocks in registers and "
                                   "reduces across the tile once, after the loop"),
           ("--gemv-reduce-each-block", "off (the default): a cross-warp reduction every K block")))
    ap.add_argument("--prefill-merge", choices=["compiled", "triton"],
                    help="kernels.PREFILL_MERGE: the chunk prefill's merge of attention over past blocks (triton, the "
                         "default since sweep 10: kernels.merge_attention, one pass a block into an fp32 accumulator; "
                         "compiled: merge_softmax under torch.compile)")
    ap.add_argument("--pdl", action="store_true", help="kernels.PDL: programmatic dependent launch of the decode chain")
    switches.append(switch(ap, "TWO_GROUP_ONE_LOOP",
           ("--one-loop", "on (the default since f8f59e5): the two-group kernel's groups in one attention loop"),
           ("--two-loops", "off: a loop per group")))
    switches.append(switch(ap, "FUSED_GLUE",
           ("--fused-glue", "on (the default since a55ac42): norms, SwiGLU and residual adds folded into the decode "
                            "GEMVs"),
           ("--unfused-glue", "off: the compiled glue and cuBLAS for o_proj and the MLP")))
    ap.add_argument("--reduce-two-pass", action="store_true",
                    help="kernels.REDUCE_ONE_PASS off: the split merge in blocks of 64 splits over all of head_dim")
    args, rest = ap.parse_known_args()
    per_key = {"programs_per_sm": args.programs_per_sm, "BLOCK_N": args.decode_block_n,
               "num_warps": args.decode_warps, "num_stages": args.decode_stages, "maxnreg": args.decode_maxnreg}
    if (args.key is None) != all(v is None for v in per_key.values()):
        ap.error("--key goes with --programs-per-sm, --decode-block-n, --decode-warps, --decode-stages or "
                 "--decode-maxnreg, and they with --key")
    if args.key is not None:
        if args.key not in kernels.DECODE_PROGRAMS_PER_SM:
            ap.error(f"--key {args.key}: use one of {', '.join(kernels.DECODE_PROGRAMS_PER_SM)}")
        if args.programs_per_sm is not None:
            kernels.DECODE_PROGRAMS_PER_SM[args.key] = args.programs_per_sm
        launch = {k: v for k, v in per_key.items() if k != "programs_per_sm" and v is not None}
        kernels.DECODE_LAUNCH[args.key] = {**kernels.DECODE_LAUNCH[args.key], **launch}
    kernels.GEMV_MAX_WEIGHT = args.gemv_max_weight
    if args.gemv_block_k:
        kernels.GEMV_LAUNCH["block_k"] = args.gemv_block_k
    if args.gemv_block_n:
        kernels.GEMV_LAUNCH["block_n"] = args.gemv_block_n
    if args.gemv_norm_block_n:
        kernels.GEMV_NORM_BLOCK_N = args.gemv_norm_block_n
    if args.epilogue_block_n:
        kernels.EPILOGUE_BLOCK_N = args.epilogue_block_n
    if args.ss_fp32:
        kernels.SS_UNITS = None
    kernels.PDL = args.pdl
    if args.prefill_merge:
        kernels.PREFILL_MERGE = args.prefill_merge
    if args.reduce_db is not None:
        kernels.REDUCE_DB = args.reduce_db or None
    if args.min_split_blocks is not None:
        if args.min_split_blocks < 1:
            ap.error(f"--min-split-blocks {args.min_split_blocks}: use 1 or more")
        kernels.MIN_SPLIT_BLOCKS = args.min_split_blocks
    kernels.REDUCE_ONE_PASS = not args.reduce_two_pass
    for name in switches:  # neither option of a pair: the shipped default
        if getattr(args, name) is not None:
            setattr(kernels, name, getattr(args, name))
    if args.rounding:
        if args.key is None:
            kernels.SPLIT_ROUNDING = args.rounding
        else:
            table = ({k: kernels.SPLIT_ROUNDING for k in kernels.DECODE_LAUNCH} if isinstance(kernels.SPLIT_ROUNDING, str)
                     else dict(kernels.SPLIT_ROUNDING))
            kernels.SPLIT_ROUNDING = {**table, args.key: args.rounding}
    from sedpa_compress.cli import main as cli

    sys.argv = ["sedpa", *rest]
    cli()


if __name__ == "__main__":
    main()
