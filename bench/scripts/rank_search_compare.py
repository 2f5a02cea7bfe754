"""Rank search strategies judged by what users feel: held-out perplexity and needle retrieval of the
compressed model (SEDPA-S: the head pattern's attention + low-rank projections), at several rank
ratios, for `--scope streaming` and `--scope all`, with calibration statistics gathered under full
attention or under the pattern's attention (`sedpa calibrate --attention duo`).

    CPU (sedpa-tiny, ~25 min on 2 idle cores; every search with full-attention statistics, then the
    main ones with statistics under the pattern's attention, merged into the same JSON):
    PYTHONPATH=. python bench/scripts/rank_search_compare.py --device cpu --calibrations full \
        --searches greedy,uniform,relative,type,balanced,fisher --out bench/results/rank_search_sedpa-tiny-cpu.json
    PYTHONPATH=. python bench/scripts/rank_search_compare.py --device cpu --calibrations full,duo \
        --searches greedy,uniform,relative,fisher,greedy-before --merge bench/results/rank_search_sedpa-tiny-cpu.json \
        --out bench/results/rank_search_sedpa-tiny-cpu.json
    GPU (the whole grid, longer windows, more needles; 32K perplexity tokens leave ~56K held-out
    tokens of sedpa-tiny's text for calibration):
    PYTHONPATH=. python bench/scripts/rank_search_compare.py --device cuda --ppl-seq-len 4096 --ppl-windows 8 \
        --searches greedy,uniform,relative,type,balanced,fisher,greedy-before \
        --niah-lengths 1024,2048,4096,8192 --niah-samples 4 --out bench/results/rank_search_sedpa-tiny.json

Per configuration (calibration x scope x ratio x search) the base model is copied, factored by
`svd.compress.compress_model` and scored:
- `ppl`: perplexity over `--ppl-windows` x `--ppl-seq-len` tokens of the bundled held-out text under
  the pattern's attention (the duo function on the fast banded/flex path; `vs_duo` is the change against
  the uncompressed model under the same attention, the cost of the SVD alone);
- `exact`: NIAH `exact` (the greedy answer starts with the value) on `sedpa bench niah`'s prompts
  (held-out templates, same seeds), computed teacher-forced in one forward per prompt (greedy decoding
  produces the value exactly when every value token, and then a non-digit, is the argmax), and
  `answer_nll`, the mean negative log-likelihood of the value tokens (a low-variance retrieval score).
One JSON in the benchmark shape (rows: one per configuration, plus `full` and `duo` baselines; summary:
per search and calibration, and the winner) and a PNG (perplexity and NIAH against parameters kept).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sedpa_compress.bench.niah import NiahConfig, make_example, tokenizer_of
from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate
from sedpa_compress.data.text import load_bundled_text, load_haystack
from sedpa_compress.heads.gated import GatedAttention
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models import load_model
from sedpa_compress.models.loader import shipped_pattern_path
from sedpa_compress.runtime.reference import using_mode
from sedpa_compress.svd.compress import CompressConfig, compress_model, count_params


def csv(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


@torch.inference_mode()
def needle_scores(model, prompts: list[tuple[list[int], list[int]]], mode, device, decode) -> dict[str, float]:
    """Teacher-forced NIAH: (exact, mean answer NLL) over (prompt ids, value ids) pairs."""
    exact, nll, count = 0, 0.0, 0
    with using_mode(model, mode):
        for prompt, value in prompts:
            ids = torch.tensor([prompt + value], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
            start = len(prompt) - 1  # the state that predicts the first value token
            pred = logits[start:start + len(value) + 1].argmax(-1).tolist()
            target = torch.tensor(value, device=device)
            nll += F.cross_entropy(logits[start:start + len(value)], target, reduction="sum").item()
            count += len(value)
            after = decode([pred[-1]]) if len(pred) > len(value) else ""
            exact += int(pred[:len(value)] == value and not after[:1].isalnum())
    return {"exact": exact / len(prompts), "answer_nll": nll / count}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sedpa-tiny")
    ap.add_argument("--pattern", type=Path, default=None, help="default: the pattern the model ships")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ratios", default="0.85,0.7,0.5")
    ap.add_argument("--scopes", default="streaming,all")
    ap.add_argument("--searches", default="greedy,uniform,relative,type")
    ap.add_argument("--calibrations", default="full,duo", help="attention the statistics are gathered under")
    ap.add_argument("--cal-text", choices=("heldout-rest", "train"), default="heldout-rest",
                    help="heldout-rest: the held-out text after the perplexity windows (sedpa-tiny was trained on the "
                         "bundled train split and memorised it); train: the bundled train split (`sedpa compress`'s default)")
    ap.add_argument("--cal-tokens", type=int, default=65536)
    ap.add_argument("--cal-seq-len", type=int, default=2048)
    ap.add_argument("--min-rank", type=int, default=1)
    ap.add_argument("--ppl-seq-len", type=int, default=2048)
    ap.add_argument("--ppl-windows", type=int, default=8)
    ap.add_argument("--niah-lengths", default="1024,2048")
    ap.add_argument("--niah-depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--niah-samples", type=int, default=1)
    ap.add_argument("--merge", type=Path, default=None,
                    help="a previous result of this script with the same evaluation settings: its configurations "
                         "are kept (not recomputed) and this run's are added")
    ap.add_argument("--out", type=Path, default=Path("bench/results/rank_search_sedpa-tiny-cpu.json"))
    ap.add_argument("--resummarize", action="store_true",
                    help="recompute the summary of --out from its rows and redraw its PNG (no model runs)")
    args = ap.parse_args()
    if args.resummarize:
        result = json.loads(args.out.read_text())
        ref = {r["mode"]: {k: v for k, v in r.items() if k not in ("mode", "params_kept")}
               for r in result["rows"] if r["mode"] in ("full", "duo")}
        result["summary"] = summarize(result["rows"], ref)
        write_result(args.out, result)
        plot(result, args.out.with_suffix(".png"))
        return

    t_all = time.perf_counter()
    base = load_model(args.model, device=args.device, dtype="float32")
    pattern_path = args.pattern or shipped_pattern_path(base)
    pattern = HeadPattern.load(pattern_path, base.geometry)
    device = base.device
    duo = GatedAttention.from_mask(pattern.mask, sink=pattern.sink, recent=pattern.recent, device=device)
    heldout = load_bundled_text("heldout")
    cal_data = None  # the bundled train split
    # perplexity on the first windows of the held-out text, as `sedpa bench ppl` reads it
    windows = heldout_windows(base.encode, heldout, seq_len=args.ppl_seq_len, count=args.ppl_windows)
    if args.cal_text == "heldout-rest":  # calibration on the held-out text after them
        ids = base.encode(heldout)
        used = sum(len(w) for w in windows) + 1
        if len(ids) - used < 4 * args.cal_seq_len:
            raise SystemExit(f"the held-out text has {len(ids)} tokens: too few for perplexity and calibration")
        cal_path = Path(tempfile.mkdtemp()) / "heldout-rest.txt"
        cal_path.write_text(base.decode(ids[used:]), encoding="utf-8")
        cal_data = str(cal_path)
    niah_cfg = NiahConfig(lengths=csv(args.niah_lengths, int), depths=csv(args.niah_depths, float),
                          samples=args.niah_samples)
    haystack = load_haystack(None, min_chars=max(niah_cfg.lengths) * 6)
    tokenizer = tokenizer_of(base)  # the value's ids as they follow the prompt: no special tokens
    prompts = []
    for length in niah_cfg.lengths:
        for sample in range(niah_cfg.samples):
            for depth in niah_cfg.depths:
                ex = make_example(base, haystack, niah_cfg, length, depth, sample)
                value = list(tokenizer.encode(" " + ex.answer, add_special_tokens=False))
                prompts.append((base.encode(ex.prompt), value))

    def score(model, mode) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = {"ppl": perplexity(model, windows, device, mode=mode)}
        out.update(needle_scores(model, prompts, mode, device, base.decode))
        out["eval_s"] = round(time.perf_counter() - t0, 1)
        return out

    params_before = count_params(base.model)
    rows: list[dict[str, Any]] = []
    ref = {}
    merged = _previous(args.merge, pattern_path, windows, prompts) if args.merge else None
    done = {_key(r) for r in merged["rows"] if r["mode"] == "sedpa-s"} if merged else set()
    for name, mode in (("full", None), ("duo", duo)):
        old = [r for r in merged["rows"] if r["mode"] == name] if merged else []
        ref[name] = {k: v for k, v in old[0].items() if k not in ("mode", "params_kept")} if old else score(base.model, mode)
        rows.append({"mode": name, "params_kept": 1.0, **{k: _round(v) for k, v in ref[name].items()}})
        print(name, rows[-1], flush=True)
    if merged:
        rows += [r for r in merged["rows"] if r["mode"] == "sedpa-s"]

    todo = [(cal, scope, ratio, search) for cal in csv(args.calibrations) for scope in csv(args.scopes)
            for ratio in csv(args.ratios, float) for search in csv(args.searches)
            if (cal, scope, ratio, search) not in done]
    stats = {}
    for cal in dict.fromkeys(t[0] for t in todo):
        t0 = time.perf_counter()
        stats[cal] = calibrate(base, CalibrateConfig(data=cal_data, tokens=args.cal_tokens, seq_len=args.cal_seq_len,
                                                     attention=cal), show_progress=False, pattern=pattern)
        print(f"calibrated under {cal} attention in {time.perf_counter() - t0:.0f} s", flush=True)

    sens = None
    if any(t[3] == "fisher" for t in todo):  # an experiment, not a product search (yet)
        t0 = time.perf_counter()
        sens = output_sensitivities(base, pattern, args.cal_tokens // 4, args.cal_seq_len, cal_data)
        print(f"output sensitivities in {time.perf_counter() - t0:.0f} s", flush=True)
    import sedpa_compress.svd.compress as compress_module

    product_search = compress_module.search_ranks
    experiments = {"fisher": lambda scope: fisher_search(base, pattern, scope, sens),
                   "greedy-before": lambda scope: greedy_before_issue16}  # not product searches
    for cal, scope, ratio, search in todo:
        loaded = dataclasses.replace(base, model=copy.deepcopy(base.model))
        compress_module.search_ranks = experiments[search](scope) if search in experiments else product_search
        cfg = CompressConfig(rank_ratio=ratio, scope=scope, rank_search="greedy" if search in experiments else search,
                             min_rank=args.min_rank)
        report = compress_model(loaded, stats[cal], pattern, cfg, show_progress=False)
        compress_module.search_ranks = product_search
        s = score(loaded.model, duo)
        rows.append({
            "mode": "sedpa-s", "search": search, "scope": scope, "rank_ratio": ratio, "calibration": cal,
            "params_kept": round(report.model_params_after / params_before, 5),
            "slice_params_kept": round(report.slice_params_after / report.slice_params_before, 5),
            "model_params_after": report.model_params_after,
            "dense_slices": len(report.dense_slices), "slices": len(report.projections),
            "min_rank": min((p.rank for p in report.projections if p.rank is not None), default=None),
            "ranks": {p.name.replace("model.layers.", "").replace(".self_attn", ""): p.rank for p in report.projections},
            **{k: _round(v) for k, v in s.items()},
            "vs_duo": round(s["ppl"] / ref["duo"]["ppl"] - 1, 5),
            "vs_full": round(s["ppl"] / ref["full"]["ppl"] - 1, 5),
            "factor_s": round(report.wall_s, 2),
        })
        print({k: rows[-1][k] for k in ("calibration", "scope", "rank_ratio", "search", "ppl", "vs_duo",
                                         "exact", "answer_nll", "params_kept", "dense_slices")}, flush=True)
        del loaded

    summary = summarize(rows, ref)
    settings = {
        "pattern": str(pattern_path), "retrieval_heads": sum(map(sum, pattern.mask)),
        "kv_heads": pattern.num_layers * pattern.num_kv_heads, "sink": pattern.sink, "recent": pattern.recent,
        "calibration": {"data": {"train": "bundled text (train split: sedpa-tiny's training text)",
                                 "heldout-rest": "bundled held-out text after the perplexity windows"}[args.cal_text],
                        "tokens_asked": args.cal_tokens, "tokens": {k: v.tokens for k, v in stats.items()},
                        "seq_len": args.cal_seq_len},
        "ppl": {"data": "bundled held-out text, its first tokens",
                "seq_len": args.ppl_seq_len, "windows": len(windows),
                "tokens": sum(len(w) - 1 for w in windows), "attention": "duo (the pattern's attention)"},
        "niah": {"lengths": niah_cfg.lengths, "depths": niah_cfg.depths, "samples": niah_cfg.samples,
                 "prompts": len(prompts), "scoring": "teacher-forced exact (= greedy exact), answer NLL",
                 "templates": "held-out, the prompts of `sedpa bench niah` (seed 0)"},
        "min_rank": args.min_rank, "dtype": "float32",
        "eval_digest": _digest(windows, prompts),
    }
    result = make_result("rank-search", model=base.name, settings=settings, rows=rows, summary=summary,
                         device="cpu" if device.type == "cpu" else None,
                         command="PYTHONPATH=. python " + " ".join(sys.argv),
                         wall_s=round(time.perf_counter() - t_all, 1))
    write_result(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def output_sensitivities(loaded, pattern: HeadPattern, tokens: int, seq_len: int,
                         data: str | None) -> dict[str, torch.Tensor]:
    """E_t[(dL/dy)²] per output coordinate of every q/k/v/o projection (L: next-token cross-entropy on the
    calibration text under the pattern's attention): how much a unit of output error costs in loss."""
    from sedpa_compress.calibration.sources import iter_texts, token_batches

    model = loaded.model
    acc: dict[str, torch.Tensor] = {}
    count = [0]
    handles = []
    for li, attn in enumerate(loaded.family.attention_modules(model)):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            name = f"model.layers.{li}.self_attn.{proj}"

            def fwd(_m, _inp, out, name=name):
                def grad(g):
                    g2 = g.detach().float().pow(2).reshape(-1, g.shape[-1]).sum(0)
                    acc[name] = acc.get(name, 0) + g2
                out.register_hook(grad)

            handles.append(getattr(attn, proj).register_forward_hook(fwd))
    emb = model.get_input_embeddings()
    handles.append(emb.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True)))
    mode = GatedAttention.from_mask(pattern.mask, sink=pattern.sink, recent=pattern.recent, device=loaded.device)
    try:
        with using_mode(model, mode):
            for seq in token_batches(iter_texts(data), loaded.encode, seq_len=seq_len, max_tokens=tokens):
                ids = torch.tensor([seq], device=loaded.device)
                logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
                F.cross_entropy(logits, ids[0, 1:]).backward()
                count[0] += 1
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {k: v / max(count[0], 1) for k, v in acc.items()}


