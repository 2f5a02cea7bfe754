"""`sedpa bench niah | ppl | longbench | report` (and `efficiency`, cli/efficiency.py): parse flags, call
sedpa_compress.bench, print a summary table, write JSON (+ PNG) under bench/results/."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, local directory, artifact, or `sedpa-tiny` (default). full/streaming/duo/tidal run on it.")]
CompressedOpt = Annotated[Optional[Path], typer.Option("--compressed", help="Artifact from `sedpa compress` that the sedpa-s/sedpa-w rows run on (not needed when --model is an artifact).")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="Geometry preset (with --random-weights) for smoke runs.")]
RandomOpt = Annotated[bool, typer.Option("--random-weights", help="With --config: random weights of that geometry.")]
AttentionOpt = Annotated[str, typer.Option("--attention", "-a", help="Modes to compare, comma-separated: full, streaming, duo, sedpa-s, sedpa-w, tidal.")]
PatternOpt = Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern for duo (default: the one --model or --compressed carries).")]
SinkOpt = Annotated[Optional[int], typer.Option("--sink", help="Sink tokens of streaming heads (default: the pattern's).")]
RecentOpt = Annotated[Optional[int], typer.Option("--recent", help="Recent tokens of streaming heads (default: the pattern's).")]
WindowOpt = Annotated[Optional[int], typer.Option("--window", help="sedpa-w window (default: the artifact's, else 8192).")]
TopKOpt = Annotated[Optional[int], typer.Option("--top-k", help="tidal: token positions kept by the selection layers (default 2048).")]
SelectionOpt = Annotated[Optional[str], typer.Option("--selection-layers", help="tidal: token-selection layers, e.g. 2,5 (default from the head pattern: the first layer after the 2 dense ones with a strong retrieval head, and again at the first with about the most retrieval gate; else right after the dense layers and at 13/32 of the depth).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Result JSON (PNGs and the resume cache <out>.cells.jsonl beside it).")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Ignore finished cells cached beside --out and recompute everything.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")]
KvDtypeOpt = Annotated[str, typer.Option("--kv-dtype", help="KV caches: bf16, or fp8 (e4m3 with a scale per token and head: half the bytes; runs the fast runtime, also on the CPU).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
ChunkOpt = Annotated[int, typer.Option("--chunk", help="Prefill chunk in tokens (bounds memory at long contexts).")]


def _device(device: str) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _setup(model, compressed, config, random_weights, attention, pattern, sink, recent, window, top_k, device, dtype,
           kv_dtype: str = "bf16", selection_layers: str | None = None):
    """Load --model (and --compressed) and build one BenchModel per --attention name."""
    from sedpa_compress.bench.common import LOWRANK_MODES, build_bench_models
    from sedpa_compress.models import load_model
    from sedpa_compress.runtime.modes import parse_modes
    from sedpa_compress.runtime.modes.tidal import parse_selection_layers

    modes = parse_modes(attention)
    dev = _device(device)
    with console.status("loading model…"):
        base = load_model(model, config=config, random_weights=random_weights, device=dev, dtype=dtype)
        comp = None
        if compressed is not None and any(m in LOWRANK_MODES for m in modes):
            comp = load_model(str(compressed), device=dev, dtype=dtype)
    from sedpa_compress.runtime.cache import check_kv_dtype

    check_kv_dtype(kv_dtype)
    for loaded in (base, comp):
        if loaded is not None:
            loaded.kv_dtype = kv_dtype
    rows = build_bench_models(base, modes, compressed=comp, pattern=pattern, sink=sink, recent=recent, window=window,
                              top_k=top_k, selection_layers=parse_selection_layers(selection_layers))
    if kv_dtype != "bf16":  # in each mode's settings, so the resume cache keys on it
        for bm in rows:
            bm.settings["kv_dtype"] = kv_dtype
    if base.artifact is not None and compressed is None and any(m in ("full", "duo", "streaming", "tidal") for m in modes):
        console.print("[yellow]note[/]: --model is an artifact, so full/streaming/duo/tidal also run on its compressed "
                      "weights; to compare with the uncompressed model pass --model BASE --compressed ARTIFACT")
    for bm in rows:
        extra = ", ".join(f"{k} {bm.settings[k]}" for k in ("sink", "recent", "window", "top_k") if k in bm.settings)
        if "selection_layers" in bm.settings:
            extra += (f", selection layers {','.join(map(str, bm.settings['selection_layers']))}"
                      f" ({bm.settings['selection_source']})")
        heads = (f", {bm.settings['retrieval_heads']}/{bm.settings['kv_heads']} retrieval heads"
                 if "retrieval_heads" in bm.settings else "")
        where = f"artifact {bm.loaded.path}" if bm.loaded.source == "artifact" else f"{bm.loaded.name} ({bm.loaded.source})"
        console.print(f"[dim]{bm.name}: {where}{heads}{', ' + extra if extra else ''}[/]", highlight=False)
    return base, rows


def _default_out(bench: str, base) -> Path:
    name = Path(str(base.name)).name.replace("/", "-").replace(":", "-")
    return Path("bench/results") / f"{bench}_{name}.json"


@contextlib.contextmanager
def _progress(total: int, label: str) -> Iterator:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(mode: str) -> None:
            bar.update(task, advance=1, description=f"{label} [{mode}]")

        yield advance


def _cache(out: Path, fresh: bool):
    from sedpa_compress.bench.cache import CellCache, cells_path

    path = cells_path(out)
    if fresh and path.exists():
        path.unlink()
    return CellCache(path)


def _resumed(cache, total: int) -> None:
    if cache.hits:
        console.print(f"[dim]resumed: {cache.hits} of {total} cells were already in {cache.path} (--fresh recomputes them)[/]",
                      highlight=False)


def _write(out: Path, bench: str, base, settings: dict, rows: list, summary: dict, device: str, **extra) -> None:
    from sedpa_compress.bench.results import device_name, make_result, write_result

    write_result(out, make_result(bench, model=base.name, settings=settings, rows=rows, summary=summary,
                                  device=device_name(device), **extra))
    console.print(f"[green]wrote[/] {out}")


def niah_cmd(
    model: ModelOpt = None,
    compressed: CompressedOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    attention: AttentionOpt = "full,streaming,duo",
    lengths: Annotated[str, typer.Option("--lengths", help="Context lengths: FIRST:LAST:COUNT (evenly spaced, e.g. 1k:32k:8) or a list 1k,4k,16k. A sweep beyond the model's limit is spread up to the limit instead; listed lengths beyond it are replaced by it (both are reported).")] = "1k:32k:8",
    depths: Annotated[str, typer.Option("--depths", help="Needle depths: a count (10 = evenly over 0..100%) or fractions 0.1,0.5,0.9.")] = "10",
    samples: Annotated[int, typer.Option("--samples", help="Prompts per (length, depth).")] = 1,
    needle: Annotated[Optional[str], typer.Option("--needle", help="Your needle sentence, with {value} where a random value goes (e.g. 'The code of the blue door is {value}.'), or a literal sentence plus --answer.")] = None,
    question: Annotated[Optional[str], typer.Option("--question", help="With --needle: the question asked after the haystack.")] = None,
    answer: Annotated[Optional[str], typer.Option("--answer", help="With a --needle without {value}: the answer it states.")] = None,
    answer_prefix: Annotated[str, typer.Option("--answer-prefix", help="With --needle: text after the question that the answer continues.")] = "Answer:",
    haystack: Annotated[Optional[Path], typer.Option("--haystack", help="UTF-8 text file for the haystack (default: the bundled held-out text).")] = None,
    values: Annotated[str, typer.Option("--values", help="Shape of the hidden values: default (the held-out mix of digits, grouped digits, codes and words; plain digits with --needle), mixed (that mix with --needle too), or all digits, grouped, thousands, code, word or phrase (4-10 words of held-out text, as in the San Francisco needle).")] = "default",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    pattern: PatternOpt = None,
    sink: SinkOpt = None,
    recent: RecentOpt = None,
    window: WindowOpt = None,
    top_k: TopKOpt = None,
    selection_layers: SelectionOpt = None,
    out: OutOpt = None,
    fresh: FreshOpt = False,
    chunk: ChunkOpt = 4096,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "bf16",
) -> None:
    """Needle in a haystack: every mode on the same prompts; heatmap PNG per mode + JSON with every cell."""
    from sedpa_compress.bench.common import lengths_for_model, parse_depths, parse_lengths
    from sedpa_compress.bench.heatmap import fmt_length, plot_niah_grid, plot_niah_heatmap
    from sedpa_compress.bench.niah import ANSWER_SLACK, NiahConfig, prepare_niah, run_niah

    cfg = NiahConfig(lengths=parse_lengths(lengths), depths=parse_depths(depths), samples=samples, seed=seed,
                     haystack=str(haystack) if haystack else None, needle=needle, question=question, answer=answer,
                     answer_prefix=answer_prefix, chunk=chunk, values=values).validate()
    base, models = _setup(model, compressed, config, random_weights, attention, pattern, sink, recent, window, top_k,
                          device, dtype, kv_dtype, selection_layers)
    cfg.lengths, capped = lengths_for_model(lengths, base.geometry.max_position_embeddings, reserve=32)
    if capped:
        console.print(f"[yellow]capped[/]: {capped}", highlight=False)
    prepared = prepare_niah(base, cfg)
    out = out or _default_out("niah", base)
    cache = _cache(out, fresh)
    total = len(models) * len(cfg.lengths) * len(cfg.depths) * cfg.samples
    with _progress(total, "niah") as advance:
        rows, summary = run_niah(models, cfg, cache, advance, prepared)
    _resumed(cache, total)
    settings = {"lengths": cfg.lengths, "depths": cfg.depths, "samples": cfg.samples, "seed": cfg.seed,
                "haystack": cfg.haystack or "bundled held-out text",
                "needle": cfg.needle or "held-out templates (sedpa_compress.data.needles.HELDOUT_TEMPLATES)",
                "question": cfg.question, "values": cfg.values, "capped": capped,
                "modes": {m.name: m.settings for m in models},
                "chunk": cfg.chunk, "max_new_tokens": cfg.max_new_tokens or f"answer tokens + {ANSWER_SLACK}",
                "metrics": prepared.provenance["metrics"], "provenance": prepared.provenance,
                "cache_hits": cache.hits}
    _write(out, "niah", base, settings, rows, summary, str(base.device))
    modes = [m.name for m in models]
    for mode in modes:
        console.print(f"[green]wrote[/] {plot_niah_heatmap(rows, mode, out.with_name(f'{out.stem}_{mode}.png'))}")
    console.print(f"[green]wrote[/] {plot_niah_grid(rows, modes, out.with_suffix('.png'), title=f'NIAH: {base.name}')}")
    table = Table(title=f"needle in a haystack: {base.name} (accuracy: the value in the answer's first line)")
    table.add_column("mode")
    table.add_column("accuracy", justify="right")
    table.add_column("exact", justify="right")
    for n in cfg.lengths:
        table.add_column(fmt_length(n), justify="right")
    for mode, s in summary.items():
        table.add_row(mode, f"{s['accuracy']:.1%}", f"{s['exact']:.1%}", *[f"{s['by_context'][str(n)]:.0%}" for n in cfg.lengths])
    console.print(table)


def ppl_cmd(
    model: ModelOpt = None,
    compressed: CompressedOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    attention: AttentionOpt = "full,streaming,duo",
    data: Annotated[Optional[str], typer.Option("--data", help="A .txt file, a folder of .txt, a .jsonl (text field), a Hugging Face dataset name, or omitted: the bundled held-out text.")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="JSONL/dataset field holding the text.")] = "text",
    split: Annotated[str, typer.Option("--split", help="Dataset split for a Hugging Face dataset.")] = "test",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per window (default: 4096, or the model's limit when smaller).")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Tokens between window starts (default: --seq-len, no overlap).")] = None,
    windows: Annotated[int, typer.Option("--windows", help="At most this many windows.")] = 4,
    decode_tail: Annotated[Optional[int], typer.Option("--decode-tail", help="Last tokens of each window reported as tail_ppl; tidal scores them on its decode path (default: min(256, seq-len/4)).")] = None,
    pattern: PatternOpt = None,
    sink: SinkOpt = None,
    recent: RecentOpt = None,
    window: WindowOpt = None,
    top_k: TopKOpt = None,
    selection_layers: SelectionOpt = None,
    out: OutOpt = None,
    fresh: FreshOpt = False,
    chunk: ChunkOpt = 4096,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "bf16",
) -> None:
    """Perplexity of every mode over the same sliding windows of text."""
    from sedpa_compress.bench.ppl import PplConfig, ppl_provenance, prepare_windows, run_ppl

    cfg = PplConfig(data=data, text_field=text_field, split=split, seq_len=seq_len, stride=stride, windows=windows,
                    decode_tail=decode_tail, chunk=chunk)
    base, models = _setup(model, compressed, config, random_weights, attention, pattern, sink, recent, window, top_k,
                          device, dtype, kv_dtype, selection_layers)
    prepared = prepare_windows(base, cfg)
    out = out or _default_out("ppl", base)
    cache = _cache(out, fresh)
    with _progress(len(models) * len(prepared[0]), "ppl") as advance:
        rows, summary, source = run_ppl(models, cfg, cache, advance, prepared)
    _resumed(cache, len(rows))
    settings = {"data": source, "seq_len": cfg.seq_len, "stride": cfg.stride or cfg.seq_len, "windows": len(rows) // max(1, len(models)),
                "decode_tail": cfg.decode_tail, "modes": {m.name: m.settings for m in models}, "chunk": cfg.chunk}
    prov = ppl_provenance(prepared[0])
    settings.update(metrics=prov["metrics"], provenance=prov, cache_hits=cache.hits)
    _write(out, "ppl", base, settings, rows, summary, str(base.device))
    table = Table(title=f"perplexity: {base.name}, {settings['windows']} x {cfg.seq_len} tokens of {source}")
    for col in ("mode", "ppl", f"tail ppl (last {cfg.decode_tail})", "vs full", "tokens"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode, s in summary.items():
        vs = s.get("vs_full")
        table.add_row(mode, f"{s['ppl']:.3f}", f"{s['tail_ppl']:.3f}" if s["tail_ppl"] is not None else "-",
                      f"{vs:+.2%}" if vs is not None else "-", f"{s['tokens']:,}")
    console.print(table)


def longbench_cmd(
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="LongBench's data.zip, or a folder of its JSONL files (<task>.jsonl, upstream format).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Instead: a Hugging Face dataset in LongBench's layout (a config per task, split test), e.g. THUDM/LongBench or a local dataset folder; needs `datasets` (the data extra).")] = None,
    model: ModelOpt = None,
    compressed: CompressedOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    attention: AttentionOpt = "full,duo",
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated task names, `english` (default: the 16 English tasks) or `all`.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many examples per task.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Prompt tokens (with BOS) kept by middle truncation (default: upstream's value for the model, e.g. 31500 for 32K models, 127500 for Llama-3.1-8B).")] = None,
    chat_template: Annotated[bool, typer.Option("--chat-template", help="Wrap prompts in the tokenizer's chat template, on the tasks upstream wraps (DuoAttention's runs use none).")] = False,
    pattern: PatternOpt = None,
    sink: SinkOpt = None,
    recent: RecentOpt = None,
    window: WindowOpt = None,
    top_k: TopKOpt = None,
    selection_layers: SelectionOpt = None,
    out: OutOpt = None,
    fresh: FreshOpt = False,
    chunk: ChunkOpt = 4096,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "bf16",
) -> None:
    """LongBench: upstream prompts, truncation, stop tokens and metrics, every mode on the same prompts."""
    from sedpa_compress.bench.common import provenance
    from sedpa_compress.bench.longbench import LongBenchConfig, load_tasks, parse_tasks, run_longbench, upstream_max_length
    from sedpa_compress.errors import SedpaError

    if limit is not None and limit < 1:
        raise SedpaError(f"--limit {limit}: pass at least 1")
    if max_length is not None and max_length < 16:
        raise SedpaError(f"--max-length {max_length}: pass at least 16 tokens")
    cfg = LongBenchConfig(data_dir=data_dir, dataset=dataset, tasks=parse_tasks(tasks), limit=limit,
                          max_length=max_length, chat_template=chat_template, chunk=chunk)
    data = load_tasks(cfg)  # bad files and unreachable datasets fail before the model loads
    total_examples = sum(len(rows) for rows in data.values())
    base, models = _setup(model, compressed, config, random_weights, attention, pattern, sink, recent, window, top_k,
                          device, dtype, kv_dtype, selection_layers)
    limit_pos = base.geometry.max_position_embeddings
    if max_length is not None and limit_pos and max_length > limit_pos:
        raise SedpaError(f"--max-length {max_length} is beyond the model's {limit_pos}-token limit: pass {limit_pos - 512} or less")
    used_length, rule = (max_length, "--max-length") if max_length is not None else upstream_max_length(base)
    console.print(f"[dim]prompts of more than {used_length:,} tokens are cut in the middle ({rule})[/]", highlight=False)
    out = out or _default_out("longbench", base)
    cache = _cache(out, fresh)
    with _progress(len(models) * total_examples, "longbench") as advance:
        rows, summary = run_longbench(models, cfg, cache, advance, data)
    _resumed(cache, len(rows))
    settings = {"data": cfg.source, "tasks": cfg.tasks, "limit": limit, "max_length": used_length,
                "max_length_rule": rule, "chat_template": chat_template, "modes": {m.name: m.settings for m in models},
                "metrics": "sedpa_compress.bench.longbench.metrics (upstream definitions; Chinese per character, not jieba)",
                "stop": "tokenizer eos + generation_config eos list (samsum: eos or newline, >= 1 token)",
                "provenance": provenance("longbench"), "cache_hits": cache.hits}
    _write(out, "longbench", base, settings, rows, summary, str(base.device))
    table = Table(title=f"LongBench: {base.name} (score 0-100)")
    table.add_column("task")
    for mode in summary:
        table.add_column(mode, justify="right")
    for task in cfg.tasks:
        table.add_row(task, *[f"{summary[m]['tasks'].get(task, float('nan')):.2f}" for m in summary])
    table.add_row("[bold]average[/]", *[f"[bold]{summary[m]['score']:.2f}[/]" for m in summary])
    console.print(table)


def report_cmd(
    results: Annotated[list[Path], typer.Argument(help="Benchmark JSONs of one model: niah, ppl, longbench, efficiency (and an efficiency --max-context run).")],
    context: Annotated[Optional[str], typer.Option("--context", help="Context of the decode latency column, e.g. 32k (default: the longest context every runtime mode measured).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Markdown file, the PNG beside it (default: bench/results/report_<model>.md).")] = None,
) -> None:
    """The accuracy / efficiency trade-off table per mode (markdown) and accuracy against decode time (PNG)."""
    from sedpa_compress.bench.common import parse_size
    from sedpa_compress.bench.report import load_results, write_report

    ctx = parse_size(context, "--context") if context else None
    if out is None:
        loaded = load_results(results)
        name = next(iter(loaded.values()))[1].get("model") or "model"
        out = Path("bench/results") / f"report_{Path(str(name)).name.replace(':', '-')}.md"
    md, png = write_report(results, out, ctx)
    console.print(md.read_text(), highlight=False, markup=False)
    console.print(f"[green]wrote[/] {md}")
    if png is not None:
        console.print(f"[green]wrote[/] {png}")
    else:
        console.print("[yellow]no PNG[/]: no mode has both a NIAH accuracy and a decode latency", highlight=False)


def register(app: typer.Typer) -> None:
    bench_app = typer.Typer(help="Accuracy and speed benchmarks; every mode side by side, JSON + PNG under bench/results/.",
                            no_args_is_help=True)
    bench_app.command("niah")(niah_cmd)
    bench_app.command("ppl")(ppl_cmd)
    bench_app.command("longbench")(longbench_cmd)
    bench_app.command("report")(report_cmd)
    try:
        efficiency = importlib.import_module("sedpa_compress.cli.efficiency")
    except ModuleNotFoundError as exc:  # the runtime engineer's module, not in every checkout yet
        if exc.name != "sedpa_compress.cli.efficiency":
            raise
    else:
        efficiency.register(bench_app)
    app.add_typer(bench_app, name="bench")
