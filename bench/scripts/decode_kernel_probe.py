"""Which launch should the split-K decode attention kernel use on this GPU? Times
`kernels.decode_attention` for one Llama-3-8B layer (8 KV heads, 4 query heads each, head_dim 128) over
bf16 and fp8 caches at 32K and 128K keys, for every launch in a small grid (keys per block, warps,
pipeline stages: `kernels.DECODE_LAUNCH`), each inside a CUDA graph (as the decode step runs it, so no
launch overhead is timed), and checks each against the fp32 reference.

Why: on the H200 at 4eb03a3 the fp8 kernel read half the bytes of the bf16 one but took longer (149 against
135 us a layer at 128K, bench/results/decode_profile_full_fp8_128k_h200.txt), so fp8 decode was slower
than bf16 (9.27 against 8.72 ms a token); the launch is the first thing to try.

    PYTHONPATH=. python3 bench/scripts/decode_kernel_probe.py --out $OUT/decode_kernel_probe.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GRID = {"BLOCK_N": (64, 128), "num_warps": (4, 8), "num_stages": (2, 3, 4)}


def graph_us(fn, reps: int = 50) -> float:
    """Median microseconds of `fn` replayed in a CUDA graph (one graph of `reps` calls, 5 replays)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.runtime import kernels
    from sedpa_compress.runtime.cache import dequantize_fp8, quantize_fp8

    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="32768,131072")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dev, hkv, g, d = torch.device("cuda"), 8, 4, 128
    default = {k: dict(v) for k, v in kernels.DECODE_LAUNCH.items()}
    rows = []
    for t in [int(x) for x in args.contexts.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(1, hkv, g, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        n = torch.tensor([t], device=dev)
        (kb, ks), (vb, vs) = quantize_fp8(k), quantize_fp8(v)
        ws = kernels.DecodeWorkspace(1, hkv, g, d, t, dev)
        out = torch.empty_like(q)
        cases = {
            "bf16": (lambda: kernels.decode_attention(q, k, v, n, d ** -0.5, workspace=ws, out=out),
                     kernels.decode_attention_ref(q.float(), k.float(), v.float(), n, d ** -0.5),
                     2 * k.numel() * 2),
            "fp8": (lambda: kernels.decode_attention(q, kb, vb, n, d ** -0.5, workspace=ws, out=out, k_scale=ks,
                                                     v_scale=vs),
                    kernels.decode_attention_ref(q.float(), dequantize_fp8(kb, ks, torch.float32),
                                                 dequantize_fp8(vb, vs, torch.float32), n, d ** -0.5),
                    2 * (kb.numel() + ks.numel() * ks.element_size())),
        }
        for dtype, (fn, want, nbytes) in cases.items():
            for values in itertools.product(*GRID.values()):
                launch = dict(zip(GRID, values))
                kernels.DECODE_LAUNCH[dtype] = launch
                row = {"context": t, "kv_dtype": dtype, **launch, "default": launch == default[dtype]}
                try:
                    us = graph_us(fn)
                    err = float((fn().float() - want).norm() / want.norm())
                    row.update(us=round(us, 2), tb_per_s=round(nbytes / (us / 1e6) / 1e12, 3), rel_err=round(err, 5))
                except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run (shared memory, registers)
                    row["error"] = str(exc).splitlines()[0][:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
            kernels.DECODE_LAUNCH[dtype] = default[dtype]
        del q, k, v, kb, vb
        torch.cuda.empty_cache()
    best = {}
    for r in rows:
        key = f"{r['kv_dtype']}@{r['context']}"
        if "us" in r and r["rel_err"] < 1e-2 and (key not in best or r["us"] < best[key]["us"]):
            best[key] = {k: r[k] for k in (*GRID, "us", "tb_per_s")}
    result = make_result("decode-kernel-probe", model="llama-3-8b geometry (one layer: 8 KV heads x 4, head_dim 128)",
                         settings={"grid": GRID, "default": default, "timing": "median of 5 replays of a CUDA graph "
                                   "of 50 calls", "torch": torch.__version__},
                         rows=rows, summary={"fastest": best},
                         command="PYTHONPATH=. python3 bench/scripts/decode_kernel_probe.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
