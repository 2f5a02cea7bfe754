"""`sedpa bench efficiency`: flags -> EfficiencyConfig -> bench.efficiency.run_efficiency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def efficiency_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, local directory or artifact (an artifact's own pattern and low-rank factors are timed).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="Geometry preset (llama-3-8b, ...) with --random-weights.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="With --config: random weights of that geometry.")] = False,
    pattern: Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern file for duo (and, without an artifact, sedpa-s/w), with its own mask: uneven retrieval heads per layer as trained (default: the model's, else random gates).")] = None,
    contexts: Annotated[str, typer.Option("--contexts", help="Context lengths, e.g. 8k,32k,64k,128k.")] = "8k,32k,64k,128k",
    attention: Annotated[str, typer.Option("--attention", help="Modes to compare: full,streaming,duo,sedpa-s,sedpa-w,tidal.")] = "full,duo,sedpa-w,tidal",
    peers: Annotated[str, typer.Option("--peers", help="Plain transformers rows measured in the same run: transformers-eager, transformers-static-compile, or none.")] = "transformers-eager,transformers-static-compile",
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Re-binarise the pattern's gates at this fraction of retrieval heads (default: the pattern's own mask; a synthetic pattern uses 0.5).")] = None,
    rank_ratio: Annotated[float, typer.Option("--rank-ratio", help="Parameter ratio of synthetic low-rank factors (models that are not artifacts).")] = 0.85,
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="KV caches of the sedpa runtime: bf16, or fp8 (e4m3 with a scale per token and head: half the bytes).")] = "bf16",
    lowrank: Annotated[str, typer.Option("--lowrank", help="sedpa modes: auto (factors only where they save more bytes than their extra kernels cost; elsewhere multiplied back into dense rows), factored or dense.")] = "auto",
    sink: Annotated[Optional[int], typer.Option("--sink", help="Sink tokens of streaming heads (default: the pattern's, else 64).")] = None,
    recent: Annotated[Optional[int], typer.Option("--recent", help="Recent tokens of streaming heads (default: the pattern's, else 256).")] = None,
    window: Annotated[Optional[int], typer.Option("--window", help="SEDPA-W window (default: the artifact's, else 8192).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="TidalDecode: positions kept by the selection layers.")] = 2048,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", help="Timed decode tokens (median).")] = 64,
    chunk: Annotated[int, typer.Option("--chunk", help="Prefill chunk size.")] = 8192,
    reference_max: Annotated[int, typer.Option("--reference-max", help="Peer (plain transformers) rows up to this context; longer ones get a row saying they were skipped (0: no peer rows).")] = 65536,
    max_context: Annotated[bool, typer.Option("--max-context", help="Find the longest context each mode decodes on this GPU instead.")] = False,
    time_budget: Annotated[Optional[float], typer.Option("--time-budget", help="Seconds; rows not started by then are marked skipped.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Result JSON (a PNG is written beside it).")] = Path("bench/results/efficiency.json"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cuda; cpu only dry-runs the plumbing on a tiny model.")] = "cuda",
    memory_budget: Annotated[Optional[float], typer.Option("--memory-budget", help="GiB the caches and workspace may use (default: what the GPU has free).")] = None,
) -> None:
    """Prefill and compile time, decode ms/token against the bandwidth floor, prefill against the FLOP floor, KV
    bytes, peak memory and parameters per mode and context, plain transformers rows beside them."""
    from sedpa_compress.bench.efficiency import EfficiencyConfig, parse_contexts, parse_peers, run_efficiency
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.runtime.modes import parse_modes

    if device not in ("cuda", "cpu"):
        raise SedpaError(f"--device {device!r}: choose cuda or cpu")
    cfg = EfficiencyConfig(model=model, config=config, random_weights=random_weights, pattern=pattern,
                           contexts=parse_contexts(contexts), modes=parse_modes(attention), peers=parse_peers(peers),
                           retrieval_ratio=retrieval_ratio, rank_ratio=rank_ratio, lowrank=lowrank, kv_dtype=kv_dtype, sink=sink, recent=recent,
                           window=window, top_k=top_k, decode_tokens=decode_tokens, chunk=chunk,
                           reference_max=reference_max, max_context=max_context, time_budget_s=time_budget,
                           out=out, seed=seed, device=device, memory_budget_gib=memory_budget,
                           command=_command(ctx)).validate()
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


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _print_table(result: dict) -> None:
    from rich.table import Table

    rows = [r for r in result["rows"] if "skipped" not in r]
    if result["settings"].get("max_context"):
        table = Table("mode", "max context", "decode ms", "KV GiB")
        for r in rows:
            table.add_row(r["mode"], str(r.get("max_context")), str(r.get("decode_ms")), _gib(r.get("kv_bytes")))
    else:
        table = Table("mode", "context", "prefill s", "floor s", "compile s", "decode ms", "floor ms", "x floor",
                      "KV GiB", "peak GiB")
        for r in rows:
            table.add_row(r["mode"], str(r["context"]), _num(r["prefill_s"], ".2f"), _num(r.get("prefill_floor_s"), ".2f"),
                          _num(r.get("compile_s"), ".1f"), _num(r["decode_ms"], ".2f"), _num(r["floor_ms"], ".2f"),
                          _num(r["floor_ratio"], ".2f"), _gib(r["kv_bytes"]), _gib(r["peak_bytes"]))
    console.print(table)
    for r in result["rows"]:
        if "skipped" in r:
            console.print(f"[yellow]skipped[/] {r['mode']} @ {r.get('context', '-')}: {r['skipped']}", highlight=False)
        elif r.get("warning"):
            console.print(f"[yellow]warning[/] {r['mode']} @ {r['context']}: {r['warning']}", highlight=False)
    for name, g in result.get("goals", {}).items():
        mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "not measured"}[g["met"]]
        if g.get("miss_within_step_spread"):
            mark += f" (by less than the steps' {g['step_spread_pct']}% spread)"
        console.print(f"goal {name}: {g['value']} (target {g['target']}) {mark}", highlight=False)


def register(bench_app: typer.Typer) -> None:
    bench_app.command("efficiency")(efficiency_cmd)
