"""Would a Triton GEMV beat cuBLAS for the batch-1 decode's projections? Times `kernels.gemv` over a grid
of launches (rows per program, keys per block, warps, stages) against `F.linear` (cuBLAS) for the
Llama-3-8B projections (qkv 6144 x 4096, o 4096 x 4096, gate_up 28672 x 4096, down 4096 x 14336),
each inside a CUDA graph, and checks each against fp32. Why: in a duo decode step at 128K the qkv and o
GEMVs reach 77% and 67% of copy bandwidth and o adds a split-K reduce kernel
(bench/results/decode_profile_duo_bf16_128k_h200.txt): ~6 us a layer that a single-pass kernel might save.

    PYTHONPATH=. python3 bench/scripts/gemv_probe.py --out $OUT/gemv_probe.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "scripts"))

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
GRID = {"block_n": (4, 8, 16), "block_k": (512, 1024), "num_warps": (4, 8), "num_stages": (2, 3)}


def main() -> None:
    from decode_kernel_probe import graph_us

    from sedpa_compress.bench.efficiency import copy_bandwidth
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.runtime import kernels

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dev = torch.device("cuda")
    bw = copy_bandwidth(dev)
    rows, best = [], {}
    for name, (n, k) in SHAPES.items():
        torch.manual_seed(0)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        want = F.linear(x.float(), w.float())[0]
        floor_us = w.numel() * 2 / bw * 1e6
        cublas = graph_us(lambda: F.linear(x, w))
        rows.append({"shape": name, "kernel": "cublas", "us": round(cublas, 2), "x_floor": round(cublas / floor_us, 3)})
        print(json.dumps(rows[-1]), flush=True)
        for values in itertools.product(*GRID.values()):
            launch = dict(zip(GRID, values))
            row = {"shape": name, "kernel": "triton", **launch}
            try:
                us = graph_us(lambda: kernels.gemv(x, w, **launch))
                err = float((kernels.gemv(x, w, **launch).float() - want).norm() / want.norm())
                row.update(us=round(us, 2), x_floor=round(us / floor_us, 3), rel_err=round(err, 5))
                if err < 1e-2 and (name not in best or us < best[name]["us"]):
                    best[name] = {**launch, "us": round(us, 2), "cublas_us": round(cublas, 2)}
            except Exception as exc:  # noqa: BLE001 - a launch this GPU cannot run
                row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = make_result("gemv-probe", model="llama-3-8b projections (batch 1, bf16)",
                         settings={"grid": GRID, "shapes": SHAPES, "copy_bandwidth_tb_s": round(bw / 1e12, 3),
                                   "timing": "median of 5 replays of a CUDA graph of 50 calls", "torch": torch.__version__},
                         rows=rows, summary={"fastest_triton_vs_cublas": best},
                         command="PYTHONPATH=. python3 bench/scripts/gemv_probe.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
