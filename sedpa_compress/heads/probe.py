"""`sedpa heads probe`: does the gate score find the heads retrieval needs? (the seeds' motivating experiment)

On the same held-out needle examples, greedy answers are scored with
- `full`: every head full attention (the reference accuracy),
- `top-K`: the K KV heads with the largest gates forced to streaming (sink + recent), the rest full,
- `bottom-K`: the K smallest-gate heads forced to streaming,
- `random-K`: K random heads forced to streaming (several draws),
- `duo`: the pattern's mask at the retrieval ratio, and `random-duo`: random masks with as many
  retrieval heads (several draws), and `streaming`: every head streaming (the floor).
If the gates are right, top-K breaks retrieval, bottom-K does not, and duo beats random-duo.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sedpa_compress.atomic import atomic_write_figure
from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern, head_order
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.runtime.reference import AttentionMode, using_mode

Head = tuple[int, int]


@dataclass
class ProbeConfig:
    k: int = 4
    contexts: list[int] = field(default_factory=lambda: [1024, 2048])
    depths: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    samples: int = 2  # examples per (context, depth)
    random_trials: int = 3
    retrieval_ratio: float | None = None  # for duo / random-duo; None: the pattern's own mask
    seed: int = 0
    haystack: str | None = None  # None: the bundled held-out text
    max_new_tokens: int | None = None  # None: enough for the longest answer

    def validate(self, pattern: HeadPattern, max_positions: int) -> ProbeConfig:
        total = pattern.num_layers * pattern.num_kv_heads
        if not 1 <= self.k <= total:
            raise SedpaError(f"--k {self.k}: pass 1..{total} (the model has {total} KV heads)")
        if not self.contexts or any(c < 16 for c in self.contexts):
            raise SedpaError(f"--contexts {self.contexts}: pass token counts such as 1024,2048")
        if max_positions and max(self.contexts) + 32 > max_positions:
            raise SedpaError(f"--contexts {max(self.contexts)} is beyond the model's {max_positions}-token limit: pass shorter contexts")
        if not self.depths or any(not 0 <= d <= 1 for d in self.depths):
            raise SedpaError(f"--depths {self.depths}: pass fractions in [0, 1] such as 0.1,0.5,0.9")
        if self.samples < 1 or self.random_trials < 1:
            raise SedpaError("--samples and --random-trials must be >= 1")
        if self.retrieval_ratio is not None and not 0 <= self.retrieval_ratio <= 1:
            raise SedpaError(f"--retrieval-ratio {self.retrieval_ratio} is outside [0, 1]")
        return self


def ranked_heads(pattern: HeadPattern) -> list[Head]:
    """All (layer, kv_head), largest gate first; ties as `binarize` breaks them (`head_order`)."""
    return head_order(pattern.gates)


def with_streaming(pattern: HeadPattern, streaming: set[Head]) -> HeadPattern:
    """The same gates with a mask that makes exactly `streaming` heads streaming and the rest retrieval."""
    mask = [[0 if (li, h) in streaming else 1 for h in range(pattern.num_kv_heads)] for li in range(pattern.num_layers)]
    return HeadPattern(gates=pattern.gates, mask=mask, sink=pattern.sink, recent=pattern.recent, model=pattern.model,
                       revision=pattern.revision)


def probe_conditions(pattern: HeadPattern, cfg: ProbeConfig) -> list[tuple[str, str, int, HeadPattern | None]]:
    """(condition, mode, trial, pattern) for every arm of the probe; pattern None = full or streaming."""
    ranked = ranked_heads(pattern)
    every = set(ranked)
    rng = random.Random(cfg.seed + 7919)
    k = cfg.k
    arms: list[tuple[str, str, int, HeadPattern | None]] = [("full", "full", 0, None), ("streaming", "streaming", 0, None)]
    arms.append((f"top-{k}", "duo", 0, with_streaming(pattern, set(ranked[:k]))))
    arms.append((f"bottom-{k}", "duo", 0, with_streaming(pattern, set(ranked[-k:]))))
    for t in range(cfg.random_trials):
        arms.append((f"random-{k}", "duo", t, with_streaming(pattern, set(rng.sample(ranked, k)))))
    duo = pattern.with_ratio(cfg.retrieval_ratio) if cfg.retrieval_ratio is not None else pattern
    retrieval = {(li, h) for li, row in enumerate(duo.mask) for h, m in enumerate(row) if m}
    arms.append(("duo", "duo", 0, with_streaming(pattern, every - retrieval)))
    for t in range(cfg.random_trials):
        keep = set(rng.sample(ranked, len(retrieval)))
        arms.append(("random-duo", "duo", t, with_streaming(pattern, every - keep)))
    return arms


class _ByteTokenizer:
    """For random-weight presets without a tokenizer: the same UTF-8 bytes `LoadedModel.encode` uses."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [b % self.vocab for b in text.encode("utf-8")]


