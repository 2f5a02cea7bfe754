"""`sedpa bench efficiency`: prefill time, decode latency, KV bytes and peak memory per mode and
context on the fast CUDA runtime, each decode latency next to its memory-bandwidth floor (the bytes a
decode step must read, over the device's measured copy bandwidth). Plain transformers decoding is a
reference row. `--max-context` instead finds the longest context each mode decodes on this GPU.

Random-weight geometry runs (`--config llama-3-8b --random-weights`) use a synthetic head pattern
(random gates binarised at `--retrieval-ratio`) and random low-rank factors at the rank that
`--rank-ratio` implies; timing does not depend on the values, and the JSON settings say so.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.runtime.model import MODES, FastModel, RuntimeSpec
from sedpa_compress.runtime.runner import Runner
from sedpa_compress.runtime import memory

REFERENCE_MODE = "transformers"  # plain transformers (sdpa) decoding, the reference row


@dataclass
class EfficiencyConfig:
    model: str | None = None
    config: str | None = None
    random_weights: bool = False
    pattern: Path | None = None
    contexts: list[int] = field(default_factory=lambda: [8192, 32768, 65536, 131072])
    modes: list[str] = field(default_factory=lambda: ["full", "duo", "sedpa-w", "tidal"])
    retrieval_ratio: float = 0.5
    rank_ratio: float = 0.85
    sink: int = 64
    recent: int = 256
    window: int = 8192
    top_k: int = 2048
    decode_tokens: int = 64
    warmup_tokens: int = 8
    chunk: int = 8192
    reference_max: int = 65536  # plain transformers rows up to this context (0: none)
    max_context: bool = False
    time_budget_s: float | None = None  # stop starting new rows after this long
    out: Path = Path("bench/results/efficiency.json")
    seed: int = 0


def parse_contexts(value: str) -> list[int]:
    """"8k,32k,64k,128k,1.5m" -> [8192, 32768, 65536, 131072, 1572864]."""
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = {"k": 1024, "m": 1024 * 1024}.get(part[-1], 1)
        try:
            n = int(float(part[:-1] if mult > 1 else part) * mult)
        except ValueError:
            raise SedpaError(f"--contexts {value!r}: use sizes like 8k,32k,131072") from None
        if n < 1:
            raise SedpaError(f"--contexts: {part} is not a positive size")
        out.append(n)
    if not out:
        raise SedpaError("--contexts is empty: pass e.g. 8k,32k,64k,128k")
    return out


def synthetic_pattern(geometry, *, ratio: float, sink: int, recent: int, seed: int = 0) -> HeadPattern:
    g = torch.Generator().manual_seed(seed)
    gates = torch.rand(geometry.num_layers, geometry.num_kv_heads, generator=g).tolist()
    return HeadPattern.from_gates(gates, sink=sink, recent=recent, retrieval_ratio=ratio, model="synthetic",
                                  training={"synthetic": "random gates for timing; not a trained pattern"})


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written."""
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    s.record()
    for _ in range(reps):
        b.copy_(a)
    e.record()
    torch.cuda.synchronize()
    bw = 2 * nbytes * reps / (s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return bw


def kv_bytes_read(model: FastModel, context: int) -> int:
    """KV bytes one decode step reads at `context` cached tokens."""
    spec, e, d = model.spec, model.dtype.itemsize, model.d
    total = 0
    for li, layer in enumerate(model.layers):
        for grp in layer.groups:
            n = context if grp.kind == "full" else min(context, spec.sink + grp.band)
            if spec.mode == "tidal" and li > model.tidal_first and li not in model.tidal_select:
                n = min(n, spec.top_k)
            total += 2 * grp.size * n * d * e
    return total


def _median_decode_ms(runner: Runner, warmup: int, tokens: int) -> float:
    tok = torch.zeros(runner.batch, dtype=torch.long, device=runner.model.device)
    for _ in range(warmup):
        runner.decode(tok)
    times = []
    for _ in range(tokens):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        runner.decode(tok)
        e.record()
        times.append((s, e))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in times)


