"""Head identification with the full-attention half of the gate mix from the gated model's own states
(`full_attention_source: gated`) or from the original model's (`original`, DuoAttention's reference
code): train both on the same recipe, then judge the two patterns by what they are for.

    PYTHONPATH=. python bench/scripts/identify_full_source.py --recipe recipes/identify-sedpa-tiny-cpu.yaml \
        --device cpu --work /tmp/fullsrc --out bench/results/identify_full_source_sedpa-tiny-cpu.json
    GPU (the published-size recipe, more examples):
    PYTHONPATH=. python bench/scripts/identify_full_source.py --recipe recipes/identify-sedpa-tiny.yaml \
        --device cuda --probe-samples 4 --niah-lengths 1024,2048,4096 --niah-samples 2 \
        --work /tmp/fullsrc --out bench/results/identify_full_source_sedpa-tiny.json

Per source: the identification run (loss, wall time, gates), `sedpa heads probe` (top-K vs bottom-K
heads forced to streaming, duo vs random masks), NIAH of `duo` with the pattern and perplexity of
`duo` on the bundled held-out text. One JSON in the benchmark shape (rows: one per source and
metric family; summary: one entry per source) and a PNG of the gates side by side.
Patterns already in --work are reused (delete them to retrain).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sedpa_compress.bench.common import build_bench_models
from sedpa_compress.bench.niah import NiahConfig, run_niah
from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.data.text import load_bundled_text
from sedpa_compress.heads.config import load_recipe
from sedpa_compress.heads.gated import GatedAttention
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.heads.probe import ProbeConfig, run_probe
from sedpa_compress.heads.train import identify_heads
from sedpa_compress.models import load_model


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sedpa-tiny")
    ap.add_argument("--recipe", default="recipes/identify-sedpa-tiny-cpu.yaml")
    ap.add_argument("--sources", default="gated,original")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=Path("/tmp/identify_full_source"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/identify_full_source_sedpa-tiny-cpu.json"))
    ap.add_argument("--probe-k", type=int, default=4)
    ap.add_argument("--probe-contexts", default="1024,2048")
    ap.add_argument("--probe-depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--probe-samples", type=int, default=1)
    ap.add_argument("--probe-trials", type=int, default=1)
    ap.add_argument("--niah-lengths", default="1024,2048")
    ap.add_argument("--niah-depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--niah-samples", type=int, default=2)
    ap.add_argument("--ppl-seq-len", type=int, default=2048)
    ap.add_argument("--ppl-windows", type=int, default=8)
    args = ap.parse_args()

    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    base_cfg = load_recipe(args.recipe)
    loaded = load_model(args.model, device=args.device, dtype=base_cfg.dtype)
    windows = heldout_windows(loaded.encode, load_bundled_text("heldout"), seq_len=args.ppl_seq_len,
                              count=args.ppl_windows)
    rows, summary, patterns = [], {}, {}
    t_all = time.perf_counter()
    full_ppl = perplexity(loaded.model, windows, loaded.device)
    rows.append({"mode": "full", "metric": "ppl", "ppl": round(full_ppl, 4), "tokens": sum(len(w) - 1 for w in windows)})
    for source in args.sources.split(","):
        cfg = base_cfg.with_overrides(full_attention_source=source)
        path = args.work / f"{source}.pattern.json"
        if path.is_file():
            pattern = HeadPattern.load(path, loaded.geometry)
            ident = {"reused": str(path)}
        else:
            res = identify_heads(loaded, cfg, out=path, recipe_path=args.recipe)
            pattern = res.pattern
            ident = {"wall_s": round(res.wall_s, 1)}
        patterns[source] = pattern
        ident.update(pattern.training.get("final_losses", {}))
        rows.append({"mode": "identify", "full_attention_source": source, **ident, "gates": pattern.gates,
                     "mask": pattern.mask})
        t0 = time.perf_counter()
        probe = run_probe(loaded, pattern, ProbeConfig(k=args.probe_k, contexts=ints(args.probe_contexts),
                                                       depths=floats(args.probe_depths), samples=args.probe_samples,
                                                       random_trials=args.probe_trials))
        rows.append({"mode": "probe", "full_attention_source": source, **probe["findings"],
                     "wall_s": round(time.perf_counter() - t0, 1)})
        t0 = time.perf_counter()
        models = build_bench_models(loaded, ["duo"], pattern=path)
        niah_rows, niah_summary = run_niah(models, NiahConfig(lengths=ints(args.niah_lengths),
                                                              depths=floats(args.niah_depths),
                                                              samples=args.niah_samples))
        rows += [{**r, "full_attention_source": source} for r in niah_rows]
        duo_mode = GatedAttention.from_mask(pattern.mask, sink=pattern.sink, recent=pattern.recent,
                                            device=loaded.device)
        duo_ppl = perplexity(loaded.model, windows, loaded.device, mode=duo_mode)
        rows.append({"mode": "duo", "metric": "ppl", "full_attention_source": source, "ppl": round(duo_ppl, 4)})
        summary[source] = {
            "niah_accuracy": niah_summary["duo"]["accuracy"], "niah_score": niah_summary["duo"]["score"],
            "probe_duo_accuracy": round(probe["summary"]["duo"]["accuracy"], 4),
            "probe_full_accuracy": round(probe["summary"]["full"]["accuracy"], 4),
            "probe_top_k_drop_points": probe["findings"]["top_k_drop_points"],
            "probe_bottom_k_drop_points": probe["findings"]["bottom_k_drop_points"],
            "probe_duo_minus_random_duo_points": probe["findings"]["duo_minus_random_duo_points"],
            "ppl": round(duo_ppl, 4), "ppl_vs_full": round(duo_ppl / full_ppl - 1, 4),
            "distill": ident.get("distill"), "wall_s": round(time.perf_counter() - t0, 1),
        }
        print(source, json.dumps(summary[source]), flush=True)
    summary["full"] = {"ppl": round(full_ppl, 4)}
    if {"gated", "original"} <= set(patterns):
        a, b = patterns["gated"].mask, patterns["original"].mask
        summary["agreement"] = {"same_mask_heads": sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb)),
                                "heads": sum(len(r) for r in a)}
    settings = {"recipe": args.recipe, "recipe_settings": {k: v for k, v in base_cfg.__dict__.items()},
                "probe": {"k": args.probe_k, "contexts": ints(args.probe_contexts), "depths": floats(args.probe_depths),
                          "samples": args.probe_samples, "random_trials": args.probe_trials},
                "niah": {"lengths": ints(args.niah_lengths), "depths": floats(args.niah_depths),
                         "samples": args.niah_samples, "mode": "duo"},
                "ppl": {"data": "bundled held-out text", "seq_len": args.ppl_seq_len, "windows": len(windows),
                        "mode": "duo (0/1 gates on the banded/flex path: the duo function)"}}
    result = make_result("identify-full-source", model=loaded.name, settings=settings, rows=rows, summary=summary,
                         device="cpu" if loaded.device.type == "cpu" else None,
                         command="PYTHONPATH=. python " + " ".join(__import__("sys").argv),
                         wall_s=round(time.perf_counter() - t_all, 1))
    write_result(args.out, result)
    plot(patterns, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def plot(patterns: dict[str, HeadPattern], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sedpa_compress.atomic import atomic_write_figure

    fig, axes = plt.subplots(1, len(patterns), figsize=(3 * len(patterns) + 1, 4), squeeze=False)
    for ax, (source, p) in zip(axes[0], patterns.items()):
        im = ax.imshow(p.gates, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for li, row in enumerate(p.mask):
            for h, m in enumerate(row):
                ax.text(h, li, "R" if m else "", ha="center", va="center", color="white", fontsize=8)
        ax.set_title(f"full attention from: {source}", fontsize=9)
        ax.set_xticks(range(p.num_kv_heads))
        ax.set_xlabel("KV head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="gate (R = retrieval head)")
    atomic_write_figure(path, fig, dpi=110)


if __name__ == "__main__":
    main()