def make_examples(loaded: LoadedModel, cfg: ProbeConfig) -> list[tuple[int, Any]]:
    """(requested context, NeedleExample) for every context x depth x sample, from the held-out templates."""
    from sedpa_compress.data.needles import HELDOUT_TEMPLATES, make_needle_example
    from sedpa_compress.data.text import load_haystack

    tok = loaded.tokenizer or _ByteTokenizer(loaded.model.config.vocab_size)
    hay = load_haystack(Path(cfg.haystack) if cfg.haystack else None, min_chars=max(cfg.contexts) * 8)
    rng = random.Random(cfg.seed)
    return [(c, make_needle_example(tok, hay, c, [d], rng, templates=HELDOUT_TEMPLATES))
            for c in cfg.contexts for d in cfg.depths for _ in range(cfg.samples)]


@torch.no_grad()
def greedy_answer(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None, max_new_tokens: int) -> str:
    model = loaded.model
    input_ids = torch.tensor([ids], device=loaded.device)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer is not None else None
    eos = loaded.tokenizer.eos_token_id if loaded.tokenizer is not None else None
    with using_mode(model, mode):
        out = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad if pad is not None else (eos if eos is not None else 0))
    return loaded.decode(out[0, input_ids.shape[1]:].tolist())


def run_probe(loaded: LoadedModel, pattern: HeadPattern, cfg: ProbeConfig, *, progress: bool = False) -> dict[str, Any]:
    """Run every arm on the same examples; return the benchmark result (ARCHITECTURE.md shape)."""
    from sedpa_compress.data.needles import score_answer
    from sedpa_compress.runtime.modes import build_mode

    pattern.validate_for(loaded.geometry)
    cfg.validate(pattern, loaded.geometry.max_position_embeddings)
    examples = make_examples(loaded, cfg)
    prompts = [loaded.encode(ex.prompt) for _, ex in examples]
    new_tokens = cfg.max_new_tokens or max(len(loaded.encode(" " + ex.answer)) for _, ex in examples) + 2
    arms = probe_conditions(pattern, cfg)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    bar = _bar(len(arms) * len(examples), progress)
    with bar:
        for condition, mode_name, trial, arm_pattern in arms:
            mode = build_mode(mode_name, pattern=arm_pattern, sink=pattern.sink, recent=pattern.recent) \
                if mode_name != "full" else None
            streaming = sorted(
                [li, h] for li, row in enumerate(arm_pattern.mask) for h, m in enumerate(row) if not m
            ) if arm_pattern is not None else ([] if mode_name == "full" else "all")
            for (target, ex), ids in zip(examples, prompts):
                text = greedy_answer(loaded, ids, mode, new_tokens)
                exact, partial = score_answer(text, ex.answer)
                rows.append({"mode": mode_name, "condition": condition, "trial": trial, "context": ex.context_tokens,
                             "target_context": target,
                             "depth": ex.depths[0], "accuracy": exact, "partial": partial,
                             "answer": ex.answer, "generated": text.strip()[:40]})
                bar.advance(f"{condition}#{trial}")
            rows[-1]["streaming_heads"] = streaming  # once per arm: which heads this arm forced
    summary = summarize(rows)
    findings = _findings(summary, cfg.k)
    settings = {**asdict(cfg), "sink": pattern.sink, "recent": pattern.recent, "num_examples": len(examples),
                "max_new_tokens": new_tokens, "pattern_model": pattern.model,
                "pattern_retrieval_ratio": pattern.retrieval_ratio,
                "top_heads": [list(h) for h in ranked_heads(pattern)[: cfg.k]],
                "bottom_heads": [list(h) for h in ranked_heads(pattern)[-cfg.k:]]}
    return make_result("probe", model=loaded.name, settings=settings, rows=rows, summary=summary,
                       device=str(loaded.device) if loaded.device.type == "cpu" else None,
                       findings=findings, wall_s=round(time.perf_counter() - t0, 2))


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cond in dict.fromkeys(r["condition"] for r in rows):
        sel = [r for r in rows if r["condition"] == cond]
        trials = sorted({r["trial"] for r in sel})
        per_trial = [sum(r["accuracy"] for r in sel if r["trial"] == t) / sum(1 for r in sel if r["trial"] == t)
                     for t in trials]
        out[cond] = {"mode": sel[0]["mode"], "accuracy": sum(r["accuracy"] for r in sel) / len(sel),
                     "partial": sum(r["partial"] for r in sel) / len(sel), "n": len(sel), "trials": len(trials),
                     "accuracy_min": min(per_trial), "accuracy_max": max(per_trial)}
        by_ctx: dict[int, list[float]] = {}
        for r in sel:
            by_ctx.setdefault(r["target_context"], []).append(r["accuracy"])
        out[cond]["accuracy_by_context"] = {str(c): sum(v) / len(v) for c, v in sorted(by_ctx.items())}
    return out


