"""Registers, spills and shared memory of the split-K decode kernels, compiled for the H100/H200 (sm_90) on any
machine: Triton compiles ahead of time without a GPU, the arguments specialised as the JIT specialises them at a
launch (pointers 16-byte aligned, integers divisible by 16 hinted, integers equal to 1 made constants), and
cuobjdump (shipped with Triton) reads the cubin. From those, how many programs of each launch one SM can hold
(registers: 64K a SM, allocated 256 a warp; shared memory: 228 KB a SM, 1 KB reserved a program; 64 warps):
a launch asking for more programs an SM than fit runs in waves. The fp8 kernels also with a register cap (Triton's
`maxnreg`), which ptxas meets by spilling.

    PYTHONPATH=. python3 bench/scripts/kernel_resources.py --out bench/results/decode_kernel_resources_sm90.json
    PYTHONPATH=. python3 bench/scripts/kernel_resources.py --gemv-epilogue --out bench/results/gemv_epilogue_sm90.json

Shapes: Llama-3-8B's decode (head_dim 128, 4 query heads a KV head) at 128K, duo's layer (4 + 4 KV heads, a ring of
320 keys) for the two-group kernel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

T, RING, D = 131072, 320, 128
REGS_PER_SM, SMEM_PER_SM, WARPS_PER_SM = 65536, 233472, 64


def usage(fn, ptrs: dict, ints: dict, consts: dict, warps: int, stages: int, maxnreg: int | None = None,
          floats: tuple[str, ...] = ("scale", "eps"), with_ptx: bool = False):
    """Compile `fn` for sm_90 with these argument types and values; its registers, stack and shared memory (and
    with `with_ptx`, the PTX as well). `floats`: the arguments the JIT types fp32."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, attrs, constexprs = {}, {}, dict(consts)
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in ptrs:
            sig[name] = ptrs[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in floats:  # the float arguments
            sig[name] = "fp32"
        elif ints[name] == 1:  # the JIT makes an integer argument equal to 1 a constant
            sig[name], constexprs[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    ck = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=warps, num_stages=stages, maxnreg=maxnreg))
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(ck.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    fields = dict(x.split(":") for x in next(line for line in out.splitlines() if "REG:" in line).split()
                  if ":" in x and x.split(":")[1].isdigit())
    regs, static = int(fields["REG"]), int(fields.get("SHARED", 0))
    smem = ck.metadata.shared + static
    per_warp = -(-regs * 32 // 256) * 256
    fit = min(REGS_PER_SM // (per_warp * warps), SMEM_PER_SM // (smem + 1024), WARPS_PER_SM // warps)
    res = dict(registers=regs, stack_bytes=int(fields.get("STACK", 0)), shared_bytes=smem, programs_per_sm_fit=fit)
    return (res, ck.asm["ptx"]) if with_ptx else res


def gemv_epilogue_rows() -> list[dict]:
    """gate_up's fused GEMV (Llama-3-8B, 28672 x 4096, the MLP norm from its sum of squares, folded weights) as the
    plain GEMV, with the SwiGLU epilogue on [gate; up] (two tiles a program, 14336 rows apart) and on interleaved rows
    (kernels.GATE_UP_INTERLEAVED: one tile), each also with one reduction after the K loop (kernels.GEMV_DEFER_REDUCE):
    registers, and in the PTX the global loads and the barriers (each cross-warp reduction of a tile's dot products
    goes through shared memory between two)."""
    import re
    from collections import Counter

    from sedpa_compress.runtime import kernels

    ptrs = dict(X="*bf16", W="*bf16", Y="*bf16", R="*bf16", NW="*bf16", SSI="*i64", SSO="*i64")
    base = dict(BLOCK_K=1024, NORM=True, SWIGLU=False, RESIDUAL=False, ONE_SHOT=False, GDC=False, NORM_SS=True,
                SS_OUT=False, SS_INT=True, NORM_W=False, SWIGLU_OUT=False, SWIGLU_PAIRS=False, DEFER_REDUCE=False)
    rows = []
    for variant, consts, n in (("plain, 2 rows", dict(BLOCK_N=2), 28672),
                               ("epilogue on [gate; up], 1 activation row", dict(BLOCK_N=1, SWIGLU_OUT=True), 14336),
                               ("epilogue on [gate; up], 2 activation rows", dict(BLOCK_N=2, SWIGLU_OUT=True), 14336),
                               ("epilogue on interleaved rows, 2 rows", dict(BLOCK_N=2, SWIGLU_PAIRS=True), 28672),
                               ("plain, 2 rows, deferred reduction", dict(BLOCK_N=2, DEFER_REDUCE=True), 28672),
                               ("epilogue on [gate; up], 1 activation row, deferred reduction",
                                dict(BLOCK_N=1, SWIGLU_OUT=True, DEFER_REDUCE=True), 14336),
                               ("epilogue on interleaved rows, 2 rows, deferred reduction",
                                dict(BLOCK_N=2, SWIGLU_PAIRS=True, DEFER_REDUCE=True), 28672)):
        res, asm = usage(kernels._gemv_fused, ptrs, dict(N=n, K=4096, swn=4096), {**base, **consts}, 4, 3,
                         floats=("eps", "ss_scale"), with_ptx=True)
        loads = Counter(re.findall(r"ld\.global[.\w]*", asm))
        rows.append(dict(kernel="gemv_fused gate_up", variant=variant, num_warps=4, block_k=1024, num_stages=3,
                         **res, ptx_global_loads=dict(loads), ptx_barriers=asm.count("bar.sync")))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def shapes(fp8: bool) -> tuple[dict, dict, dict, dict]:
    """(one-group pointers, ints; two-group pointers, ints) for duo / full at 128K."""
    cache = "*u8" if fp8 else "*bf16"
    scale = "*bf16" if fp8 else "*i64"  # bf16 caches pass the length tensor where the scales would go
    ptr1 = dict(Q="*bf16", K=cache, V=cache, LEN="*i64", IDX="*i64", ACC="*fp32", M="*fp32", L="*fp32", KS=scale,
                VS=scale)
    sc1 = dict(sksb=8 * T, sksh=T, skst=1, svsb=8 * T, svsh=T, svst=1) if fp8 else \
        dict.fromkeys("sksb sksh skst svsb svsh svst".split(), 0)
    ints1 = dict(sqb=4096, sqh=512, sqg=128, skb=8 * T * D, skh=T * D, skt=D, svb=8 * T * D, svh=T * D, svt=D, sib=0,
                 sih=0, H=8, **sc1)
    ptr2 = dict(Q="*bf16", K1=cache, V1=cache, LEN1="*i64", KS1=scale, VS1=scale, K2=cache, V2=cache, LEN2="*i64",
                KS2=scale, VS2=scale, ACC="*fp32", M="*fp32", L="*fp32")
    names = "s1ksb s1ksh s1kst s1vsb s1vsh s1vst s2ksb s2ksh s2kst s2vsb s2vsh s2vst".split()
    sc2 = dict(zip(names, (4 * T, T, 1, 4 * T, T, 1, 4 * RING, RING, 1, 4 * RING, RING, 1))) if fp8 else \
        dict.fromkeys(names, 0)
    ints2 = dict(sqb=4096, sqh=512, sqg=128, s1kb=4 * T * D, s1kh=T * D, s1kt=D, s1vb=4 * T * D, s1vh=T * D, s1vt=D,
                 s2kb=4 * RING * D, s2kh=RING * D, s2kt=D, s2vb=4 * RING * D, s2vh=RING * D, s2vt=D, B=1, H=8, H1=4,
                 **sc2)
    return ptr1, ints1, ptr2, ints2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gemv-epilogue", action="store_true",
                    help="only gate_up's fused GEMV: plain, SwiGLU epilogue on [gate; up] and on interleaved rows, "
                         "each also with the deferred reduction")
    args = ap.parse_args()
    from sedpa_compress.bench.results import git_commit
    from sedpa_compress.runtime import kernels

    if args.gemv_epilogue:
        rows = gemv_epilogue_rows()
        result = dict(benchmark="gemv-epilogue-resources", device="none: Triton's ahead-of-time compile for sm_90 "
                      "(H100 / H200) on a CPU machine, cuobjdump --dump-resource-usage, and the PTX",
                      git_commit=git_commit(), created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                      command="PYTHONPATH=. python3 bench/scripts/kernel_resources.py " + " ".join(sys.argv[1:]),
                      settings=dict(weight="gate_up 28672 x 4096 bf16, the MLP norm from an int64 sum of squares, "
                                    "folded norm weights", triton=__import__("triton").__version__),
                      rows=rows)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    rows = []
    for fp8, warps, block_n, stages in itertools.product((False, True), (4, 8), (32, 64, 128), (2, 3)):
        ptr1, ints1, ptr2, ints2 = shapes(fp8)
        common = dict(G=4, G_PAD=16, D=D, FP8=fp8, GDC=False, BLOCK_N=block_n)
        kinds = [("one-group", kernels._decode_partial, ptr1, ints1,
                  dict(common, SPLITS=64, INDEXED=False))]
        for one_loop in (False, True):
            kinds.append((f"two-group{', one loop' if one_loop else ''}", kernels._decode_partial2, ptr2, ints2,
                          dict(common, SPLITS=99, S1=99, S2=1, ONE_LOOP=one_loop)))
        for kernel, fn, ptrs, ints, consts in kinds:
            row = dict(kernel=kernel, kv_dtype="fp8" if fp8 else "bf16", num_warps=warps, block_n=block_n,
                       num_stages=stages, **usage(fn, ptrs, ints, consts, warps, stages))
            rows.append(row)
            print(json.dumps(row), flush=True)
    # fp8 with a register cap (Triton's maxnreg): spills traded for programs an SM
    for (block_n, stages), cap in itertools.product(((128, 3), (128, 2), (64, 3)), (168, 128)):
        ptr1, ints1, ptr2, ints2 = shapes(True)
        common = dict(G=4, G_PAD=16, D=D, FP8=True, GDC=False, BLOCK_N=block_n)
        for kernel, fn, ptrs, ints, consts in (
                ("one-group", kernels._decode_partial, ptr1, ints1,
                 dict(common, SPLITS=64, INDEXED=False)),
                ("two-group, one loop", kernels._decode_partial2, ptr2, ints2,
                 dict(common, SPLITS=99, S1=99, S2=1, ONE_LOOP=True))):
            row = dict(kernel=kernel, kv_dtype="fp8", num_warps=4, block_n=block_n, num_stages=stages, maxnreg=cap,
                       **usage(fn, ptrs, ints, consts, 4, stages, cap))
            rows.append(row)
            print(json.dumps(row), flush=True)
    launches = {k: dict(v, programs_per_sm_asked=kernels.DECODE_PROGRAMS_PER_SM[k])
                for k, v in kernels.DECODE_LAUNCH.items()}
    result = dict(benchmark="decode-kernel-resources", device="none: Triton's ahead-of-time compile for sm_90 "
                  "(H100 / H200) on a CPU machine, cuobjdump --dump-resource-usage", git_commit=git_commit(),
                  created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                  command="PYTHONPATH=. python3 bench/scripts/kernel_resources.py " + " ".join(sys.argv[1:]),
                  settings=dict(shapes=f"head_dim {D}, 4 query heads a KV head, {T} keys; two-group: 4 + 4 KV heads, "
                                f"a ring of {RING}", limits=dict(registers_per_sm=REGS_PER_SM,
                                                                  shared_bytes_per_sm=SMEM_PER_SM,
                                                                  warps_per_sm=WARPS_PER_SM),
                                launches_then=launches),
                  rows=rows)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
