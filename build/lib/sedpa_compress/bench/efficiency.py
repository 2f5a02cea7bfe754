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
    device: str = "cuda"  # "cpu": a dry run of the plumbing on tiny models (numbers meaningless)
    dtype: str | None = None  # None: bfloat16 on CUDA (the goals' setting), float32 for CPU dry runs
    memory_budget_gib: float | None = None  # caches + workspace limit (default: what the GPU has free)
    command: str | None = None


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


class _Timer:
    """Elapsed milliseconds of a region: CUDA events on the GPU (no host sync inside the loop),
    perf_counter elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.s, self.e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self.s.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.e.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self) -> float:
        return self.s.elapsed_time(self.e) if self.cuda else (self.t1 - self.t0) * 1e3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written."""
    if device.type != "cuda":
        nbytes, reps = 1 << 26, 3
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    timer = _Timer(device)
    _sync(device)
    timer.start()
    for _ in range(reps):
        b.copy_(a)
    timer.stop()
    _sync(device)
    bw = 2 * nbytes * reps / (timer.ms() / 1e3)
    del a, b
    _free(device)
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
    dev = runner.model.device
    tok = torch.zeros(runner.batch, dtype=torch.long, device=dev)
    for _ in range(warmup):
        runner.decode(tok)
    timers = []
    for _ in range(tokens):
        t = _Timer(dev)
        t.start()
        runner.decode(tok)
        t.stop()
        timers.append(t)
    _sync(dev)
    return statistics.median(t.ms() for t in timers)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def run_efficiency(cfg: EfficiencyConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mode and context in one run; the JSON is rewritten after every row, so a run stopped
    by a wall-clock limit still leaves what it measured."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SedpaError("sedpa bench efficiency measures the CUDA runtime: run it on a machine with an NVIDIA GPU "
                         "(--device cpu only dry-runs the plumbing)")
    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise SedpaError(f"unknown --attention {','.join(bad)}: choose from {','.join(MODES)}")
    if cfg.window < cfg.recent:
        raise SedpaError(f"--window {cfg.window} is smaller than --recent {cfg.recent}: the window must cover the recent tokens")
    if not 0 < cfg.retrieval_ratio <= 1 or not 0 < cfg.rank_ratio <= 1:
        raise SedpaError("--retrieval-ratio and --rank-ratio must be in (0, 1]")
    from sedpa_compress.models import load_model

    t_start = time.perf_counter()
    dev = torch.device(cfg.device)
    if cfg.dtype is None:
        cfg.dtype = "bfloat16" if dev.type == "cuda" else "float32"
    loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype=cfg.dtype,
                        device=cfg.device, seed=cfg.seed)
    pattern, pattern_source = _pattern(cfg, loaded)
    factored = loaded.artifact is not None
    rank_ratio = None if factored else cfg.rank_ratio
    bw = copy_bandwidth(dev)
    progress(f"copy bandwidth {bw / 1e12:.2f} TB/s (read + write)")
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "command"},
                "pattern_source": pattern_source, "actual_retrieval_ratio": pattern.actual_retrieval_ratio,
                "low_rank": "artifact factors" if factored else
                f"synthetic random factors at rank ratio {cfg.rank_ratio} (timing does not depend on the values)",
                "copy_bandwidth_Bps": bw, "batch": 1, "torch": torch.__version__,
                "floor": "bytes read per decode step (weights except the embedding table + KV read) / copy bandwidth",
                "decode_ms": f"median over {cfg.decode_tokens} tokens after {cfg.warmup_tokens} warm-up "
                             f"({'CUDA events' if dev.type == 'cuda' else 'perf_counter'}), CUDA-graph decode step",
                "prefill": "random token ids, chunked prefill, wall clock with synchronize, after one untimed "
                           "chunk-sized warm-up prefill per mode (kernel compilation is not timed)"}
    if dev.type != "cuda":
        settings["dry_run"] = "CPU: plumbing only, the numbers mean nothing"

    def over_budget() -> bool:
        return cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s

    rows: list[dict[str, Any]] = []
    name = loaded.name

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        _write(cfg, name, settings, rows, final=False)

    if cfg.max_context:
        _max_context_rows(cfg, loaded, pattern, rank_ratio, progress, over_budget, emit)
        loaded = None
    else:
        for mode in cfg.modes:
            _mode_rows(cfg, loaded, mode, pattern, rank_ratio, bw, progress, over_budget, emit)
        if cfg.reference_max:  # last: it is the slowest per token and backs no goal
            _reference_rows(cfg, loaded, bw, progress, over_budget, emit)
    settings["wall_s"] = round(time.perf_counter() - t_start, 1)
    return _write(cfg, name, settings, rows, final=True)