def fisher_search(loaded, pattern, scope, sens: dict[str, torch.Tensor]):
    """A rank search minimising Σ sensitivity_i · whitened error_i: each slice's error in loss units
    (mean squared loss gradient over its output coordinates times its output error)."""
    from sedpa_compress.svd import rank_search
    from sedpa_compress.svd.compress import plan_slices

    slices = {s.name: s for s in plan_slices(loaded, pattern, scope)}

    def search(spectra, rank_ratio, method="greedy", *, min_rank=1):
        weights = []
        for spec in spectra:
            s, g = slices[spec.name], sens[spec.name]
            weights.append(float(g[s.lowrank_index].mean()) if s.split == "rows" else float(g.mean()))
        return rank_search._greedy(spectra, rank_search.budget(spectra, rank_ratio), weights, min_rank)

    return search


def greedy_before_issue16(spectra, rank_ratio, method="greedy", *, min_rank=1):
    """The greedy search as it was before issue 16 (commit f8e5f38), for comparison: every slice starts
    factored at floor(mn / (m + n)) (its tail dropped for no saving), never dense, and singular values
    go in increasing order of σ² / (m + n), down to rank 0. (A square slice's exact break-even rank,
    mn / (m + n), is capped one lower: the factors are computed up to the largest rank that saves.)"""
    from sedpa_compress.svd import rank_search

    limit = rank_search.budget(spectra, rank_ratio)
    ranks = [min(s.dense_params // s.params_per_rank, s.singular_values.numel()) for s in spectra]
    excess = sum(r * s.params_per_rank for r, s in zip(ranks, spectra)) - limit
    if excess <= 0:
        return ranks
    values = torch.cat([s.singular_values[:r].double() ** 2 / s.params_per_rank for s, r in zip(spectra, ranks)])
    owners = torch.cat([torch.full((r,), i, dtype=torch.long) for i, r in enumerate(ranks)])
    owners = owners[torch.argsort(values, stable=True)]
    costs = torch.tensor([s.params_per_rank for s in spectra], dtype=torch.long)[owners]
    n = int(torch.searchsorted(torch.cumsum(costs, 0), torch.tensor(excess), right=False)) + 1
    removed = torch.bincount(owners[:n], minlength=len(spectra))
    return [min(r - int(k), s.max_rank) for r, k, s in zip(ranks, removed, spectra)]


def _key(r: dict[str, Any]) -> tuple:
    return (r["calibration"], r["scope"], r["rank_ratio"], r["search"])


def _digest(windows: list[list[int]], prompts: list) -> str:
    return hashlib.sha256(json.dumps([windows, prompts]).encode()).hexdigest()[:16]


def _previous(path: Path, pattern_path: Path, windows: list[list[int]], prompts: list) -> dict[str, Any]:
    """A previous result to extend; refused unless it scored the same text and needles with the same pattern."""
    old = json.loads(Path(path).read_text())
    if old.get("settings", {}).get("eval_digest") != _digest(windows, prompts) or old["settings"].get("pattern") != str(pattern_path):
        raise SystemExit(f"--merge {path}: scored other text, needles or another pattern; rerun without --merge")
    return old


def _round(v):
    return round(v, 5) if isinstance(v, float) else v


def summarize(rows: list[dict[str, Any]], ref: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per (search, calibration): perplexity change against duo, NIAH exact and answer NLL at every (scope,
    ratio), their means, and whether it dominates uniform (same calibration) in every cell: perplexity
    and answer NLL no worse, NIAH exact no lower. The winner: of the searches that dominate uniform, the
    lowest mean log-perplexity (of all, when none does); likewise the better calibration for it."""
    out: dict[str, Any] = {"full": {k: _round(v) for k, v in ref["full"].items()},
                           "duo": {k: _round(v) for k, v in ref["duo"].items()}}
    cells = [r for r in rows if r["mode"] == "sedpa-s"]
    keys = sorted({(r["calibration"], r["search"]) for r in cells})
    by = {_key(r): r for r in cells}
    scores, dominant = {}, set()
    for cal, search in keys:
        mine = [r for r in cells if r["calibration"] == cal and r["search"] == search]
        entry = {f"{r['scope']}@{r['rank_ratio']}": {"ppl": r["ppl"], "vs_duo": r["vs_duo"], "exact": r["exact"],
                                                     "answer_nll": r["answer_nll"]} for r in mine}
        entry["mean_log_ppl"] = round(sum(math.log(r["ppl"]) for r in mine) / len(mine), 5)
        entry["mean_answer_nll"] = round(sum(r["answer_nll"] for r in mine) / len(mine), 5)
        entry["mean_exact"] = round(sum(r["exact"] for r in mine) / len(mine), 4)
        uni = [by.get((cal, r["scope"], r["rank_ratio"], "uniform")) for r in mine]
        if search != "uniform" and all(uni):
            entry["dominates_uniform_ppl"] = all(r["ppl"] <= u["ppl"] for r, u in zip(mine, uni))
            entry["dominates_uniform"] = entry["dominates_uniform_ppl"] and all(
                r["answer_nll"] <= u["answer_nll"] and r["exact"] >= u["exact"] for r, u in zip(mine, uni))
            if entry["dominates_uniform"]:
                dominant.add((cal, search))
        out[f"{search}/{cal}-calibration"] = entry
        scores[(cal, search)] = entry["mean_log_ppl"]
    pool = {k: v for k, v in scores.items() if k in dominant} or scores
    if pool:
        (cal, search), _ = min(pool.items(), key=lambda kv: kv[1])
        out["winner"] = {"search": search, "calibration": cal,
                         "by": ("lowest mean log-perplexity among the searches that dominate uniform (perplexity, "
                                "answer NLL, NIAH exact) in every cell" if dominant else
                                "lowest mean log-perplexity (no search dominates uniform in every cell)")}
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sedpa_compress.atomic import atomic_write_figure

    rows = [r for r in result["rows"] if r["mode"] == "sedpa-s"]
    scopes = list(dict.fromkeys(r["scope"] for r in rows))
    fig, axes = plt.subplots(3, len(scopes), figsize=(6 * len(scopes), 13), squeeze=False)
    ref = {r["mode"]: r for r in result["rows"] if r["mode"] in ("full", "duo")}
    colors = {"relative": "tab:green", "greedy": "tab:blue", "uniform": "tab:grey", "type": "tab:orange",
              "balanced": "tab:purple", "fisher": "tab:red", "greedy-before": "tab:brown"}
    for col, scope in enumerate(scopes):
        for row, metric, label in ((0, "ppl", "held-out perplexity (duo attention)"),
                                   (1, "answer_nll", "NIAH answer NLL per value token (lower: better)"),
                                   (2, "exact", "NIAH exact (teacher-forced)")):
            ax = axes[row][col]
            for (cal, search) in sorted({(r["calibration"], r["search"]) for r in rows}):
                mine = sorted((r for r in rows if r["scope"] == scope and r["calibration"] == cal
                               and r["search"] == search), key=lambda r: r["params_kept"])
                ax.plot([r["params_kept"] for r in mine], [r[metric] for r in mine], marker="o", markersize=4,
                        linestyle="-" if cal == "full" else "--", color=colors.get(search), alpha=0.85,
                        label=f"{search}, {cal}-attention calibration")
            for name, style in (("full", ":"), ("duo", "-.")):
                if name in ref:
                    ax.axhline(ref[name][metric], color="black", linestyle=style, linewidth=1, label=f"{name} (dense)")
            ax.set_xlabel("parameters kept (fraction of the whole model)")
            ax.set_ylabel(label)
            ax.set_title(f"{result['model']}, scope {scope}", fontsize=10)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    atomic_write_figure(path, fig, dpi=110)


if __name__ == "__main__":
    main()
