"""GPU timing of `sedpa identify-heads` at Llama-3-8B geometry (random weights): seconds per step and peak
memory at several context lengths, and the projected wall time of a full recipe run.

    PYTHONPATH=. python3 bench/scripts/identify_timing.py --out bench/results/identify_llama-3-8b_timing.json

First checks that the CUDA path (flash full attention + FlexAttention streaming) computes the same
outputs and gate gradients as the reference path. Stops itself by wall clock (--budget-s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.heads.config import load_recipe
from sedpa_compress.heads.gated import GatedAttention, gated_attention_reference
from sedpa_compress.heads.train import identify_heads
from sedpa_compress.models import load_model


def check_flex_matches_reference(device: str) -> dict:
    """Random q/k/v with fractional gates: outputs and d(loss)/d(gates) of both backends agree."""
    torch.manual_seed(0)
    b, hq, hkv, t, d = 1, 8, 2, 1000, 64
    q = torch.randn(b, hq, t, d, device=device)
    k = torch.randn(b, hkv, t, d, device=device)
    v = torch.randn(b, hkv, t, d, device=device)
    out = {}
    for backend in ("reference", "flex"):
        g = GatedAttention(1, hkv, sink=16, recent=64, init=0.5, backend=backend, device=device)
        with torch.no_grad():
            g.gates.copy_(torch.tensor([[0.3, 0.8]], device=device))
        y = g.attend(0, q, k, v, None, d ** -0.5)
        y.square().sum().backward()
        out[backend] = (y.detach(), g.gates.grad.detach().clone())
    ref = gated_attention_reference(q, k, v, torch.tensor([0.3, 0.8], device=device), sink=16, recent=64,
                                    scaling=d ** -0.5)
    return {
        "max_abs_out_diff": (out["flex"][0] - out["reference"][0]).abs().max().item(),
        "max_abs_ref_diff": (out["reference"][0] - ref).abs().max().item(),
        "max_rel_grad_diff": ((out["flex"][1] - out["reference"][1]).abs().max()
                              / out["reference"][1].abs().max()).item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="llama-3-8b")
    ap.add_argument("--recipe", default="recipes/identify-llama-3-8b-1048k.yaml")
    ap.add_argument("--contexts", default="4096,8192,16384,32768")
    ap.add_argument("--steps", type=int, default=3, help="steps per context; the first is warm-up")
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--out", default="identify_timing.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    check = check_flex_matches_reference(device) if device == "cuda" else {}
    print("flex vs reference:", check, flush=True)

    recipe = load_recipe(args.recipe)
    t0 = time.perf_counter()
    loaded = load_model(config=args.config, random_weights=True, device=device)
    print(f"loaded {loaded.name} in {time.perf_counter() - t0:.1f}s; weights "
          f"{torch.cuda.memory_allocated() / 2**30 if device == 'cuda' else 0:.1f} GiB", flush=True)
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for ctx in [int(c) for c in args.contexts.split(",")]:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"budget reached; skipping {ctx}", flush=True)
            break
        cfg = recipe.with_overrides(context_min=ctx, context_max=ctx, steps=args.steps, checkpoint_every=1000)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        secs: list[float] = []
        result = identify_heads(loaded, cfg, out=tmp / f"t{ctx}.pattern.json",
                                on_step=lambda log, g: secs.append(log.seconds))
        if device == "cuda":
            torch.cuda.synchronize()
        timed = secs[1:] or secs
        row = {"mode": "gated", "context": ctx, "s_per_step": sum(timed) / len(timed), "warmup_s": secs[0],
               "peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
               "distill": result.history[-1].distill}
        rows.append(row)
        print(row, flush=True)

    projection = {}
    if len(rows) >= 2:
        import numpy as np

        c = np.array([r["context"] for r in rows], dtype=float)
        s = np.array([r["s_per_step"] for r in rows])
        deg = min(2, len(rows) - 1)
        coef = np.polyfit(c, s, deg)
        step = (recipe.context_max - recipe.context_min) / max(1, recipe.context_intervals - 1)
        lengths = np.array([recipe.context_min + i * step for i in range(recipe.context_intervals)])
        mean_s = float(np.clip(np.polyval(coef, lengths), 0, None).mean())
        total_min = mean_s * recipe.steps / 60
        projection = {"recipe": args.recipe, "recipe_steps": recipe.steps, "mean_s_per_step": mean_s,
                      "projected_minutes": total_min, "fit": f"poly deg {deg} in context",
                      "steps_in_45_min": int(45 * 60 / mean_s) if mean_s > 0 else None}
        print("projection:", projection, flush=True)

    summary = {"gated": {"s_per_step_16k": next((r["s_per_step"] for r in rows if r["context"] == 16384), None),
                         "s_per_step_32k": next((r["s_per_step"] for r in rows if r["context"] == 32768), None),
                         "peak_bytes": max((r["peak_bytes"] or 0) for r in rows) if rows else None,
                         "wall_s": projection.get("projected_minutes", 0) * 60}}
    result = make_result("identify-timing", model=loaded.name,
                         settings={"config": args.config, "recipe": args.recipe, "steps_per_context": args.steps,
                                   "dtype": str(next(loaded.model.parameters()).dtype),
                                   "backend": "flash SDPA (full) + FlexAttention (sink+recent), per-layer checkpointing"},
                         rows=rows, summary=summary, projection=projection, flex_check=check,
                         torch=torch.__version__,
                         command="PYTHONPATH=. python3 bench/scripts/identify_timing.py")
    write_result(Path(args.out), result)
    print("\n| context | s/step | peak GiB |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['context']} | {r['s_per_step']:.2f} | {(r['peak_bytes'] or 0) / 2**30:.1f} |")
    print(f"total {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