def _findings(summary: dict[str, dict[str, Any]], k: int) -> dict[str, float]:
    """The acceptance numbers, in accuracy points (0-100)."""
    acc = {c: s["accuracy"] * 100 for c, s in summary.items()}
    full = acc["full"]
    return {
        "full_accuracy_points": round(full, 2),
        "top_k_drop_points": round(full - acc[f"top-{k}"], 2),
        "bottom_k_drop_points": round(full - acc[f"bottom-{k}"], 2),
        "random_k_drop_points": round(full - acc[f"random-{k}"], 2),
        "duo_drop_points": round(full - acc["duo"], 2),
        "duo_minus_random_duo_points": round(acc["duo"] - acc["random-duo"], 2),
        "streaming_drop_points": round(full - acc["streaming"], 2),
    }


def plot_probe(result: dict[str, Any], path: Path) -> Path:
    """Bars: accuracy per arm (random arms with their min-max over draws); lines: accuracy by context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    conds = list(summary)
    acc = [summary[c]["accuracy"] * 100 for c in conds]
    lo = [acc[i] - summary[c]["accuracy_min"] * 100 for i, c in enumerate(conds)]
    hi = [summary[c]["accuracy_max"] * 100 - acc[i] for i, c in enumerate(conds)]
    colors = {"full": "black", "streaming": "grey", "duo": "tab:green", "random-duo": "tab:olive"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bars = ax1.bar(conds, acc, yerr=[lo, hi], capsize=3,
                   color=[colors.get(c, "tab:red" if c.startswith("top") else "tab:blue" if c.startswith("bottom")
                                     else "tab:purple") for c in conds])
    ax1.bar_label(bars, labels=[f"{a:.0f}" for a in acc], padding=2, fontsize=8)
    ax1.set_ylabel("needle accuracy (%)")
    ax1.set_ylim(0, 105)
    ax1.set_title(f"{result['model']}: heads forced to streaming (K={result['settings']['k']})", fontsize=9)
    ax1.tick_params(axis="x", rotation=30)
    for c in conds:
        by = summary[c]["accuracy_by_context"]
        ax2.plot([int(x) for x in by], [v * 100 for v in by.values()], marker="o", label=c)
    ax2.set_xscale("log", base=2)
    ticks = sorted({int(x) for c in conds for x in summary[c]["accuracy_by_context"]})
    ax2.set_xticks(ticks, [str(t) for t in ticks])
    ax2.minorticks_off()
    ax2.set_xlabel("context (tokens)")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_ylim(-5, 105)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return atomic_write_figure(Path(path), fig, dpi=120)


def write_probe(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out = Path(out)
    write_result(out, result)
    png = out.with_suffix(".png")
    plot_probe(result, png)
    return out, png


class _bar:
    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("[bold]probe"), TextColumn("{task.fields[arm]}"), BarColumn(),
                              MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self.task = self.p.add_task("probe", total=total, arm="")

    def __enter__(self) -> _bar:
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.p.__exit__(*exc)

    def advance(self, arm: str) -> None:
        if self.enabled:
            self.p.update(self.task, advance=1, arm=arm)