def _free_gpu() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def run_efficiency(cfg: EfficiencyConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise SedpaError("sedpa bench efficiency measures the CUDA runtime: run it on a machine with an NVIDIA GPU")
    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise SedpaError(f"unknown --attention {','.join(bad)}: choose from {','.join(MODES)}")
    if cfg.window < cfg.recent:
        raise SedpaError(f"--window {cfg.window} is smaller than --recent {cfg.recent}: the window must cover the recent tokens")
    from sedpa_compress.models import load_model

    t_start = time.perf_counter()
    dev = torch.device("cuda")
    loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype="bfloat16",
                        device="cuda", seed=cfg.seed)
    geo = loaded.geometry
    if cfg.pattern is not None:
        pattern = HeadPattern.load(cfg.pattern, geo).with_ratio(cfg.retrieval_ratio)
        pattern_source = str(cfg.pattern)
    elif loaded.artifact and loaded.artifact.get("pattern_path"):
        pattern = HeadPattern.load(Path(loaded.artifact["pattern_path"]), geo).with_ratio(cfg.retrieval_ratio)
        pattern_source = "artifact"
    else:
        pattern = synthetic_pattern(geo, ratio=cfg.retrieval_ratio, sink=cfg.sink, recent=cfg.recent, seed=cfg.seed)
        pattern_source = "synthetic (random gates)"
    factored = loaded.artifact is not None
    rank_ratio = None if factored else cfg.rank_ratio
    bw = copy_bandwidth(dev)
    progress(f"copy bandwidth {bw / 1e12:.2f} TB/s (read + write)")
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                "pattern_source": pattern_source, "actual_retrieval_ratio": pattern.actual_retrieval_ratio,
                "low_rank": "artifact factors" if factored else f"synthetic random factors at rank ratio {cfg.rank_ratio}",
                "copy_bandwidth_Bps": bw, "dtype": "bfloat16", "batch": 1,
                "floor": "bytes read per decode step (weights except the embedding table + KV read) / copy bandwidth",
                "decode_ms": f"median over {cfg.decode_tokens} tokens after {cfg.warmup_tokens} warm-up, CUDA events",
                "prefill": "random token ids, chunked prefill, wall clock with synchronize"}

    def over_budget() -> bool:
        return cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s

    rows: list[dict[str, Any]] = []
    if cfg.max_context:
        rows = _max_context_rows(cfg, loaded, pattern, rank_ratio, bw, progress, over_budget)
    else:
        if cfg.reference_max:
            rows += _reference_rows(cfg, loaded, bw, progress, over_budget)
        for mode in cfg.modes:
            rows += _mode_rows(cfg, loaded, mode, pattern, rank_ratio, bw, progress, over_budget)
    result = make_result("efficiency", model=loaded.name, settings=settings, rows=rows,
                         summary=_summary(rows, cfg.max_context))
    write_result(cfg.out, result)
    if not cfg.max_context:
        plot(result, cfg.out.with_suffix(".png"))
    return result


def _spec(cfg: EfficiencyConfig, mode: str, pattern: HeadPattern) -> RuntimeSpec:
    return RuntimeSpec(mode=mode, pattern=pattern if mode in ("duo", "sedpa-s", "sedpa-w") else None, sink=cfg.sink,
                       recent=cfg.recent, window=cfg.window if mode == "sedpa-w" else None, top_k=cfg.top_k)


