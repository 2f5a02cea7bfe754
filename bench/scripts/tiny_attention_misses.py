"""Does a sedpa-tiny miss fail to find the needle, or find it and not copy it? NIAH cells (held-out wordings and
text, full attention, the reference path) answered greedily; for each, the attention mass that the last prompt
position (the query of the first answer token) puts on the needle's value tokens, in the best query head of
each layer given. A layer that finds the value in hits and misses alike is not where the misses fail.
CPU is enough at 1K.

    PYTHONPATH=. python3 bench/scripts/tiny_attention_misses.py --model runs/stage12/model --context 1024 \
        --samples 6 --layers 3,5,7 --out bench/results/tiny_stage12_attention_misses_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def value_mass(loaded, ids: list[int], value_pos: list[int], layers: list[int]) -> list[float]:
    """Per layer: the largest, over query heads, attention probability mass of the last position on `value_pos`."""
    from tidal_layers_probe import last_position_queries  # a sibling script: its prefill and per-layer queries

    per_layer = last_position_queries(loaded, ids)
    out = []
    for li in layers:
        q, keys, scaling = per_layer[li]
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # [1, hq, T, d]
        probs = torch.softmax((q @ keys.transpose(-1, -2)) * scaling, dim=-1)[0, :, 0]  # [hq, T]
        out.append(round(float(probs[:, value_pos].sum(-1).max()), 4))
    return out


def main() -> None:
    from sedpa_compress.bench.common import greedy_generate
    from sedpa_compress.bench.niah import NiahConfig, make_example, prepare_niah
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.data.needles import answer_found
    from sedpa_compress.models.loader import load_model
    from tidal_layers_probe import value_token_positions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model folder (default: the embedded sedpa-tiny)")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=6, help="needles per depth (10 depths)")
    ap.add_argument("--layers", default="3,5,7")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_model(args.model, dtype="float32", device="cpu")
    layers = [int(x) for x in args.layers.split(",")]
    cfg = NiahConfig(lengths=[args.context], depths=[round(i / 9, 4) for i in range(10)], samples=args.samples,
                     seed=args.seed)
    prepared = prepare_niah(loaded, cfg)
    rows = []
    for sample in range(cfg.samples):
        for depth in cfg.depths:
            ex = make_example(loaded, prepared.haystack, cfg, args.context, depth, sample)
            ids = loaded.encode(ex.prompt)
            text = loaded.decode(greedy_generate(loaded, ids, None, 12))
            pos = value_token_positions(loaded, ex.prompt, ex.answer)
            rows.append({"depth": depth, "sample": sample, "answer": ex.answer, "output": text,
                         "accuracy": answer_found(text, ex.answer),
                         "value_mass": dict(zip(map(str, layers), value_mass(loaded, ids, pos, layers)))})
    summary = {}
    for name, hit in (("hits", 1.0), ("misses", 0.0)):
        mine = [r for r in rows if r["accuracy"] == hit]
        summary[name] = {"cells": len(mine), "median_value_mass": {
            str(li): round(statistics.median(r["value_mass"][str(li)] for r in mine), 3) if mine else None
            for li in layers}}
        print(f"{name}: {len(mine)} cells, median value mass by layer {summary[name]['median_value_mass']}")
    settings = {"context": args.context, "depths": cfg.depths, "samples": cfg.samples, "seed": args.seed,
                "layers": layers, "templates": "held-out", "haystack": "bundled held-out text",
                "path": "reference (CPU, fp32), greedy 12 tokens",
                "value_mass": "the last prompt position's attention probability on the needle's value tokens, "
                              "the largest over the layer's query heads"}
    result = make_result("tiny-attention-misses", model=loaded.name, settings=settings, rows=rows, summary=summary,
                         command=" ".join(["PYTHONPATH=. python3", *sys.argv]), wall_s=round(time.time() - t0, 1))
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
