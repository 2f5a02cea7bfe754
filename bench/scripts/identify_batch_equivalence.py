"""Does the recipe's sample count in half the steps (`--batch-size 2 --steps N/2`, what two GPUs run in
the time of one) find the heads the published one-sample steps find? Runs `sedpa identify-heads` twice
on the same model and recipe, N x 1 and N/2 x 2, and compares the patterns: retrieval-head agreement,
gate correlation, wall time. Writes a bench JSON.

    PYTHONPATH=. python3 bench/scripts/identify_batch_equivalence.py \
        --recipe recipes/identify-sedpa-tiny-cpu.yaml --device cpu --out bench/results/identify_batch_equivalence_sedpa-tiny-cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.heads.config import load_recipe

    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/identify-sedpa-tiny-cpu.yaml")
    ap.add_argument("--model", default=None, help="default: the recipe's model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    steps = load_recipe(args.recipe).steps
    tmp = Path(tempfile.mkdtemp(prefix="identify_batch_"))
    runs = {}
    for batch, n in ((1, steps), (2, steps // 2)):
        out = tmp / f"b{batch}.pattern.json"
        cmd = [sys.executable, "-m", "sedpa_compress", "identify-heads", "--recipe", args.recipe, "--device", args.device,
               "--batch-size", str(batch), "--steps", str(n), "--out", str(out)] + (["--model", args.model] if args.model else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        pattern = json.loads(out.read_text())
        runs[f"{n}x{batch}"] = {"steps": n, "batch_size": batch, "wall_s": round(time.perf_counter() - t0, 1),
                                "gates": pattern["gates"], "mask": pattern["mask"]}
    (a, b) = runs.values()
    ga, gb = np.array(a["gates"]).ravel(), np.array(b["gates"]).ravel()
    ma, mb = np.array(a["mask"]).ravel(), np.array(b["mask"]).ravel()
    summary = {"heads": int(ma.size), "retrieval_heads": [int(ma.sum()), int(mb.sum())],
               "mask_agreement": float((ma == mb).mean()), "gate_pearson": round(float(np.corrcoef(ga, gb)[0, 1]), 4),
               "gate_max_abs_diff": round(float(np.abs(ga - gb).max()), 4)}
    result = make_result("identify-batch-equivalence", model=args.model or load_recipe(args.recipe).model,
                         device=args.device, settings={"recipe": args.recipe, "steps": steps}, rows=list(runs.values()),
                         summary=summary, command="PYTHONPATH=. python3 bench/scripts/identify_batch_equivalence.py "
                                                  + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
