"""Projected wall time of a full `sedpa identify-heads` run on one H100, from measured seconds per step.

    .venv/bin/python bench/scripts/identify_projection.py        (CPU, a second; no GPU needed)

Reads the GPU timing (bench/scripts/identify_timing.py -> bench/results/identify_llama-3-8b_timing.json:
seconds per step and peak memory at 8K/16K/32K tokens, Llama-3-8B geometry), models seconds per step
as a function of context length, averages it over the context lengths each recipe samples (uniformly
from `context_intervals` evenly spaced lengths, as `heads.synthetic.PasskeyData` does), adds the
one-off costs, and writes the projection into the timing JSON (key `projection`) and a table to stdout.

Per-step model: a quadratic through the measured points (attention is quadratic in context, the rest
linear), floored below the shortest measured context by that context's throughput (tokens/s), since
short steps use the GPU less well than the fit alone would claim.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sedpa_compress.atomic import atomic_write_json
from sedpa_compress.heads.config import IdentifyConfig, load_recipe

BUDGET_MIN = 45.0


def recipe_lengths(cfg: IdentifyConfig) -> list[int]:
    """The context lengths a recipe trains on (the same rule as PasskeyData)."""
    if cfg.context_intervals <= 1 or cfg.context_min == cfg.context_max:
        return [cfg.context_max]
    step = (cfg.context_max - cfg.context_min) / (cfg.context_intervals - 1)
    return sorted({round(cfg.context_min + i * step) for i in range(cfg.context_intervals)})


def step_model(rows: list[dict]):
    """seconds per step as a function of context length, from the measured rows."""
    c = np.array([r["context"] for r in rows], dtype=float)
    s = np.array([r["s_per_step"] for r in rows], dtype=float)
    coef = np.polyfit(c, s, min(2, len(rows) - 1))
    c0, s0 = c.min(), s[c.argmin()]

    def f(ctx: np.ndarray) -> np.ndarray:
        fit = np.polyval(coef, ctx)
        floor = np.where(ctx < c0, s0 * ctx / c0, 0.0)  # no better tokens/s than the shortest measured step
        return np.maximum(fit, floor)

    return f, coef


def project(cfg: IdentifyConfig, f, overhead_s: float, per_length_s: float) -> dict:
    lengths = np.array(recipe_lengths(cfg), dtype=float)
    mean_s = float(f(lengths).mean())
    train_s = mean_s * cfg.steps
    total_s = train_s + overhead_s + per_length_s * len(lengths)
    return {"steps": cfg.steps, "context_min": cfg.context_min, "context_max": cfg.context_max,
            "context_lengths": len(lengths), "mean_s_per_step": round(mean_s, 4),
            "train_minutes": round(train_s / 60, 2), "overhead_minutes": round((total_s - train_s) / 60, 2),
            "projected_minutes": round(total_s / 60, 2), "fits_45_min": total_s / 60 <= BUDGET_MIN,
            "steps_in_45_min": int((BUDGET_MIN * 60 - (total_s - train_s)) / mean_s)}


def max_context_for(cfg: IdentifyConfig, f, overhead_s: float, per_length_s: float) -> int:
    """The largest context_max (multiple of 1024) with which the recipe's steps fit the budget."""
    best = cfg.context_min
    for cmax in range(2048, cfg.context_max + 1, 1024):
        trial = IdentifyConfig(**{**cfg.__dict__, "context_max": cmax})
        if project(trial, f, overhead_s, per_length_s)["projected_minutes"] <= BUDGET_MIN:
            best = cmax
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing", default="bench/results/identify_llama-3-8b_timing.json")
    ap.add_argument("--recipes", default="recipes/identify-llama-3-8b-1048k.yaml,recipes/identify-llama-3-8b-1048k-fast.yaml")
    ap.add_argument("--load-minutes", type=float, default=1.0,
                    help="model load from a local disk (16 GB of bf16 weights); not part of the GPU timing")
    args = ap.parse_args()
    path = Path(args.timing)
    timing = json.loads(path.read_text())
    rows = sorted(timing["rows"], key=lambda r: r["context"])
    f, coef = step_model(rows)
    # One-off: the first step compiles FlexAttention and the block mask; later new lengths only build a
    # block mask / recompile once with dynamic shapes (warm-up minus a normal step at the later contexts).
    compile_s = max(0.0, rows[0]["warmup_s"] - rows[0]["s_per_step"])
    per_length_s = float(np.mean([max(0.0, r["warmup_s"] - r["s_per_step"]) for r in rows[1:]])) if len(rows) > 1 else 0.0
    overhead_s = compile_s + args.load_minutes * 60
    recipes = {}
    for rp in args.recipes.split(","):
        cfg = load_recipe(rp)
        recipes[rp] = project(cfg, f, overhead_s, per_length_s)
    main_recipe = args.recipes.split(",")[0]
    cfg = load_recipe(main_recipe)
    recipes[main_recipe]["max_context_for_45_min_at_these_steps"] = max_context_for(cfg, f, overhead_s, per_length_s)
    timing["projection"] = {
        "method": "quadratic fit of s/step in context through the measured rows, floored below the shortest "
                  "measured context by its tokens/s; mean over the recipe's context lengths (uniform) x steps "
                  "+ first compile + per-length block-mask/recompile + model load",
        "fit_coefficients_c2_c1_c0": [float(x) for x in coef],
        "first_compile_s": round(compile_s, 2), "per_new_length_s": round(per_length_s, 3),
        "model_load_minutes_assumed": args.load_minutes, "budget_minutes": BUDGET_MIN,
        "peak_gib_at_32k": round(max(r["peak_bytes"] or 0 for r in rows) / 2**30, 1),
        "recipes": recipes,
        "command": "python bench/scripts/identify_projection.py",
    }
    timing["summary"]["gated"]["wall_s"] = round(recipes[main_recipe]["projected_minutes"] * 60, 1)
    timing["summary"]["gated"]["wall_s_fast_recipe"] = round(
        next(v for k, v in recipes.items() if k != main_recipe)["projected_minutes"] * 60, 1) if len(recipes) > 1 else None
    atomic_write_json(path, timing)
    print("| recipe | steps | contexts | mean s/step | projected min | fits 45 min |")
    print("|---|---|---|---|---|---|")
    for rp, p in recipes.items():
        print(f"| {Path(rp).name} | {p['steps']} | {p['context_min']}-{p['context_max']} | {p['mean_s_per_step']:.2f} | "
              f"{p['projected_minutes']:.1f} | {'yes' if p['fits_45_min'] else 'no'} |")
    print(f"{main_recipe}: {recipes[main_recipe]['steps_in_45_min']} steps fit 45 min at its contexts; its "
          f"{recipes[main_recipe]['steps']} steps fit with context_max <= "
          f"{recipes[main_recipe]['max_context_for_45_min_at_these_steps']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