def _write(cfg: EfficiencyConfig, model: str, settings: dict, rows: list[dict[str, Any]], *, final: bool) -> dict:
    summary = _summary(rows, cfg.max_context)
    extra = {} if cfg.max_context else {"goals": goals(rows)}
    result = make_result("efficiency", model=model, settings=settings, rows=rows, summary=summary,
                         device=None if cfg.device == "cuda" else "cpu", command=cfg.command,
                         complete=final, **extra)
    write_result(cfg.out, result)
    if final and not cfg.max_context:
        plot(result, cfg.out.with_suffix(".png"))
    return result


def _pattern(cfg: EfficiencyConfig, loaded) -> tuple[HeadPattern, str]:
    geo = loaded.geometry
    if cfg.pattern is not None:
        return HeadPattern.load(cfg.pattern, geo).with_ratio(cfg.retrieval_ratio), str(cfg.pattern)
    from sedpa_compress.models.loader import shipped_pattern_path

    carried = shipped_pattern_path(loaded)
    if carried is not None:
        return HeadPattern.load(carried, geo).with_ratio(cfg.retrieval_ratio), f"carried by the model ({carried.name})"
    return (synthetic_pattern(geo, ratio=cfg.retrieval_ratio, sink=cfg.sink, recent=cfg.recent, seed=cfg.seed),
            "synthetic (random gates binarised at --retrieval-ratio; timing only)")


def _spec(cfg: EfficiencyConfig, mode: str, pattern: HeadPattern) -> RuntimeSpec:
    return RuntimeSpec(mode=mode, pattern=pattern if mode in ("duo", "sedpa-s", "sedpa-w") else None, sink=cfg.sink,
                       recent=cfg.recent, window=cfg.window if mode == "sedpa-w" else None, top_k=cfg.top_k)


def _budget(cfg: EfficiencyConfig) -> int | None:
    return None if cfg.memory_budget_gib is None else int(cfg.memory_budget_gib * memory.GIB)


def _mode_rows(cfg, loaded, mode, pattern, rank_ratio, bw, progress, over_budget, emit) -> None:
    dev = torch.device(cfg.device)
    fast = FastModel(loaded, _spec(cfg, mode, pattern), synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None,
                     seed=cfg.seed)
    weights_read = fast.bytes_read_per_token()
    _warm_up(cfg, fast)
    for ctx in cfg.contexts:
        if over_budget():
            emit({"mode": mode, "context": ctx, "skipped": "time budget"})
            continue
        _free(dev)
        _reset_peak(dev)
        max_len = ctx + cfg.warmup_tokens + cfg.decode_tokens + 8
        try:
            runner = Runner(fast, max_len=max_len, chunk=cfg.chunk, memory_budget=_budget(cfg))
        except SedpaError as err:
            emit({"mode": mode, "context": ctx, "skipped": str(err)})
            progress(f"{mode} @ {ctx}: {err}")
            continue
        try:
            gen = torch.Generator(device=dev).manual_seed(cfg.seed)
            ids = torch.randint(0, fast.vocab, (1, ctx), device=dev, generator=gen)
            _sync(dev)
            t0 = time.perf_counter()
            runner.prefill(ids)
            _sync(dev)
            prefill_s = time.perf_counter() - t0
            decode_ms = _median_decode_ms(runner, cfg.warmup_tokens, cfg.decode_tokens)
        except torch.OutOfMemoryError as err:  # the plan said it fits; report, do not crash the run
            runner = None  # drop the caches before freeing
            _free(dev)
            emit({"mode": mode, "context": ctx, "skipped": f"out of memory: {str(err).splitlines()[0]}"})
            progress(f"{mode} @ {ctx}: out of memory")
            continue
        kv_read = kv_bytes_read(fast, ctx)
        floor_ms = (weights_read + kv_read) / bw * 1e3
        row = {"mode": mode, "context": ctx, "prefill_s": round(prefill_s, 4), "decode_ms": round(decode_ms, 3),
               "floor_ms": round(floor_ms, 3), "floor_ratio": round(decode_ms / floor_ms, 3),
               "kv_bytes": memory.cache_bytes(fast, batch=1, max_len=ctx), "kv_read_bytes": kv_read,
               "weight_read_bytes": weights_read, "peak_bytes": _peak(dev),
               "tokens_per_s": round(1e3 / decode_ms, 2)}
        emit(row)
        progress(f"{mode:9s} {ctx:>8d}  prefill {prefill_s:7.2f} s  decode {decode_ms:7.2f} ms  floor {floor_ms:6.2f} ms "
                 f"(x{decode_ms / floor_ms:.2f})  kv {row['kv_bytes'] / 2**30:6.2f} GiB")
        del runner, ids
    del fast
    _free(dev)


