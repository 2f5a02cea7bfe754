"""Where a bf16 prefill's logits sit from the fp32 reference: every mode, one-shot and chunked prefill, then
decode steps, for several seeds (the tolerance of tests/test_runtime_gpu.py's logits tests).

    PYTHONPATH=. python3 bench/scripts/chunked_prefill_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def main() -> None:
    from conftest import build_head_dim_128_llama, random_pattern
    from sedpa_compress.models import load_model
    from sedpa_compress.runtime.model import RuntimeSpec
    from sedpa_compress.runtime.modes import build_mode
    from sedpa_compress.runtime.reference import using_mode
    from sedpa_compress.runtime.runner import Runner

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    path = build_head_dim_128_llama(Path(tempfile.mkdtemp()) / "model")  # the GPU tests' model
    fast = load_model(str(path), device="cuda", dtype="bfloat16")
    ref = load_model(str(path), device="cuda", dtype="float32")
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    rows = []
    for mode in ("full", "duo", "sedpa-w"):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            pattern = random_pattern(fast.geometry, ratio=0.5, seed=seed, sink=16, recent=64)
            kw = dict(pattern=pattern, sink=16, recent=64, window=256 if mode == "sedpa-w" else None)
            if mode == "full":
                kw = {}
            ids = torch.randint(0, 512, (1, 1200), device="cuda")
            with torch.no_grad(), using_mode(ref.model, build_mode(mode, **kw)):
                want = ref.model(ids).logits[0, 1189:1200]
            for chunk in (1200, 512, 300):
                r = Runner.build(fast, RuntimeSpec(mode=mode, **kw), max_len=1300, chunk=chunk)
                outs = [r.prefill(ids[:, :1190])[0]] + [r.decode(ids[:, j])[0].clone() for j in range(1190, 1200)]
                errs = [round(rel(o, w), 5) for o, w in zip(outs, want)]
                rows.append(dict(mode=mode, seed=seed, chunk=chunk, prefill=errs[0], decode_max=max(errs[1:]),
                                 decode=errs[1:]))
                print(mode, seed, chunk, errs[0], max(errs[1:]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
