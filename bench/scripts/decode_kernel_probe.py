"""Which launch and how many splits should the split-K decode attention kernels use on this GPU? Times
`kernels.decode_attention` (one head group: full attention) and `kernels.decode_attention_groups` (two
groups in one launch: duo / sedpa, here `--busy` of the 8 KV heads over the whole context, 4 by default,
and the others over a 320-key ring) for one Llama-3-8B layer (8 KV heads, 4 query heads each, head_dim 128) over bf16 and fp8 caches at
8K (sedpa-w's window), 32K and 128K keys. For each: a grid of launches (keys per block, warps, pipeline
stages: `kernels.DECODE_LAUNCH`, where the two-group kernel's own entry is "<dtype>-two") at the default
split count, then the two fastest launches at half and twice the splits (`kernels.DECODE_PROGRAMS_PER_SM`).
Each is timed inside a CUDA graph (as the decode step runs it, so no launch overhead is timed) and checked
against the fp32 reference.

Why: at facc421 the one-group fp8 kernel went from 144 to 97 us a layer at 128K with 128-key blocks and 3
stages (bf16: 130), but duo's two-group kernel with that launch takes 88 us in fp8 against 74 in bf16
(bench/results/decode_profile_duo_{fp8,bf16}_128k_h200.txt): its splits are sized for 4 busy heads (128
splits of 8 blocks), where the one-group kernel runs 16 blocks a split.

    PYTHONPATH=. python3 bench/scripts/decode_kernel_probe.py --out $OUT/decode_kernel_probe.json
    PYTHONPATH=. python3 bench/scripts/decode_kernel_probe.py --kernels two --busy 2,4,6 --contexts 131072 --out ...

At bb60464 the probe (4 busy heads) chose half the splits for the two-group kernel, which the whole duo step
(2-6 busy heads a layer) found slower in bf16 until the split count was rounded to the nearest power of two
(bench/results/decode_splits_duo_h200.json): `--busy 2,4,6` times the kernel at the counts a real layer has.
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
SPLIT_FACTORS = (0.5, 2.0)  # the best launches of each case again at these multiples of the default splits
RING = 320  # the ring heads' keys in the two-group case (sink 64 + recent 256)


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


def _wall_us(fn) -> float:
    import time

    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e6


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.runtime import kernels
    from sedpa_compress.runtime.cache import dequantize_fp8, quantize_fp8

    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="8192,32768,131072")  # 8K: sedpa-w's window
    ap.add_argument("--kernels", default="one,two", help="one (full attention), two (duo's two groups), or both")
    ap.add_argument("--busy", default="4", help="the two-group kernel's busy heads (of 8: heads over the whole "
                    "context), comma-separated: a duo layer has 2-6 in the synthetic 50%% pattern, and a split count "
                    "tuned at 4 alone misled (bench/results/decode_splits_duo_h200.json)")
    ap.add_argument("--splits", default="", help="explicit split counts (comma-separated), each timed with the default "
                    "launch and the two fastest, besides the default count's half and double: short caches (sedpa-w's "
                    "8K window) take at most keys / (kernels.MIN_SPLIT_BLOCKS x BLOCK_N) splits by the rule")
    ap.add_argument("--launches", choices=("grid", "default"), default="grid",
                    help="grid: every launch of GRID; default: only kernels.DECODE_LAUNCH's (a shorter call)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry", action="store_true", help="the plumbing on the CPU (reference path, wall-clock times)")
    args = ap.parse_args()
    dev, hkv, g, d = torch.device("cpu" if args.dry else "cuda"), 8, 4, 128
    timer = (lambda fn: _wall_us(fn)) if args.dry else graph_us
    explicit = {int(x) for x in args.splits.split(",") if x}
    default = {k: dict(v) for k, v in kernels.DECODE_LAUNCH.items()}
    rows = []

    def ref(q, k, v, n, ks=None, vs=None):
        if ks is not None:
            k, v = dequantize_fp8(k, ks, torch.float32), dequantize_fp8(v, vs, torch.float32)
        return kernels.decode_attention_ref(q.float(), k.float(), v.float(), n, d ** -0.5)

    for t in [int(x) for x in args.contexts.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(1, hkv, g, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        n = torch.tensor([t], device=dev)
        out = torch.empty_like(q)
        cases = [(kernel, busy) for kernel in args.kernels.split(",")
                 for busy in ([hkv] if kernel == "one" else [int(b) for b in args.busy.split(",")])]
        for kernel, busy in cases:
            for dtype in ("bf16", "fp8"):
                keys = t
                if kernel == "one":
                    kk, vv = k, v
                else:  # KV heads 0..busy-1 over the whole context, the others over a ring of RING keys
                    kk, vv = k[:, :busy], v[:, :busy]
                    kr, vr, nr = k[:, busy:, :RING].contiguous(), v[:, busy:, :RING].contiguous(), \
                        torch.tensor([RING], device=dev)
                if dtype == "fp8":
                    (kq, ks), (vq, vs) = quantize_fp8(kk.contiguous()), quantize_fp8(vv.contiguous())
                    nbytes = 2 * (kq.numel() + ks.numel() * ks.element_size())
                else:
                    kq, vq, ks, vs = kk.contiguous(), vv.contiguous(), None, None
                    nbytes = 2 * kq.numel() * 2
                if kernel == "one":
                    want = ref(q, kq, vq, n, ks, vs)
                    call = lambda ws: kernels.decode_attention(q, kq, vq, n, d ** -0.5, workspace=ws, out=out,  # noqa: E731
                                                               k_scale=ks, v_scale=vs)
                else:
                    if dtype == "fp8":
                        (krq, krs), (vrq, vrs) = quantize_fp8(kr), quantize_fp8(vr)
                    else:
                        krq, vrq, krs, vrs = kr, vr, None, None
                    want = torch.cat([ref(q[:, :busy], kq, vq, n, ks, vs),
                                      ref(q[:, busy:], krq, vrq, nr, krs, vrs)], dim=1)
                    groups = [(kq, vq, n, ks, vs), (krq, vrq, nr, krs, vrs)]
                    call = lambda ws: kernels.decode_attention_groups(q, groups, d ** -0.5, workspace=ws, out=out)  # noqa: E731

                key = kernels.launch_key(dtype, two_groups=kernel == "two")

                def measure(launch: dict, splits: int | None) -> dict:
                    # the two-group kernel is probed through its own entry (kept only while it is measured)
                    name = f"{dtype}-two" if kernel == "two" else dtype
                    kernels.DECODE_LAUNCH[name] = launch
                    ws = kernels.DecodeWorkspace(1, hkv, g, d, keys, dev, busy_heads=busy, kv_dtype=dtype, splits=splits,
                                                 two_groups=kernel == "two",
                                                 group_keys=(keys, RING) if kernel == "two" else None)
                    row = {"kernel": kernel, "context": t, "kv_dtype": dtype, "busy_heads": busy, **launch,
                           "splits": ws.splits,
                           "default": launch == default[key] and splits is None}
                    try:
                        us = timer(lambda: call(ws))
                        err = float((call(ws).float() - want).norm() / want.norm())
                        row.update(us=round(us, 2), tb_per_s=round(nbytes / (us / 1e6) / 1e12, 3), rel_err=round(err, 5))
                    except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run (shared memory, registers)
                        row["error"] = str(exc).splitlines()[0][:200]
                    finally:
                        kernels.DECODE_LAUNCH.clear()
                        kernels.DECODE_LAUNCH.update({k: dict(v) for k, v in default.items()})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    return row

                grid = (itertools.product(*GRID.values()) if args.launches == "grid"
                        else [tuple(default[key][k] for k in GRID)])
                base = [measure(dict(zip(GRID, values)), None) for values in grid]
                ok = sorted((r for r in base if "us" in r and r["rel_err"] < 1e-2), key=lambda r: r["us"])[:2]
                for r in ok:  # the two fastest launches at other split counts
                    counts = {int(r["splits"] * f) for f in SPLIT_FACTORS} | explicit
                    for splits in sorted(counts - {r["splits"]}):
                        if 1 <= splits <= 256:
                            measure({k: r[k] for k in GRID}, splits)
    best = {}
    for r in rows:
        key = f"{r['kernel']}:{r['kv_dtype']}@{r['context']}" + (f"/busy{r['busy_heads']}" if r["kernel"] == "two" else "")
        if "us" in r and r["rel_err"] < 1e-2 and (key not in best or r["us"] < best[key]["us"]):
            best[key] = {k: r[k] for k in (*GRID, "splits", "us", "tb_per_s")}
    result = make_result("decode-kernel-probe", model="llama-3-8b geometry (one layer: 8 KV heads x 4, head_dim 128)",
                         settings={"grid": GRID if args.launches == "grid" else "the default launch", "split_factors": SPLIT_FACTORS,
                                   "explicit_splits": sorted(explicit), "min_split_blocks": kernels.MIN_SPLIT_BLOCKS, "ring_keys": RING, "default": default,
                                   "programs_per_sm": dict(kernels.DECODE_PROGRAMS_PER_SM),
                                   "timing": "median of 5 replays of a CUDA graph of 50 calls", "torch": torch.__version__},
                         rows=rows, summary={"fastest": best},
                         command="PYTHONPATH=. python3 bench/scripts/decode_kernel_probe.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