def _warm_up(cfg: EfficiencyConfig, fast: FastModel) -> None:
    """One chunk-sized prefill and a few decode steps before the first timed row, so that kernel
    compilation (FlexAttention, Triton, the fused pointwise ops) is not timed as prefill. Every
    chunk of a long prefill has the chunk's shape, so this compiles what the timed rows run."""
    dev = torch.device(cfg.device)
    n = min(cfg.chunk, min(cfg.contexts))
    runner = Runner(fast, max_len=n + 8, chunk=cfg.chunk, memory_budget=_budget(cfg))
    runner.prefill(torch.zeros(1, n, dtype=torch.long, device=dev))
    tok = torch.zeros(1, dtype=torch.long, device=dev)
    for _ in range(3):
        runner.decode(tok)
    _sync(dev)
    del runner
    _free(dev)


def _reference_rows(cfg, loaded, bw, progress, over_budget, emit) -> None:
    """Plain transformers (its default sdpa attention): one-shot prefill with a DynamicCache, then
    one token at a time."""
    dev = torch.device(cfg.device)
    model = loaded.model
    emb = model.model.embed_tokens.weight
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - emb.numel() * emb.element_size()
    geo = loaded.geometry
    for ctx in [c for c in cfg.contexts if c <= cfg.reference_max]:
        if over_budget():
            emit({"mode": REFERENCE_MODE, "context": ctx, "skipped": "time budget"})
            continue
        _free(dev)
        _reset_peak(dev)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        ids = torch.randint(0, model.config.vocab_size, (1, ctx), device=dev, generator=gen)
        n = max(8, cfg.decode_tokens // 4)  # it is slow; fewer tokens keep the run short
        try:
            with torch.inference_mode():
                _sync(dev)
                t0 = time.perf_counter()
                out = model(ids, use_cache=True, logits_to_keep=1)
                _sync(dev)
                prefill_s = time.perf_counter() - t0
                pkv = out.past_key_values
                tok = torch.zeros(1, 1, dtype=torch.long, device=dev)
                timers = []
                for i in range(cfg.warmup_tokens // 2 + n):
                    t = _Timer(dev)
                    t.start()
                    out = model(tok, past_key_values=pkv, use_cache=True)
                    t.stop()
                    pkv = out.past_key_values
                    if i >= cfg.warmup_tokens // 2:
                        timers.append(t)
                _sync(dev)
        except torch.OutOfMemoryError:
            out = pkv = None
            _free(dev)
            emit({"mode": REFERENCE_MODE, "context": ctx, "skipped": "out of memory"})
            continue
        decode_ms = statistics.median(t.ms() for t in timers)
        kv = 2 * geo.num_layers * geo.num_kv_heads * geo.head_dim * ctx * emb.element_size()
        floor_ms = (weights + kv) / bw * 1e3
        emit({"mode": REFERENCE_MODE, "context": ctx, "prefill_s": round(prefill_s, 4),
              "decode_ms": round(decode_ms, 3), "floor_ms": round(floor_ms, 3),
              "floor_ratio": round(decode_ms / floor_ms, 3), "kv_bytes": kv, "peak_bytes": _peak(dev),
              "decode_tokens_measured": n, "tokens_per_s": round(1e3 / decode_ms, 2)})
        progress(f"{REFERENCE_MODE:9s} {ctx:>8d}  prefill {prefill_s:7.2f} s  decode {decode_ms:7.2f} ms  floor {floor_ms:6.2f} ms")
        del out, pkv, ids
    _free(dev)


def _max_context_rows(cfg, loaded, pattern, rank_ratio, progress, over_budget, emit):
    """Per mode: the estimate from the memory plan, then a verification that allocates that much and
    decodes a few tokens (the cache filled with random K/V: a real prefill of a million tokens would
    take minutes). Only the runtime's weights stay resident (`consume`), as in `sedpa generate`."""
    from sedpa_compress.models import load_model

    dev = torch.device(cfg.device)
    for i, mode in enumerate(cfg.modes):
        if over_budget():
            emit({"mode": mode, "skipped": "time budget"})
            continue
        if loaded is None:  # the previous mode consumed the weights: load them again
            loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype=cfg.dtype,
                                device=cfg.device, seed=cfg.seed)
        fast = FastModel(loaded, _spec(cfg, mode, pattern), consume=True,
                         synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None, seed=cfg.seed)
        loaded = None
        _free(dev)
        budget = _budget(cfg)
        free = budget if budget is not None else memory.free_device_bytes(dev)
        estimate = memory.max_context(fast, chunk=cfg.chunk, free_bytes=free)
        bounded = estimate < (1 << 30)
        n = estimate if bounded else max(cfg.contexts)
        row: dict[str, Any] = {"mode": mode, "max_context_estimate": estimate if bounded else None,
                               "free_bytes_at_start": free, "weight_bytes": fast.weight_bytes()}
        steps = max(4, cfg.decode_tokens // 4)
        for _attempt in range(4):
            runner = None
            try:
                _reset_peak(dev)
                runner = Runner(fast, max_len=n, chunk=cfg.chunk, memory_budget=budget)
                runner.fill_synthetic(n - steps - cfg.warmup_tokens)
                decode_ms = _median_decode_ms(runner, cfg.warmup_tokens, steps)
                row.update(max_context=n, verified=True, decode_ms=round(decode_ms, 3), kv_bytes=runner.kv_bytes(),
                           peak_bytes=_peak(dev), unbounded=not bounded)
                break
            except (torch.OutOfMemoryError, SedpaError) as err:
                progress(f"{mode} at {n}: {type(err).__name__}; trying 5% less")
                n = int(n * 0.95)
            finally:
                del runner
                _free(dev)
        else:
            row.update(max_context=None, verified=False)
        emit(row)
        progress(f"{mode:9s} max context {row.get('max_context')} (estimate {estimate if bounded else 'unbounded'})")
        del fast
        _free(dev)


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


GOALS = {  # issue 5, Llama-3-8B geometry on one H100
    "full_decode_64k_floor_ratio": ("full", 65536, "floor_ratio", "<=", 1.25),
    "sedpa-w_decode_speedup_128k": ("sedpa-w", 131072, "decode_speedup_vs_full", ">=", 1.8),
    "sedpa-w_prefill_speedup_128k": ("sedpa-w", 131072, "prefill_speedup_vs_full", ">=", 1.7),
    "sedpa-w_kv_ratio_128k": ("sedpa-w", 131072, "kv_ratio_vs_full", "<=", 0.53),
    "tidal_decode_speedup_128k": ("tidal", 131072, "decode_speedup_vs_full", ">=", 1.5),
}


def goals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each goal with its measured value (None where that row was not measured) and whether it is met."""
    done = {(r["mode"], r["context"]): r for r in rows if "skipped" not in r and "context" in r}
    out = {}
    for name, (mode, ctx, metric, op, target) in GOALS.items():
        row, full = done.get((mode, ctx)), done.get(("full", ctx))
        value = None
        if row is not None:
            if metric == "floor_ratio":
                value = row["floor_ratio"]
            elif full is not None:
                value = {"decode_speedup_vs_full": full["decode_ms"] / row["decode_ms"],
                         "prefill_speedup_vs_full": full["prefill_s"] / row["prefill_s"],
                         "kv_ratio_vs_full": row["kv_bytes"] / full["kv_bytes"]}[metric]
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        out[name] = {"value": None if value is None else round(value, 4), "target": f"{op} {target}", "met": met}
    return out


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