def _mode_rows(cfg, loaded, mode, pattern, rank_ratio, bw, progress, over_budget) -> list[dict[str, Any]]:
    rows = []
    fast = FastModel(loaded, _spec(cfg, mode, pattern), synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None,
                     seed=cfg.seed)
    weights_read = fast.bytes_read_per_token()
    for ctx in cfg.contexts:
        if over_budget():
            rows.append({"mode": mode, "context": ctx, "skipped": "time budget"})
            continue
        _free_gpu()
        torch.cuda.reset_peak_memory_stats()
        max_len = ctx + cfg.warmup_tokens + cfg.decode_tokens + 8
        try:
            runner = Runner(fast, max_len=max_len, chunk=cfg.chunk)
        except SedpaError as err:
            rows.append({"mode": mode, "context": ctx, "skipped": str(err)})
            progress(f"{mode} @ {ctx}: {err}")
            continue
        ids = torch.randint(0, fast.vocab, (1, ctx), device="cuda", generator=torch.Generator("cuda").manual_seed(cfg.seed))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        runner.prefill(ids)
        torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t0
        decode_ms = _median_decode_ms(runner, cfg.warmup_tokens, cfg.decode_tokens)
        kv_read = kv_bytes_read(fast, ctx)
        floor_ms = (weights_read + kv_read) / bw * 1e3
        row = {"mode": mode, "context": ctx, "prefill_s": round(prefill_s, 4), "decode_ms": round(decode_ms, 3),
               "floor_ms": round(floor_ms, 3), "floor_ratio": round(decode_ms / floor_ms, 3),
               "kv_bytes": memory.cache_bytes(fast, batch=1, max_len=ctx), "kv_read_bytes": kv_read,
               "weight_read_bytes": weights_read, "peak_bytes": torch.cuda.max_memory_allocated(),
               "tokens_per_s": round(1e3 / decode_ms, 2)}
        rows.append(row)
        progress(f"{mode:9s} {ctx:>8d}  prefill {prefill_s:7.2f} s  decode {decode_ms:7.2f} ms  floor {floor_ms:6.2f} ms "
                 f"(x{decode_ms / floor_ms:.2f})  kv {row['kv_bytes'] / 2**30:6.2f} GiB")
        del runner, ids
    del fast
    _free_gpu()
    return rows


