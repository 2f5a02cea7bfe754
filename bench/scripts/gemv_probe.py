"""Would a Triton GEMV beat cuBLAS for the batch-1 decode's projections? Times `kernels.gemv` over a grid
of launches (rows per program, keys per block, warps, stages) against `F.linear` (cuBLAS) for the
Llama-3-8B projections (qkv 6144 x 4096, o 4096 x 4096, gate_up 28672 x 4096, down 4096 x 14336),
each inside a CUDA graph, and checks each against fp32. Why: in a duo decode step at 128K the qkv and o
GEMVs reach 77% and 67% of copy bandwidth and o adds a split-K reduce kernel
(bench/results/decode_profile_duo_bf16_128k_h200.txt): ~6 us a layer that a single-pass kernel might save.

    PYTHONPATH=. python3 bench/scripts/gemv_probe.py --out $OUT/gemv_probe.json

It also times one layer's projections and glue outside attention as the decode step runs them (7 launches)
against the same work with the glue folded into the GEMVs (`kernels.gemv_fused`: 4 or 5 launches), which
would remove ~3 launches and their graph gaps a layer if it wins (`layer_chain_us`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "scripts"))

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
# block_k 4096: one block as wide as K for qkv / o / gate_up (the one-shot GEMV, whose weights load before a
# PDL wait); kernels.gemv clamps a block wider than K to K's next power of two
GRID = {"block_n": (2, 4, 8, 16), "block_k": (512, 1024, 4096), "num_warps": (4, 8), "num_stages": (2, 3)}
COLD_BYTES = 200 * 2**20


def main() -> None:
    from decode_kernel_probe import graph_us

    from sedpa_compress.bench.efficiency import copy_bandwidth
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.runtime import kernels

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--glue-only", action="store_true",
                    help="only the fused GEMVs against plain ones (glue_parts, ~1 min), not the launch grid and chains")
    args = ap.parse_args()
    dev = torch.device("cuda")
    bw = copy_bandwidth(dev)
    rows, best = [], {}
    parts = glue_parts(dev, graph_us, bw)
    rows += parts
    for name, (n, k) in ({} if args.glue_only else SHAPES).items():
        torch.manual_seed(0)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        want = F.linear(x.float(), w.float())[0]
        floor_us = w.numel() * 2 / bw * 1e6
        # copies of the weight, cycled through call by call, that hold 4x the 50 MB L2 together: one weight
        # replayed alone stays in L2 (o at 245b089 timed below its HBM floor), where a decode step's never does
        copies = [w] + [w.clone() for _ in range(max(0, math.ceil(COLD_BYTES / (w.numel() * 2)) - 1))]
        nxt = itertools.cycle(copies).__next__
        cublas = graph_us(lambda: F.linear(x, nxt()))
        rows.append({"shape": name, "kernel": "cublas", "us": round(cublas, 2), "x_floor": round(cublas / floor_us, 3)})
        print(json.dumps(rows[-1]), flush=True)
        for values in itertools.product(*GRID.values()):
            launch = dict(zip(GRID, values))
            row = {"shape": name, "kernel": "triton", **launch}
            try:
                us = graph_us(lambda: kernels.gemv(x, nxt(), **launch))
                err = float((kernels.gemv(x, w, **launch).float() - want).norm() / want.norm())
                row.update(us=round(us, 2), x_floor=round(us / floor_us, 3), rel_err=round(err, 5))
                if err < 1e-2 and (name not in best or us < best[name]["us"]):
                    best[name] = {**launch, "us": round(us, 2), "cublas_us": round(cublas, 2)}
            except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run
                row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
    layer = [] if args.glue_only else layer_chains(dev, graph_us)
    rows += layer
    result = make_result("gemv-probe", model="llama-3-8b projections (batch 1, bf16)",
                         settings={"grid": GRID, "shapes": SHAPES, "copy_bandwidth_tb_s": round(bw / 1e12, 3),
                                   "fused_launches": FUSED_LAUNCHES,
                                   "timing": "median of 5 replays of a CUDA graph of 50 calls, cycling through copies of "
                                             "the weight that hold 200 MiB together (no L2 reuse)",
                                   "torch": torch.__version__},
                         rows=rows, summary={"fastest_triton_vs_cublas": best,
                                             "layer_chain_us": {r["chain"]: r.get("us") for r in layer},
                                             "glue_parts_us": {f"{r['part']} {r['variant']} rows {r['block_n']}": r.get("us")
                                                               for r in parts}},
                         command="PYTHONPATH=. python3 bench/scripts/gemv_probe.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


def glue_parts(dev, graph_us, bw: float, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    """Each projection of the decode step as kernels.FUSED_GLUE runs it now against the plain GEMV of the same
    weight, at 2 / 4 / 8 rows a program, weights cycled through copies (no L2 reuse), and the whole chain of a
    layer (o + residual + sum of squares, norm + gate_up with the SwiGLU epilogue, down + residual + sum, norm +
    qkv) against the four plain GEMVs: where the fused GEMVs' 123-124 us a layer (the 7bebe55 profiles) goes above
    the plain GEMVs' 108. Also gate_up without the epilogue and down recomputing SwiGLU (the launch before
    SWIGLU_EPILOGUE), gate_up's epilogue at half the rows a program (kernels.EPILOGUE_BLOCK_N) and on interleaved
    rows (kernels.GATE_UP_INTERLEAVED), qkv with its norm's weight folded into the columns
    (kernels.FOLD_NORM_WEIGHTS), and the chain with interleaved rows and folded norms. Each fused output is checked
    against the eager glue in fp32 (`dtype` fp32: the CPU test in Triton's interpreter, whose bf16 casts do not
    round as the GPU's do)."""
    from sedpa_compress.runtime import kernels
    from sedpa_compress.runtime.model import _rms_norm, _silu_mul

    torch.manual_seed(2)
    bf = dict(device=dev, dtype=dtype)
    hid, inter, eps = SHAPES["o"][0], SHAPES["down"][1], 1e-5
    x, r = torch.randn(hid, **bf), torch.randn(hid, **bf)
    nw = torch.rand(hid, **bf) + 0.5
    act, gu = torch.randn(inter, **bf), torch.randn(2 * inter, **bf)
    ss_in = (x.float() ** 2).sum().reshape(1)  # as the decode step keeps it: int64 fixed point under SS_UNITS
    ss_in = (ss_in.double() * kernels.SS_UNITS).round().long() if kernels.SS_UNITS else ss_in
    ss_out = torch.zeros(1, device=dev, dtype=ss_in.dtype)

    def cold(n, k):
        w = torch.randn(n, k, **bf) * 0.02
        copies = [w] + [w.clone() for _ in range(max(0, math.ceil(COLD_BYTES / (w.numel() * 2)) - 1))]
        return w, itertools.cycle(copies).__next__

    weights = {name: cold(*shape) for name, shape in SHAPES.items()}
    normed = (_rms_norm(x.float()[None], nw.float(), eps)[0]).to(dtype)
    unit_normed = (_rms_norm(x.float()[None], torch.ones_like(nw, dtype=torch.float32), eps)[0]).to(dtype)
    # part: (weight, input for the plain GEMV, the fused call given a weight and a launch, the fp32 expectation)
    parts = {
        "o": ("o", x, lambda w, L: kernels.gemv_fused(x, w, residual=r, ss_out=ss_out, **L),
              lambda w: x.float() @ w.float().T + r.float()),
        "gate_up_epilogue": ("gate_up", x, lambda w, L: kernels.gemv_fused(x, w, norm_weight=nw, norm_ss=ss_in, eps=eps,
                                                                           swiglu_out=True, **L),
                             lambda w: _silu_mul((normed.float() @ w.float().T)[None])[0]),
        # one activation row a program where the launch has 2 (kernels.EPILOGUE_BLOCK_N): as many weight rows as
        # the plain GEMV's programs read
        "gate_up_epilogue_half": ("gate_up", x, lambda w, L: kernels.gemv_fused(
            x, w, norm_weight=nw, norm_ss=ss_in, eps=eps, swiglu_out=True, **{**L, "block_n": max(1, L["block_n"] // 2)}),
                                  lambda w: _silu_mul((normed.float() @ w.float().T)[None])[0]),
        # gate_up's rows interleaved (kernels.GATE_UP_INTERLEAVED): one tile a program, block_n counting W's rows
        "gate_up_pairs": ("gate_up", x, lambda w, L: kernels.gemv_fused(x, w, norm_weight=nw, norm_ss=ss_in, eps=eps,
                                                                        swiglu_out=True, swiglu_pairs=True, **L),
                          lambda w: _silu_mul((normed.float() @ w.float().T)[None], True)[0]),
        "gate_up_before": ("gate_up", x, lambda w, L: kernels.gemv_fused(x, w, norm_weight=nw, norm_ss=ss_in, eps=eps, **L),
                           lambda w: normed.float() @ w.float().T),
        "down": ("down", act, lambda w, L: kernels.gemv_fused(act, w, residual=r, ss_out=ss_out, **L),
                 lambda w: act.float() @ w.float().T + r.float()),
        "down_swiglu_before": ("down", act, lambda w, L: kernels.gemv_fused(gu, w, swiglu=True, residual=r, ss_out=ss_out,
                                                                            **L),
                               lambda w: _silu_mul(gu.float()[None])[0] @ w.float().T + r.float()),
        "qkv": ("qkv", x, lambda w, L: kernels.gemv_fused(x, w, norm_weight=nw, norm_ss=ss_in, eps=eps, **L),
                lambda w: normed.float() @ w.float().T),
        # the norm's weight folded into the columns (kernels.FOLD_NORM_WEIGHTS): no norm weight read
        "qkv_folded": ("qkv", x, lambda w, L: kernels.gemv_fused(x, w, norm_ss=ss_in, eps=eps, **L),
                       lambda w: unit_normed.float() @ w.float().T),
    }
    rows = []
    for block_n in (2, 4, 8):
        L = {**kernels.GEMV_LAUNCH, "block_n": block_n}
        for part, (wname, xin, call, expect) in parts.items():
            w, nxt = weights[wname]
            floor_us = w.numel() * 2 / bw * 1e6
            for variant in ("plain", "fused"):
                row = {"part": part, "variant": variant, "block_n": block_n, "weight": list(w.shape)}
                try:
                    fn = (lambda: kernels.gemv_fused(xin, nxt(), **L)) if variant == "plain" else (lambda: call(nxt(), L))
                    row["us"] = round(graph_us(fn), 2)
                    row["x_floor"] = round(row["us"] / floor_us, 3)
                    if variant == "fused":
                        want = expect(w)
                        got = call(w, L).float()
                        row["rel_err"] = round(float((got - want).norm() / want.norm()), 5)
                except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run
                    row["error"] = str(exc).splitlines()[0][:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
        # the layer's chain as the decode step runs it, against the same four weights as plain GEMVs
        nx = {name: weights[name][1] for name in weights}

        def chain_plain():
            kernels.gemv_fused(x, nx["o"](), **L)
            kernels.gemv_fused(x, nx["gate_up"](), **L)
            kernels.gemv_fused(act, nx["down"](), **L)
            return kernels.gemv_fused(x, nx["qkv"](), **L)

        def chain_fused(folded: bool = False, pairs: bool = False):
            """As the decode step runs it; `folded`: the norms' weights in the columns, `pairs`: gate_up's rows
            interleaved (the defaults' candidates)."""
            norm = dict(norm_weight=None if folded else nw, norm_ss=ss_in, eps=eps)
            x1 = kernels.gemv_fused(x, nx["o"](), residual=r, ss_out=ss_out, **L)
            a1 = kernels.gemv_fused(x1, nx["gate_up"](), swiglu_out=True, swiglu_pairs=pairs, **norm, **L)
            x2 = kernels.gemv_fused(a1, nx["down"](), residual=x1, ss_out=ss_out, **L)
            return kernels.gemv_fused(x2, nx["qkv"](), **norm, **L)

        for variant, fn in (("plain", chain_plain), ("fused", chain_fused),
                            ("fused_pairs_folded", lambda: chain_fused(folded=True, pairs=True))):
            row = {"part": "layer_chain", "variant": variant, "block_n": block_n}
            try:
                row["us"] = round(graph_us(fn), 2)
            except Exception as exc:  # noqa: BLE001
                row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# the fused chains' launches: kernels.GEMV_LAUNCH (2 rows a program, the fastest for all four shapes alone at
# 3226e37, where the chains were timed with the other two only), and the two of that run
FUSED_LAUNCHES = [dict(block_n=2, block_k=1024, num_warps=4, num_stages=3),
                  dict(block_n=4, block_k=1024, num_warps=4, num_stages=3),
                  dict(block_n=8, block_k=1024, num_warps=8, num_stages=2)]


def layer_chains(dev, graph_us) -> list[dict]:
    """One decoder layer's projections and glue outside attention, as the decode step runs them today (o GEMV,
    compiled add + RMSNorm, cuBLAS gate_up, compiled SwiGLU, cuBLAS down, compiled add + RMSNorm, qkv GEMV: 7
    launches) against `kernels.gemv_fused` chains (o + residual, RMSNorm + gate_up, SwiGLU + down + residual,
    RMSNorm + qkv: 4 launches; or 5 with gate_up left to cuBLAS after a compiled RMSNorm), each in a CUDA graph."""
    import torch.nn.functional as F

    from sedpa_compress.runtime import kernels
    from sedpa_compress.runtime.model import _add_rms_norm, _rms_norm, _silu_mul

    torch.manual_seed(1)
    bf = dict(device=dev, dtype=torch.bfloat16)
    hid, inter, eps = 4096, 14336, 1e-5
    w_qkv, w_o = torch.randn(6144, hid, **bf) * 0.02, torch.randn(hid, hid, **bf) * 0.02
    w_gu, w_d = torch.randn(2 * inter, hid, **bf) * 0.02, torch.randn(hid, inter, **bf) * 0.02
    n1, n2 = torch.rand(hid, **bf) + 0.5, torch.rand(hid, **bf) + 0.5
    x, a = torch.randn(1, 1, hid, **bf), torch.randn(1, 1, hid, **bf)
    opts = dict(dynamic=False, fullgraph=True)
    add_norm, silu_mul, norm = (torch.compile(f, **opts) for f in (_add_rms_norm, _silu_mul, _rms_norm))

    def today(mlp_linear=F.linear):
        o = kernels.decode_linear(a, w_o)
        x1, h = add_norm(x, o, n1, eps)
        m = mlp_linear(silu_mul(mlp_linear(h, w_gu)), w_d)
        x2, h2 = add_norm(x1, m, n2, eps)
        return kernels.decode_linear(h2, w_qkv)

    def fused(launch, cublas_gate_up: bool):
        x1 = kernels.gemv_fused(a, w_o, residual=x, **launch)
        gu = F.linear(norm(x1.view(1, 1, hid), n1, eps), w_gu) if cublas_gate_up else \
            kernels.gemv_fused(x1, w_gu, norm_weight=n1, eps=eps, **launch)
        x2 = kernels.gemv_fused(gu, w_d, swiglu=True, residual=x1, **launch)
        return kernels.gemv_fused(x2, w_qkv, norm_weight=n2, eps=eps, **launch)

    def today_all_gemv():  # the same 7 launches with the Triton GEMV for the MLP's weights too (no cuBLAS split-K)
        saved = kernels.GEMV_MAX_WEIGHT
        kernels.GEMV_MAX_WEIGHT = w_gu.numel()
        try:
            return today(kernels.decode_linear)
        finally:
            kernels.GEMV_MAX_WEIGHT = saved

    want = today().float().flatten()
    rows = []
    cases = [("today: 7 launches", today, None), ("today, Triton GEMV for gate_up and down too", today_all_gemv, None)]
    for i, launch in enumerate(FUSED_LAUNCHES):
        for cub in (False, True):
            name = f"fused {i}: {'5 launches, gate_up cuBLAS' if cub else '4 launches'}"
            cases.append((name, lambda launch=launch, cub=cub: fused(launch, cub), launch))
    for name, fn, launch in cases:
        row = {"chain": name, **({"launch": launch} if launch else {})}
        try:
            row["us"] = round(graph_us(fn), 2)
            got = fn().float().flatten()
            row["rel_err_vs_today"] = round(float((got - want).norm() / want.norm()), 5)
        except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run
            row["error"] = str(exc).splitlines()[0][:200]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
