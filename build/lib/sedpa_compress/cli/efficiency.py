"""`sedpa bench efficiency`: flags -> EfficiencyConfig -> bench.efficiency.run_efficiency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def efficiency_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, local directory or artifact.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="Geometry preset (llama-3-8b, ...) with --random-weights.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="With --config: random weights of that geometry.")] = False,
    pattern: Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern (default: the artifact's, else random gates).")] = None,
    contexts: Annotated[str, typer.Option("--contexts", help="Context lengths, e.g. 8k,32k,64k,128k.")] = "8k,32k,64k,128k",
    attention: Annotated[str, typer.Option("--attention", help="Modes to compare: full,streaming,duo,sedpa-s,sedpa-w,tidal.")] = "full,duo,sedpa-w,tidal",
    retrieval_ratio: Annotated[float, typer.Option("--retrieval-ratio", help="Fraction of KV heads kept as retrieval heads.")] = 0.5,
    rank_ratio: Annotated[float, typer.Option("--rank-ratio", help="Parameter ratio of synthetic low-rank factors (random-weight runs).")] = 0.85,
    sink: Annotated[int, typer.Option("--sink")] = 64,
    recent: Annotated[int, typer.Option("--recent")] = 256,
    window: Annotated[int, typer.Option("--window", help="SEDPA-W window.")] = 8192,
    top_k: Annotated[int, typer.Option("--top-k", help="TidalDecode: positions kept by the selection layers.")] = 2048,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", help="Timed decode tokens (median).")] = 64,
    chunk: Annotated[int, typer.Option("--chunk", help="Prefill chunk size.")] = 8192,
    reference_max: Annotated[int, typer.Option("--reference-max", help="Plain transformers rows up to this context (0: none).")] = 65536,
    max_context: Annotated[bool, typer.Option("--max-context", help="Find the longest context each mode decodes on this GPU instead.")] = False,
    time_budget: Annotated[Optional[float], typer.Option("--time-budget", help="Seconds; rows not started by then are marked skipped.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Result JSON (a PNG is written beside it).")] = Path("bench/results/efficiency.json"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cuda; cpu only dry-runs the plumbing on a tiny model.")] = "cuda",
    memory_budget: Annotated[Optional[float], typer.Option("--memory-budget", help="GiB the caches and workspace may use (default: what the GPU has free).")] = None,
) -> None:
    """Prefill time, decode ms/token against the bandwidth floor, KV bytes and peak memory per mode and context."""
    from sedpa_compress.bench.efficiency import EfficiencyConfig, parse_contexts, run_efficiency
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.runtime.modes import parse_modes

    if device not in ("cuda", "cpu"):
        raise SedpaError(f"--device {device!r}: choose cuda or cpu")
    cfg = EfficiencyConfig(model=model, config=config, random_weights=random_weights, pattern=pattern,
                           contexts=parse_contexts(contexts), modes=parse_modes(attention),
                           retrieval_ratio=retrieval_ratio, rank_ratio=rank_ratio, sink=sink, recent=recent,
                           window=window, top_k=top_k, decode_tokens=decode_tokens, chunk=chunk,
                           reference_max=reference_max, max_context=max_context, time_budget_s=time_budget,
                           out=out, seed=seed, device=device, memory_budget_gib=memory_budget,
                           command=_command(ctx))
    result = run_efficiency(cfg, progress=lambda msg: console.print(msg, highlight=False))
    _print_table(result)
    console.print(f"[green]wrote[/] {out}")


def _command(ctx: typer.Context) -> str:
    """`sedpa bench efficiency ...` with the flags given (whichever entry point parsed them)."""
    import shlex

    parts = ["sedpa", "bench", "efficiency"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value == param.default or value is None or not param.opts:
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            parts.append(flag)
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _print_table(result: dict) -> None:
    from rich.table import Table

    rows = [r for r in result["rows"] if "skipped" not in r]
    if result["settings"].get("max_context"):
        table = Table("mode", "max context", "decode ms", "KV GiB")
        for r in rows:
            table.add_row(r["mode"], str(r.get("max_context")), str(r.get("decode_ms")), _gib(r.get("kv_bytes")))
    else:
        table = Table("mode", "context", "prefill s", "decode ms", "floor ms", "x floor", "KV GiB", "peak GiB")
        for r in rows:
            table.add_row(r["mode"], str(r["context"]), f"{r['prefill_s']:.2f}", f"{r['decode_ms']:.2f}",
                          f"{r['floor_ms']:.2f}", f"{r['floor_ratio']:.2f}", _gib(r["kv_bytes"]), _gib(r["peak_bytes"]))
    console.print(table)
    for name, g in result.get("goals", {}).items():
        mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "not measured"}[g["met"]]
        console.print(f"goal {name}: {g['value']} (target {g['target']}) {mark}", highlight=False)


def register(bench_app: typer.Typer) -> None:
    bench_app.command("efficiency")(efficiency_cmd)
