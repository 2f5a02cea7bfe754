"""Which held-out wordings a sedpa-tiny stage misses: NIAH cells on the held-out family (full attention,
CPU is enough at 1K), grouped by the needle's sentence frame, the question, the answer prefix and the
value's format. For diagnosing a stage, not an acceptance number (that is python -m sedpa_compress.tiny.evaluate).

    PYTHONPATH=. python3 bench/scripts/tiny_miss_analysis.py --model runs/stage10/model --samples 30 \
        --out bench/results/tiny_stage10_miss_analysis_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def frame_of(text: str, frames: tuple[str, ...]) -> str:
    """The longest frame of `frames` ("{key} carries the {attr} {value}") that `text` matches, or "?"."""
    for frame in sorted((f for f in frames if f), key=len, reverse=True):
        pattern = re.escape(frame)
        for slot in ("attr", "key", "value"):
            pattern = pattern.replace(re.escape("{" + slot + "}"), ".+?")
        if re.search(pattern, text, flags=re.IGNORECASE):
            return frame
    return "?"


def group(cells: list[dict], phrasing) -> dict[str, dict[str, dict[str, float]]]:
    from sedpa_compress.data.wordings import value_format

    tallies: dict[str, dict[str, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
    for c in cells:
        found = int(c["value"] in c["output"].split("\n")[0])
        last_line = c["question"].strip().split("\n")[-1]
        for kind, label in (("needle_frame", frame_of(c["needle"], phrasing.cores)),
                            ("question", frame_of(c["question"], phrasing.questions)),
                            ("answer_prefix", frame_of(last_line, phrasing.answer_prefixes)),
                            ("value_format", value_format(c["value"]))):
            tallies[kind][label][0] += found
            tallies[kind][label][1] += 1
    return {kind: {label: {"accuracy": round(h / n, 3), "cells": n}
                   for label, (h, n) in sorted(by.items(), key=lambda kv: kv[1][0] / kv[1][1])}
            for kind, by in tallies.items()}


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.data.wordings import HELDOUT_PHRASING
    from sedpa_compress.tiny.evaluate import load_model_dir, needle_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=777, help="not the acceptance run's 1234: other cells")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model, tok = load_model_dir(args.model, args.device)
    t0 = time.time()
    rows = needle_rows(model, tok, [args.context], args.depths, args.samples, modes=("full",), seed=args.seed)
    cells = [c for r in rows for c in r["cells"]]
    found = sum(c["value"] in c["output"].split("\n")[0] for c in cells) / len(cells)
    result = make_result("tiny-miss-analysis", model=str(args.model),
                         settings={"context": args.context, "depths": args.depths, "samples": args.samples,
                                   "seed": args.seed, "mode": "full", "wordings": "held-out family",
                                   "accuracy": "value in the first line of the answer"},
                         rows=[{"accuracy": round(found, 4), "cells": len(cells), "wall_s": round(time.time() - t0, 1)}],
                         summary=group(cells, HELDOUT_PHRASING))
    result["cells"] = cells
    write_result(args.out, result)
    for kind, by in result["summary"].items():
        print(kind)
        for label, v in by.items():
            print(f"  {v['accuracy']:.2f} {v['cells']:4d}  {label}")


if __name__ == "__main__":
    main()
