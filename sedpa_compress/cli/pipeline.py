"""`sedpa calibrate`, `sedpa compress`, `sedpa generate`: parse flags, call the stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()

DEFAULT_SEARCH = "relative"  # = svd.rank_search.DEFAULT_SEARCH (not imported: `sedpa --help` loads no torch)

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id ORG/NAME, local directory, artifact, or `sedpa-tiny` (default).")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="Geometry preset for speed work: llama-3-8b, llama-2-7b, mistral-7b, qwen2-7b, llama-3.2-1b.")]
RandomOpt = Annotated[bool, typer.Option("--random-weights", help="With --config: random weights of that geometry.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(model, config, random_weights, device, dtype):
    from sedpa_compress.models import load_model

    with console.status("loading model…"):
        return load_model(model, config=config, random_weights=random_weights, device=device or default_device(),
                          dtype=dtype)


def calibrate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the safetensors of second moments.")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    data: Annotated[Optional[str], typer.Option("--data", help="JSONL (text field), .txt, folder of .txt, HF dataset name, or omitted: the bundled text.")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Calibration tokens to stream.")] = 131072,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence (capped at the model's limit).")] = 2048,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    text_field: Annotated[str, typer.Option("--text-field", help="JSONL/dataset field holding the text.")] = "text",
    attention: Annotated[str, typer.Option("--attention", help="auto (duo when there is a head pattern, else full), full, or duo: under the head pattern's attention (streaming heads windowed), as the compressed model runs.")] = "auto",
    pattern: Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern for duo attention; default: the one the model ships.")] = None,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
) -> None:
    """Accumulate the second moment of every projection input (what activation-aware SVD whitens by).

    Under `torchrun --nproc-per-node N -m sedpa_compress calibrate ...` the N processes split the token
    windows and sum their statistics; rank 0 writes the file."""
    from sedpa_compress.calibration.stats import CalibrateConfig, calibrate, save_stats
    from sedpa_compress.distributed import launch
    from sedpa_compress.runtime.session import pattern_for

    with launch(device) as world:
        console.quiet = not world.main
        with world.together():
            loaded = _load(model, config, random_weights, world.device, dtype)
            pat = pattern_for(loaded, pattern) if attention != "full" else None
        stats = calibrate(loaded, CalibrateConfig(data=data, tokens=tokens, seq_len=seq_len, batch_size=batch_size,
                                                  text_field=text_field, attention=attention), pattern=pat, world=world)
        with world.together():
            if world.main:
                save_stats(stats, out)
        console.print(f"[green]wrote[/] {out}  ({stats.tokens:,} tokens from {stats.metadata['source']})")


def compress_cmd(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact directory to create (atomically); default out/<model>-sedpa.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    rank_ratio: Annotated[float, typer.Option("--rank-ratio", help="Fraction of the compressed projections' parameters to keep, in (0, 1].")] = 0.85,
    pattern: Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern: a *.pattern.json from `sedpa identify-heads`, or a DuoAttention run folder / full_attention_heads.tsv; default: the one the model ships (sedpa-tiny does).")] = None,
    calibration: Annotated[Optional[Path], typer.Option("--calibration", help="Second moments from `sedpa calibrate`; computed here when omitted.")] = None,
    scope: Annotated[str, typer.Option("--scope", help="streaming: only streaming heads (dual path); all: every head.")] = "streaming",
    rank_search: Annotated[str, typer.Option("--rank-search", help="relative (summed per-slice relative error), greedy (summed whitened error), balanced (equal relative error), type (each projection type keeps the ratio) or uniform.")] = DEFAULT_SEARCH,
    min_rank: Annotated[int, typer.Option("--min-rank", help="Smallest rank of a factored slice; 0 allows pruning a slice away (reported).")] = 1,
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Re-binarize the pattern's gates at this ratio.")] = None,
    window: Annotated[Optional[int], typer.Option("--window", help="SEDPA-W window recorded in the artifact.")] = None,
    kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="KV cache dtype recorded in the artifact as the runtime's default: bf16 or fp8.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Calibration data when --calibration is omitted.")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Calibration tokens when --calibration is omitted.")] = 131072,
    seq_len: Annotated[int, typer.Option("--seq-len")] = 2048,
    calibration_attention: Annotated[str, typer.Option("--calibration-attention", help="When compress calibrates: auto (under the head pattern's attention when there is one), full or duo.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out (only once the new one is complete).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use --calibration even if it was recorded for another model name, revision or head pattern (shapes must match).")] = False,
    no_ppl: Annotated[bool, typer.Option("--no-ppl", help="Skip the before/after perplexity check.")] = False,
    report_json: Annotated[Optional[Path], typer.Option("--report-json", help="Also write the run as benchmark JSON (wall time, peak memory, per-projection ranks).")] = None,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
) -> None:
    """Truncated, activation-aware SVD of the projections (streaming heads only by default); writes an artifact."""
    from sedpa_compress.calibration.stats import CalibrateConfig
    from sedpa_compress.svd.compress import CompressConfig
    from sedpa_compress.svd.rank_search import check_ratio
    from sedpa_compress.svd.report import print_report
    from sedpa_compress.svd.run import CompressJob, run_compress
    from sedpa_compress.errors import SedpaError

    check_ratio(rank_ratio)  # fail before loading anything
    if kv_dtype is not None:
        from sedpa_compress.runtime.cache import check_kv_dtype

        check_kv_dtype(kv_dtype)
    if out is not None and out.exists() and not overwrite:
        raise SedpaError(f"--out {out} already exists: choose another path or pass --overwrite")
    job = CompressJob(out=out, compress=CompressConfig(rank_ratio=rank_ratio, scope=scope, rank_search=rank_search,
                                                       min_rank=min_rank),
                      pattern=pattern, calibration=calibration, overwrite=overwrite, force=force,
                      retrieval_ratio=retrieval_ratio,
                      window=window, kv_dtype=kv_dtype, calibrate=CalibrateConfig(data=data, tokens=tokens, seq_len=seq_len,
                                                               attention=calibration_attention),
                      measure_ppl=not no_ppl)
    t0 = time.perf_counter()
    loaded = _load(model, config, random_weights, device, dtype)
    outcome = run_compress(loaded, job)
    print_report(outcome.report, outcome.metrics, console)
    console.print(f"[green]wrote artifact[/] {outcome.out}")
    if report_json is not None:
        from sedpa_compress.bench.results import write_result
        from sedpa_compress.svd.run import compress_result

        write_result(report_json, compress_result(loaded, job, outcome, time.perf_counter() - t0))
        console.print(f"[green]wrote[/] {report_json}")


def generate_cmd(
    model: ModelOpt = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Prompt text.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option("--prompt-file", "-f", help="Read the prompt from a file.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="0 = off.")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    attention: Annotated[Optional[str], typer.Option("--attention", help="full, streaming, duo, sedpa-s, sedpa-w, tidal (default: sedpa-s for an artifact with a pattern, else full).")] = None,
    pattern: Annotated[Optional[Path], typer.Option("--pattern", help="Head pattern for duo/sedpa-* on a plain model.")] = None,
    window: Annotated[Optional[int], typer.Option("--window", help="SEDPA-W window.")] = None,
    selection_layers: Annotated[Optional[str], typer.Option("--selection-layers", help="tidal: token-selection layers, e.g. 2,5 (default from the head pattern the model carries or --pattern gives: the first layer after the 2 dense ones with a strong retrieval head, and again at the first with about the most retrieval gate; else right after the dense layers and at 13/32 of the depth).")] = None,
    kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="KV caches: bf16, or fp8 (e4m3 with a scale per token and head: half the bytes, about twice the context). Default: the artifact's, else bf16.")] = None,
    device: DeviceOpt = "",
    dtype: DtypeOpt = "auto",
) -> None:
    """Generate text from a plain model or an artifact, with any attention mode."""
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.runtime.generate import GenerateConfig, generate_text
    from sedpa_compress.runtime.session import mode_for

    if (prompt is None) == (prompt_file is None):
        raise SedpaError("give exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt_file is not None:
        if not prompt_file.exists():
            raise SedpaError(f"--prompt-file {prompt_file} does not exist: pass an existing text file")
        if not prompt_file.is_file():
            kind = "a folder" if prompt_file.is_dir() else "not a regular file (a device, pipe or socket)"
            raise SedpaError(f"--prompt-file {prompt_file} is {kind}: pass a text file, or the text with --prompt")
        prompt = prompt_file.read_text(encoding="utf-8", errors="replace")
    loaded = _load(model, None, False, device, dtype)
    from sedpa_compress.runtime.modes.tidal import parse_selection_layers

    layers = parse_selection_layers(selection_layers)
    if layers is not None and attention != "tidal":
        raise SedpaError("--selection-layers goes with --attention tidal")
    mode = mode_for(loaded, attention, pattern=pattern, window=window,
                    **({"selection_layers": layers} if layers is not None else {}))
    if kv_dtype is not None:
        from sedpa_compress.runtime.cache import check_kv_dtype

        check_kv_dtype(kv_dtype)
        loaded.kv_dtype = kv_dtype
    # one generation per process: the fast runtime may take the weights over (an 8B model exists once)
    result = generate_text(loaded, prompt, mode, GenerateConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                                                top_p=top_p, top_k=top_k, seed=seed, consume=True))
    for note in getattr(loaded.fast, "notes", None) or []:
        console.print(f"note: {note}", highlight=False, markup=False, style="yellow")
    console.print(result.text, highlight=False, markup=False)
    console.print(f"[dim]{result.prompt_tokens:,} prompt tokens, {result.new_tokens} new, "
                  f"prefill {result.prefill_s:.2f} s, {_rate(result.tokens_per_s)} tokens/s "
                  f"({getattr(mode, 'name', 'full')} attention, {loaded.kv_dtype} KV, {loaded.device})[/]", highlight=False)


def _rate(tokens_per_s: float) -> str:
    return "n/a" if tokens_per_s != tokens_per_s else f"{tokens_per_s:.1f}"  # NaN: fewer than two new tokens


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
    app.command("compress")(compress_cmd)
    app.command("generate")(generate_cmd)
