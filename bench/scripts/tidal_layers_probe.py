"""Which token-selection layers does TidalDecode need on a model? The same NIAH cells (held-out wordings and
text, contexts x depths x samples) under full attention and under tidal with each set of selection layers
given, and, for each layer, how often its own top-k (at the first answer step, summed over each KV head's
query heads, as tidal selects) holds the needle's value tokens, per KV head: a selection layer whose
top-k misses the value cannot let the layers after it copy it. CPU and the reference path are enough for
sedpa-tiny at 4K-8K.

    PYTHONPATH=. python3 bench/scripts/tidal_layers_probe.py --contexts 6144,8192 --layers 2,3 --layers 2,4 \
        --layers 2,5 --layers 2,4,6 --out bench/results/tidal_layers_sedpa-tiny-cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def value_token_positions(loaded, prompt: str, value: str) -> list[int]:
    """Token positions (as `loaded.encode` counts them) of the characters that spell the needle's value: its last
    occurrence in the prompt (the question does not repeat it)."""
    start = prompt.rfind(value)
    enc = loaded.tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=False)
    offset = len(loaded.encode(prompt)) - len(enc["input_ids"])  # a BOS the model's encode adds
    return [i + offset for i, (a, b) in enumerate(enc["offset_mapping"]) if a < start + len(value) and b > start]


@torch.inference_mode()
def last_position_queries(loaded, ids: list[int]):
    """Prefill `ids` (reference path) and return, per layer, the last position's rotated query [1, hq, 1, d]
    with the rotated keys of the whole prompt [1, hkv, T, d], and the attention's scaling."""
    from transformers import DynamicCache
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from sedpa_compress.models.forward_args import ForwardArgs

    model, cfg = loaded.model, loaded.model.config
    hidden: dict[int, torch.Tensor] = {}
    hooks = [layer.self_attn.register_forward_hook(
        lambda mod, args, kwargs, out, li=li: hidden.__setitem__(li, kwargs["hidden_states"][:, -1:]), with_kwargs=True)
        for li, layer in enumerate(model.model.layers)]
    cache = DynamicCache()
    try:
        model(input_ids=torch.tensor([ids]), logits_to_keep=1, **ForwardArgs(model)(cache))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for li, layer in enumerate(model.model.layers):
        attn, h = layer.self_attn, hidden[li]
        q = attn.q_proj(h).view(1, 1, cfg.num_attention_heads, attn.head_dim).transpose(1, 2)
        cos, sin = model.model.rotary_emb(h, torch.tensor([[len(ids) - 1]]))
        q, _ = apply_rotary_pos_emb(q, q, cos, sin)
        out.append((q, cache.layers[li].keys, attn.scaling))
    return out


def value_recall(loaded, ex, top_k: int) -> list[list[float]]:
    """Per layer and KV head: the share of the needle's value tokens among the head's top-k positions (the
    last prompt position's attention probabilities summed over the head's query group)."""
    from sedpa_compress.runtime.modes.tidal import group_selection_scores

    pos = value_token_positions(loaded, ex.prompt, ex.answer)
    out = []
    for q, keys, scaling in last_position_queries(loaded, loaded.encode(ex.prompt)):
        valid = torch.ones(1, keys.shape[2], dtype=torch.bool)
        scores = group_selection_scores(q, keys, valid, scaling)  # [1, hkv, T]
        top = torch.topk(scores, min(top_k, keys.shape[2]), dim=-1).indices[0]  # [hkv, k]
        out.append([sum(bool((row == p).any()) for p in pos) / len(pos) for row in top])
    return out


def main() -> None:
    from sedpa_compress.bench.common import BenchModel
    from sedpa_compress.bench.niah import NiahConfig, make_example, prepare_niah, run_niah
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.models.loader import load_model
    from sedpa_compress.runtime.modes.tidal import TidalAttention, tidal_selection_layers

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model folder (default: the embedded sedpa-tiny)")
    ap.add_argument("--contexts", default="6144,8192")
    ap.add_argument("--depths", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2048)
    ap.add_argument("--layers", action="append", default=[], help="selection layers, e.g. 2,4 (repeat for more)")
    ap.add_argument("--no-recall", action="store_true", help="skip the per-layer value recall")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_model(args.model, dtype="float32", device="cpu")
    n_layers = loaded.model.config.num_hidden_layers
    cfg = NiahConfig(lengths=[int(c) for c in args.contexts.split(",")],
                     depths=[round(i / max(1, args.depths - 1), 4) for i in range(args.depths)], samples=args.samples)
    prepared = prepare_niah(loaded, cfg)
    sets = [tuple(int(s) for s in spec.split(",")) for spec in args.layers] or [tidal_selection_layers(n_layers)]
    models = [BenchModel("full", loaded, None, {"mode": "full"})]
    for s in sets:
        name = "tidal@" + ",".join(map(str, s))
        models.append(BenchModel(name, loaded, TidalAttention(top_k=args.top_k, selection_layers=s,
                                                              dense_layers=min(s), num_layers=n_layers),
                                 {"mode": name, "selection_layers": list(s), "top_k": args.top_k}))
    rows, summary = run_niah(models, cfg, prepared=prepared)
    recall: dict[str, list[list[float]]] = {}
    for length in ([] if args.no_recall else cfg.lengths):
        per = [value_recall(loaded, make_example(loaded, prepared.haystack, cfg, length, d, s), args.top_k)
               for d in cfg.depths for s in range(cfg.samples)]
        recall[str(length)] = [[round(sum(p[li][h] for p in per) / len(per), 3) for h in range(len(per[0][li]))]
                               for li in range(n_layers)]
    for name, s in summary.items():
        print(f"{name:14s} accuracy {s['accuracy']:.3f} exact {s['exact']:.3f} by_context {s['by_context']}")
    for length, r in recall.items():
        print(f"value recall of each layer's top-{args.top_k} at {length}: {r}")
    settings = {"contexts": cfg.lengths, "depths": cfg.depths, "samples": cfg.samples, "top_k": args.top_k,
                "selection_sets": [list(s) for s in sets], "dense_layers": "the first selection layer's index",
                "templates": "held-out", "haystack": "bundled held-out text", "path": "reference (CPU, fp32)",
                "value_recall": "per layer and KV head: share of the needle's value tokens in the head's top-k at the "
                                "first answer step (the last prompt position's query, as tidal selects), over the cells"}
    result = make_result("tidal-layers-probe", model=loaded.name, settings=settings, rows=rows,
                         summary={"niah": summary, "value_recall_by_layer": recall},
                         command=" ".join(["PYTHONPATH=. python3", *sys.argv]), wall_s=round(time.time() - t0, 1))
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
