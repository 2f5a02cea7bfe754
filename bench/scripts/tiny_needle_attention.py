"""Does a sedpa-tiny stage miss a held-out needle because it does not find it, or because it finds it and does not
copy it? On the acceptance's own cells (`tiny.evaluate`'s seeds and haystack), the attention of the last prompt
position, the one that writes the answer's first token, from every layer and head: its mass on the needle sentence
and on the value's tokens, beside whether the greedy answer found the value. A miss whose best head still puts
most of its weight on the needle is a copy failure; one whose heads look elsewhere is a search failure. For a copy
failure the row says which first token won and where the value's own first token ranked.

    PYTHONPATH=. python3 bench/scripts/tiny_needle_attention.py --model sedpa_compress/models/embedded/sedpa-tiny \
        --contexts 2048,4096 --out bench/results/tiny_needle_attention_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ACCEPTANCE_MAX_CONTEXT = 32768  # the haystack text is cut for this length, as in the acceptance run: the same cells


@torch.no_grad()
def last_position_attention(model: torch.nn.Module, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """([layers, heads, T], [vocab]): the attention weights of the prompt's last position and its next-token logits
    (eager attention for that step only; the prefix is prefilled with SDPA into a KV cache)."""
    from transformers import DynamicCache

    from sedpa_compress.models.forward_args import ForwardArgs

    cache, args = DynamicCache(), ForwardArgs(model.model)
    x = torch.tensor([ids])
    model.model(input_ids=x[:, :-1], **args(cache))
    kernel = model.config._attn_implementation
    model.set_attn_implementation("eager")  # SDPA returns no weights
    try:
        out = model.model(input_ids=x[:, -1:], output_attentions=True, **args(cache))
    finally:
        model.set_attn_implementation(kernel)
    return torch.stack([a[0, :, -1, :].float() for a in out.attentions]), model.lm_head(out.last_hidden_state[0, -1])


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Token positions whose characters overlap [start, end)."""
    return [i for i, (a, b) in enumerate(offsets) if b > start and a < end and b > a]


def cell_row(model, tok, ex, ctx: int, depth: float, sample: int) -> dict[str, Any]:
    from sedpa_compress.data.needles import ANSWER_SLACK, answer_found, score_answer
    from sedpa_compress.tiny.evaluate import greedy_answer

    enc = tok(ex.prompt, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    n_start, n_end = ex.needle_char_spans[ex.query_index]
    v_start = ex.prompt.find(ex.answer, n_start, n_end)
    needle_pos = token_span(offsets, n_start, n_end)
    value_pos = token_span(offsets, v_start, v_start + len(ex.answer)) if v_start >= 0 else []
    attn, logits = last_position_attention(model, ids)  # [L, H, T], [V]
    first = tok(" " + ex.answer, add_special_tokens=False)["input_ids"][0]  # the answer's first token
    on_needle = attn[:, :, needle_pos].sum(-1)
    on_value = attn[:, :, value_pos].sum(-1) if value_pos else torch.zeros_like(on_needle)
    budget = len(tok(" " + ex.answer, add_special_tokens=False)["input_ids"]) + ANSWER_SLACK
    text = tok.decode(greedy_answer(model, ids, budget, "full",
                                    stop=lambda out: "\n" in tok.decode(out).lstrip()))
    best = int(on_needle.flatten().argmax())
    heads = on_needle.shape[1]
    return {"context": ctx, "depth": depth, "sample": sample, "value": ex.answer, "output": text,
            "found": answer_found(text, ex.answer), "exact": score_answer(text, ex.answer)[0],
            "needle_tokens": len(needle_pos), "value_tokens": len(value_pos),
            "best_head": [best // heads, best % heads], "best_head_needle_mass": round(float(on_needle.max()), 4),
            "best_head_value_mass": round(float(on_value.max()), 4),
            "first_token": tok.decode([first]), "first_token_rank": int((logits > logits[first]).sum()) + 1,
            "first_token_prob": round(float(logits.softmax(-1)[first]), 4),
            "top_token": tok.decode([int(logits.argmax())]),
            "needle_mass": [[round(float(v), 4) for v in layer] for layer in on_needle]}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Found against missed cells: the best head's mass on the needle and on the value (medians), and the heads that
    look at the needle most over all cells, with their mean mass in found and in missed cells."""
    found = [r for r in rows if r["found"]]
    missed = [r for r in rows if not r["found"]]
    med = lambda rs, k: round(statistics.median(r[k] for r in rs), 4) if rs else None  # noqa: E731
    layers, heads = len(rows[0]["needle_mass"]), len(rows[0]["needle_mass"][0])
    mean = lambda rs, li, h: round(sum(r["needle_mass"][li][h] for r in rs) / len(rs), 4) if rs else None  # noqa: E731
    ranked = sorted(((li, h) for li in range(layers) for h in range(heads)), key=lambda lh: -mean(rows, *lh))
    return {
        "cells": len(rows), "found": len(found), "missed": len(missed),
        "best_head_needle_mass_median": {"found": med(found, "best_head_needle_mass"),
                                         "missed": med(missed, "best_head_needle_mass")},
        "best_head_value_mass_median": {"found": med(found, "best_head_value_mass"),
                                        "missed": med(missed, "best_head_value_mass")},
        "missed_with_best_head_on_needle_over_half": sum(r["best_head_needle_mass"] > 0.5 for r in missed),
        # a head on the value and still a miss: the copy lost to another first token (which, and how far behind)
        "missed_with_best_head_on_value_over_0.9": [
            {"value": r["value"], "first_token": r["first_token"], "rank": r["first_token_rank"],
             "prob": r["first_token_prob"], "top_token": r["top_token"], "output": r["output"][:30]}
            for r in missed if r["best_head_value_mass"] > 0.9],
        "top_needle_heads": [{"layer": li, "head": h, "found": mean(found, li, h), "missed": mean(missed, li, h)}
                             for li, h in ranked[:5]],
    }


def main() -> None:
    from sedpa_compress.bench.results import make_result, weights_sha256, write_result
    from sedpa_compress.data.text import load_haystack
    from sedpa_compress.tiny.evaluate import acceptance_depths, acceptance_example, load_model_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="a model folder (repeat for more)")
    ap.add_argument("--contexts", default="2048,4096")
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234, help="the acceptance run's: the same cells")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    depth_list = acceptance_depths(args.depths)
    hay = load_haystack(None, min_chars=ACCEPTANCE_MAX_CONTEXT * 6)
    t0 = time.time()
    rows, summary, weights = [], {}, {}
    for path in args.model:
        model, tok = load_model_dir(path, "cpu")
        weights[str(path)] = weights_sha256(path)
        mine = []
        for ctx in contexts:
            for depth in depth_list:
                for s in range(args.samples):
                    ex = acceptance_example(tok, hay, ctx, depth, s, args.seed)
                    mine.append({"model": str(path), **cell_row(model, tok, ex, ctx, depth, s)})
        summary[str(path)] = summarise(mine)
        print(path, summary[str(path)], flush=True)
        rows += mine
    settings = {"contexts": contexts, "depths": args.depths, "samples": args.samples, "seed": args.seed,
                "templates": "heldout", "haystack": "bundled held-out text, cut as for a 32K acceptance run",
                "attention": "the last prompt position's weights, every layer and head (eager for that step)",
                "weights_sha256": weights}
    write_result(args.out, make_result("tiny_needle_attention", model=",".join(map(str, args.model)),
                                       settings=settings, rows=rows, summary=summary, device="cpu",
                                       wall_s=round(time.time() - t0, 1)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