def _reference_rows(cfg, loaded, bw, progress, over_budget) -> list[dict[str, Any]]:
    """Plain transformers: prefill with a DynamicCache, then one token at a time."""
    rows = []
    model = loaded.model
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - (
        model.model.embed_tokens.weight.numel() * model.model.embed_tokens.weight.element_size())
    for ctx in [c for c in cfg.contexts if c <= cfg.reference_max]:
        if over_budget():
            rows.append({"mode": REFERENCE_MODE, "context": ctx, "skipped": "time budget"})
            continue
        _free_gpu()
        torch.cuda.reset_peak_memory_stats()
        ids = torch.randint(0, model.config.vocab_size, (1, ctx), device="cuda")
        with torch.inference_mode():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            prefill_s = time.perf_counter() - t0
            pkv = out.past_key_values
            tok = torch.zeros(1, 1, dtype=torch.long, device="cuda")
            times = []
            n = max(8, cfg.decode_tokens // 4)  # it is slow; fewer tokens keep the run short
            for i in range(cfg.warmup_tokens // 2 + n):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                out = model(tok, past_key_values=pkv, use_cache=True)
                e.record()
                pkv = out.past_key_values
                if i >= cfg.warmup_tokens // 2:
                    times.append((s, e))
            torch.cuda.synchronize()
        decode_ms = statistics.median(s.elapsed_time(e) for s, e in times)
        geo = loaded.geometry
        kv = 2 * geo.num_layers * geo.num_kv_heads * geo.head_dim * ctx * 2
        floor_ms = (weights + kv) / bw * 1e3
        rows.append({"mode": REFERENCE_MODE, "context": ctx, "prefill_s": round(prefill_s, 4),
                     "decode_ms": round(decode_ms, 3), "floor_ms": round(floor_ms, 3),
                     "floor_ratio": round(decode_ms / floor_ms, 3), "kv_bytes": kv,
                     "peak_bytes": torch.cuda.max_memory_allocated(), "decode_tokens_measured": n,
                     "tokens_per_s": round(1e3 / decode_ms, 2)})
        progress(f"{REFERENCE_MODE:9s} {ctx:>8d}  prefill {prefill_s:7.2f} s  decode {decode_ms:7.2f} ms  floor {floor_ms:6.2f} ms")
        del out, pkv, ids
    _free_gpu()
    return rows


def _max_context_rows(cfg, loaded, pattern, rank_ratio, bw, progress, over_budget) -> list[dict[str, Any]]:
    """Per mode: the estimate, then a verification that allocates that much and decodes a few tokens
    (the cache filled with random K/V: a real prefill of a million tokens would take minutes)."""
    from sedpa_compress.models import load_model

    rows = []
    for i, mode in enumerate(cfg.modes):
        if over_budget():
            rows.append({"mode": mode, "skipped": "time budget"})
            continue
        if i > 0:  # the previous mode consumed the weights: load them again
            loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype="bfloat16",
                                device="cuda", seed=cfg.seed)
        fast = FastModel(loaded, _spec(cfg, mode, pattern), consume=True,
                         synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None, seed=cfg.seed)
        loaded = None  # the transformers copy is gone: only the runtime's weights stay resident
        _free_gpu()
        estimate = memory.max_context(fast, chunk=cfg.chunk)
        bounded = estimate < (1 << 30)
        n = estimate if bounded else max(cfg.contexts)
        row: dict[str, Any] = {"mode": mode, "max_context_estimate": estimate if bounded else None}
        for attempt in range(4):
            try:
                runner = Runner(fast, max_len=n, chunk=cfg.chunk)
                runner.fill_synthetic(n - cfg.decode_tokens // 4 - cfg.warmup_tokens)
                decode_ms = _median_decode_ms(runner, cfg.warmup_tokens, cfg.decode_tokens // 4)
                row.update(max_context=n, verified=True, decode_ms=round(decode_ms, 3),
                           kv_bytes=runner.kv_bytes(), peak_bytes=torch.cuda.max_memory_allocated(),
                           unbounded=not bounded)
                del runner
                break
            except (torch.OutOfMemoryError, SedpaError) as err:
                progress(f"{mode} at {n}: {type(err).__name__}; trying 5% less")
                runner = None
                _free_gpu()
                n = int(n * 0.95)
        else:
            row.update(max_context=None, verified=False)
        rows.append(row)
        progress(f"{mode:9s} max context {row.get('max_context')} (estimate {estimate if bounded else 'unbounded'})")
        del fast
        _free_gpu()
    return rows


def _summary(rows: list[dict[str, Any]], max_context: bool) -> dict[str, dict[str, Any]]:
    done = [r for r in rows if "skipped" not in r]
    if max_context:
        return {r["mode"]: {"max_context": r.get("max_context"), "decode_ms": r.get("decode_ms")} for r in done}
    summary: dict[str, dict[str, Any]] = {}
    full = {r["context"]: r for r in done if r["mode"] == "full"}
    for mode in dict.fromkeys(r["mode"] for r in done):
        mine = [r for r in done if r["mode"] == mode]
        top = max(mine, key=lambda r: r["context"])
        s: dict[str, Any] = {"context": top["context"], "decode_ms": top["decode_ms"], "prefill_s": top["prefill_s"],
                             "kv_bytes": top["kv_bytes"], "floor_ms": top["floor_ms"], "floor_ratio": top["floor_ratio"]}
        ref = full.get(top["context"])
        if ref is not None and mode != "full":
            s["decode_speedup_vs_full"] = round(ref["decode_ms"] / top["decode_ms"], 3)
            s["prefill_speedup_vs_full"] = round(ref["prefill_s"] / top["prefill_s"], 3)
            s["kv_ratio_vs_full"] = round(top["kv_bytes"] / ref["kv_bytes"], 4)
        s["by_context"] = {str(r["context"]): {"decode_ms": r["decode_ms"], "prefill_s": r["prefill_s"],
                                                "floor_ratio": r["floor_ratio"]} for r in mine}
        summary[mode] = s
    return summary


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Decode latency (with each mode's floor, dashed) and prefill time against context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "skipped" not in r and "decode_ms" in r]
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["context"])
        xs = [r["context"] for r in mine]
        line, = ax1.plot(xs, [r["decode_ms"] for r in mine], marker="o", label=mode)
        ax1.plot(xs, [r["floor_ms"] for r in mine], ls="--", color=line.get_color(), alpha=0.6)
        ax2.plot(xs, [r["prefill_s"] for r in mine], marker="o", label=mode, color=line.get_color())
    for ax, title, unit in ((ax1, "decode latency (dashed: bandwidth floor)", "ms / token"), (ax2, "prefill", "s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend()
    fig.suptitle(f"{result['model']} on {result['device']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
